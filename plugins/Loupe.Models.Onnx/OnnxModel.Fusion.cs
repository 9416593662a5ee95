using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Loupe.Models.Onnx;

// Load-time fusions (speed): exporters spell a Linear layer as MatMul by a constant then Add of a constant, and the
// exact GELU as Div(√2) → Erf → Add(1) → Mul(x) → Mul(0.5). Run op by op, each of those is a pass over the activation
// forward and another backward (the MLPs of ViT and ConvNeXt spend most of their elementwise time there); fused, they
// are libtorch's own linear (addmm with the transposed weight, as nn.Linear runs) and gelu (one native kernel each
// way). The fused plan computes the same function; it is used only when nothing reads or replaces a value inside a
// fused group (a capture, an intervention) and no ReLU rule is active — otherwise the node-by-node plan runs, so every
// ONNX value stays a layer with its exact semantics. Slices that tile an axis run as one split (same values, views
// both; the backward differs only in how the zero-padded gradients are assembled, exactly).
public sealed partial class OnnxModel
{
    List<OnnxNode> _fused = null!;
    HashSet<string> _fusedInternal = null!;
    /// <summary>The exact GELUs of the plan: the position of each chain's Div → the positions of its Erf, Add, Mul and
    /// final Mul (the graph form reads them as one operator too).</summary>
    readonly Dictionary<int, int[]> _geluChains = new();
    readonly List<Tensor> _fusedConstants = new();

    /// <summary>Number of nodes the fused plan runs per forward (see <see cref="RuntimeNodeCount"/> for the ONNX plan).</summary>
    public int FusedNodeCount => _fused.Count;

    void BuildFusedPlan()
    {
        var consumers = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        for (int i = 0; i < _plan.Count; i++)
            foreach (var v in _plan[i].Reads)
                (consumers.TryGetValue(v, out var l) ? l : consumers[v] = []).Add(i);
        // The one node reading value v, or -1 (none, several, or v is the model's output).
        int Single(string v) => v != _outputName && consumers.TryGetValue(v, out var l) && l.Count == 1 ? l[0] : -1;
        Tensor? Const(string v) => v.Length > 0 && _constants.TryGetValue(v, out var t) ? t : null;
        bool Scalar(string v, double value) => Const(v) is { } t && t.numel() == 1 && t.is_floating_point()
            && Math.Abs(t.to(ScalarType.Float64).item<double>() - value) <= 1e-6 * Math.Max(1, Math.Abs(value));
        // The input of a two-input node that is not `known` (null when neither is).
        string? Other(OnnxNode n, string known) => n.Inputs.Length != 2 ? null : n.Inputs[0] == known ? n.Inputs[1] : n.Inputs[1] == known ? n.Inputs[0] : null;

        var replaced = new Dictionary<int, OnnxNode>();   // position of a group's last node → fused node
        var removed = new HashSet<int>();
        _fusedInternal = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < _plan.Count; i++)
        {
            var n = _plan[i];
            if (removed.Contains(i) || n.Outputs.Length != 1) continue;
            if (n.Inputs.Length < 2) continue;   // (a binary node missing an input fails when it runs, by name)
            if (n.OpType == "MatMul" && Const(n.Inputs[0]) is null && Const(n.Inputs[1]) is { } w && w.dim() == 2 && w.is_floating_point()
                && Single(n.Outputs[0]) is var a and >= 0 && _plan[a] is { OpType: "Add" } add
                && Other(add, n.Outputs[0]) is { } bName && Const(bName) is { } b && b.dim() == 1 && b.shape[0] == w.shape[1])
            {
                var wt = w.t().contiguous();
                wt.DetachFromDisposeScope();
                _fusedConstants.Add(wt);
                long k = w.shape[0];
                string wName = n.Inputs[1];
                replaced[a] = Fused(n, "MatMul+Add", [n.Inputs[0]], add.Outputs, (node, x) =>
                {
                    if (x[0]!.dim() < 1 || x[0]!.shape[^1] != k)
                        throw node.Error($"cannot multiply ({string.Join("×", x[0]!.shape)}) by the {k}×{wt.shape[0]} weight");
                    // A weight handed out for change is read as it is now (OnnxModel.Parameters.cs), not as copied at load.
                    if (!IsLive(wName)) return [Ops.Linear(x[0]!, wt, b)];
                    return [Ops.Linear(x[0]!, w.t(), b)];
                });
                removed.Add(i);
                _fusedInternal.Add(n.Outputs[0]);
                continue;
            }
            if (n.OpType == "Div" && Const(n.Inputs[0]) is null && Scalar(n.Inputs[1], Math.Sqrt(2))
                && Single(n.Outputs[0]) is var e and >= 0 && _plan[e] is { OpType: "Erf" } erf
                && Single(erf.Outputs[0]) is var p and >= 0 && _plan[p] is { OpType: "Add" } plus && Other(plus, erf.Outputs[0]) is { } one && Scalar(one, 1)
                && Single(plus.Outputs[0]) is var m and >= 0 && _plan[m] is { OpType: "Mul" } mul && Other(mul, plus.Outputs[0]) == n.Inputs[0]
                && Single(mul.Outputs[0]) is var h and >= 0 && _plan[h] is { OpType: "Mul" } half && Other(half, mul.Outputs[0]) is { } c && Scalar(c, 0.5))
            {
                replaced[h] = Fused(half, "Gelu", [n.Inputs[0]], half.Outputs, (_, x) => [F.gelu(x[0]!)]);
                removed.UnionWith([i, e, p, m]);
                _geluChains[i] = [e, p, m, h];
                _fusedInternal.UnionWith([n.Outputs[0], erf.Outputs[0], plus.Outputs[0], mul.Outputs[0]]);
            }
        }
        // Slices of one value that tile an axis (the q, k, v of a packed in-projection): one split whose backward is
        // one cat, instead of a zero-filled full-size gradient per Slice that autograd then sums. Placed at the last
        // Slice; only when nothing reads a piece before that position.
        foreach (var group in Enumerable.Range(0, _plan.Count)
                     .Where(i => _plan[i] is { OpType: "Slice", Outputs.Length: 1 } s && s.Inputs.Length > 0 && Const(s.Inputs[0]) is null && !removed.Contains(i) && !replaced.ContainsKey(i))
                     .GroupBy(i => _plan[i].Inputs[0]).Where(g => g.Count() >= 2))
        {
            var at = group.ToArray();
            var slices = at.Select(i => _plan[i]).ToArray();
            var outputs = slices.Select(s => s.Outputs[0]).ToArray();
            if (outputs.Any(o => o.Length == 0 || consumers.TryGetValue(o, out var l) && l.Any(c => c <= at[^1]))) continue;
            var offsets = new int[slices.Length + 1];
            for (int j = 0; j < slices.Length; j++) offsets[j + 1] = offsets[j] + slices[j].Inputs.Length;
            replaced[at[^1]] = Fused(slices[^1], "Slice (split)", slices.SelectMany(s => s.Inputs).ToArray(), outputs, (_, x) => SplitSlices(slices, offsets, x));
            removed.UnionWith(at[..^1]);
        }
        _fused = new List<OnnxNode>(_plan.Count);
        for (int i = 0; i < _plan.Count; i++)
            if (replaced.TryGetValue(i, out var f)) _fused.Add(f);
            else if (!removed.Contains(i)) _fused.Add(_plan[i]);
    }

    /// <summary>The Slice nodes <paramref name="slices"/> (their inputs concatenated in <paramref name="x"/>, the
    /// first of each being the same value) as one split when their ranges tile one axis; otherwise each Slice as is.</summary>
    static Tensor[] SplitSlices(OnnxNode[] slices, int[] offsets, Tensor?[] x)
    {
        var args = slices.Select((_, j) => x[offsets[j]..offsets[j + 1]]).ToArray();
        var ranges = slices.Select((s, j) => Ops.ContiguousSlice(s, args[j])).ToArray();
        if (ranges.All(r => r is not null && r.Value.Axis == ranges[0]!.Value.Axis))
        {
            var data = x[0]!;
            long axis = ranges[0]!.Value.Axis, end = 0;
            var order = Enumerable.Range(0, slices.Length).OrderBy(j => ranges[j]!.Value.Start).ToArray();
            foreach (var j in order) end = ranges[j]!.Value.Start == end ? ranges[j]!.Value.End : -1;
            if (end == data.shape[axis])
            {
                var parts = data.split(order.Select(j => ranges[j]!.Value.End - ranges[j]!.Value.Start).ToArray(), axis);
                var outs = new Tensor[slices.Length];
                for (int p = 0; p < order.Length; p++) outs[order[p]] = parts[p];
                return outs;
            }
        }
        return slices.Select((s, j) => Run(s, args[j])[0]).ToArray();
    }

    static OnnxNode Fused(OnnxNode like, string opType, string[] inputs, string[] outputs, Func<OnnxNode, Tensor?[], Tensor[]> run) =>
        new(like, opType, inputs, outputs) { Run = run };

    /// <summary>The fused plan, unless a capture, an intervention or a ReLU rule needs the node-by-node one.</summary>
    List<OnnxNode> PlanFor(LayerCapture[] captures, Intervention[] interventions, ReluRule? relu)
    {
        if (relu is not null || _fused.Count == _plan.Count) return _plan;
        foreach (var iv in interventions) if (_fusedInternal.Contains(iv.Value)) return _plan;
        foreach (var c in captures) if (c.Reads(_fusedInternal)) return _plan;
        return _fused;
    }
}
