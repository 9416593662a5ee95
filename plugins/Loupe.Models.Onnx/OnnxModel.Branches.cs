using Loupe.Abstractions;
using Onnx;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>A subgraph: one branch of an If node or a Loop's body — its inputs (a Loop body's iteration number,
/// condition and carried values; none for a branch), its nodes (checked and bound), its own initializers and the values
/// it returns.</summary>
internal sealed record Branch(string[] Inputs, IReadOnlyList<OnnxNode> Nodes, IReadOnlyDictionary<string, Tensor> Initializers, string[] Outputs)
{
    /// <summary>The declared shape of each output (null dims where symbolic), for a Loop's scan outputs when it runs no
    /// iteration.</summary>
    public long?[]?[] OutputDims { get; init; } = [];
}

public sealed partial class OnnxModel
{
    /// <summary>How deep If and Loop nodes may nest (torchvision's exports nest two).</summary>
    const int MaxBranchDepth = 8;

    /// <summary>Most iterations one Loop node may run (Mask R-CNN's paste loop runs once per detection, at most
    /// box_detections_per_img: 100 by default).</summary>
    const long MaxLoopTrips = 10_000;

    /// <summary>Compiles the branches of every If node and the body of every Loop among <paramref name="nodes"/>
    /// (recursively), recording the enclosing values each reads; every operator in them is checked as the graph's own
    /// are.</summary>
    static void CompileBranches(IEnumerable<OnnxNode> nodes, OnnxFile file, List<Tensor> owned, int depth = 0)
    {
        foreach (var n in nodes.Where(n => n.OpType is "If" or "Loop"))
        {
            if (depth >= MaxBranchDepth) throw n.Error($"{n.OpType} nodes nest deeper than {MaxBranchDepth}");
            Branch Compile(string name)
            {
                var g = n.Attribute(name)?.G ?? throw n.Error($"has no {name}");
                var inner = g.Node.Select((b, i) => new OnnxNode(b, file.Opset, file.Source, i)).ToList();
                foreach (var b in inner) Ops.Check(b);
                foreach (var b in inner) Ops.Bind(b);
                CompileBranches(inner, file, owned, depth + 1);
                var init = new Dictionary<string, Tensor>(StringComparer.Ordinal);
                using (no_grad())
                    foreach (var t in g.Initializer)
                    {
                        var v = OnnxFile.ToTensor(t, file.Source);
                        v.DetachFromDisposeScope();
                        owned.Add(v);
                        init[t.Name] = v;
                    }
                return new Branch(g.Input.Select(i => i.Name).ToArray(), inner, init, g.Output.Select(o => o.Name).ToArray())
                {
                    OutputDims = g.Output.Select(OnnxFile.Dims).ToArray(),
                };
            }
            if (n.OpType == "Loop")
            {
                if (n.Inputs.Length < 2) throw n.Error($"has {n.Inputs.Length} inputs; a Loop takes M, cond and its carried values (M and cond may be empty)");
                var body = Compile("body");
                int carried = Math.Max(0, n.Inputs.Length - 2);
                if (body.Inputs.Length != 2 + carried || body.Outputs.Length < 1 + carried || n.Outputs.Length > body.Outputs.Length - 1)
                    throw n.Error($"its body takes {body.Inputs.Length} inputs and returns {body.Outputs.Length} values for {carried} carried values and {n.Outputs.Length} outputs");
                n.Body = body;
                n.OuterReads = OuterReadsOf(body).ToArray();
                continue;
            }
            if (!n.HasInput(0)) throw n.Error("has no condition input");
            var then = Compile("then_branch");
            var @else = Compile("else_branch");
            if (then.Outputs.Length != @else.Outputs.Length || then.Outputs.Length < n.Outputs.Count(o => o.Length > 0))
                throw n.Error($"its branches return {then.Outputs.Length} and {@else.Outputs.Length} values for {n.Outputs.Length} outputs");
            n.Branches = (then, @else);
            n.OuterReads = OuterReadsOf(then).Concat(OuterReadsOf(@else)).Distinct().ToArray();
        }
    }

    /// <summary>The values a branch reads that it neither computes nor holds.</summary>
    static IEnumerable<string> OuterReadsOf(Branch b)
    {
        var own = new HashSet<string>(b.Initializers.Keys.Concat(b.Inputs), StringComparer.Ordinal);
        var reads = new List<string>();
        foreach (var n in b.Nodes)
        {
            reads.AddRange(n.Reads.Where(r => !own.Contains(r)));
            own.UnionWith(n.Outputs.Where(o => o.Length > 0));
        }
        return reads.Concat(b.Outputs.Where(o => !own.Contains(o))).Distinct();
    }

    /// <summary>Runs one node over the values computed so far: an If node runs the branch its condition picks, over
    /// the enclosing values; any other node its operator.</summary>
    static Tensor[] Evaluate(OnnxNode n, IReadOnlyDictionary<string, Tensor> env)
    {
        if (n.Body is not null) return Loop(n, env);
        if (n.Branches is not { } branches)
            return Run(n, n.Inputs.Select(i => i.Length > 0 ? env[i] : null).ToArray());
        var condition = env[n.Inputs[0]];
        if (condition.numel() != 1) throw n.Error($"its condition has {condition.numel()} values, not one");
        var branch = condition.to(ScalarType.Bool).item<bool>() ? branches.Then : branches.Else;
        var inner = new Dictionary<string, Tensor>(env.Count + branch.Initializers.Count, StringComparer.Ordinal);
        foreach (var (k, v) in env) inner[k] = v;
        return RunSubgraph(n, branch, inner);
    }

    /// <summary>Runs a subgraph over <paramref name="inner"/> (the enclosing values and its inputs), returning its
    /// outputs.</summary>
    static Tensor[] RunSubgraph(OnnxNode n, Branch branch, Dictionary<string, Tensor> inner)
    {
        foreach (var (k, v) in branch.Initializers) inner[k] = v;
        foreach (var b in branch.Nodes)
        {
            var outs = Evaluate(b, inner);
            for (int k = 0; k < b.Outputs.Length && k < outs.Length; k++)
                if (b.Outputs[k].Length > 0) inner[b.Outputs[k]] = outs[k];
        }
        return branch.Outputs.Select(o => inner.TryGetValue(o, out var v) ? v : throw n.Error($"its subgraph never computes '{o}'")).ToArray();
    }

    /// <summary>ONNX Loop: the body runs while the iteration count is below M (when given) and its condition holds
    /// (when given), each time over the enclosing values, the iteration number, the condition and the carried values;
    /// the outputs are the carried values' final state, then each scan output stacked over the iterations.</summary>
    static Tensor[] Loop(OnnxNode n, IReadOnlyDictionary<string, Tensor> env)
    {
        var body = n.Body!;
        long? trips = n.HasInput(0) ? Ops.Longs(env[n.Inputs[0]]).FirstOrDefault() : null;
        bool go = !n.HasInput(1) || env[n.Inputs[1]].to(ScalarType.Bool).item<bool>();
        var carried = n.Inputs.Skip(2).Select(i => env[i]).ToArray();
        var owned = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);   // carried values this loop made
        int scanCount = body.Outputs.Length - 1 - carried.Length;
        var scans = Enumerable.Range(0, scanCount).Select(_ => new List<Tensor>()).ToArray();
        long scanned = 0;
        for (long i = 0; go && (trips is not { } m || i < m); i++)
        {
            if (i >= MaxLoopTrips) throw n.Error($"runs more than {MaxLoopTrips} iterations");
            // Each iteration's temporaries are freed when it ends (autograd keeps what a backward pass needs); only the
            // carried values and scan outputs leave it.
            using var iteration = NewDisposeScope();
            var inner = new Dictionary<string, Tensor>(env.Count + 8, StringComparer.Ordinal);
            foreach (var (k, v) in env) inner[k] = v;
            inner[body.Inputs[0]] = tensor(i);
            inner[body.Inputs[1]] = tensor(go);
            for (int j = 0; j < carried.Length; j++) inner[body.Inputs[2 + j]] = carried[j];
            var outs = RunSubgraph(n, body, inner);
            if (outs[0].numel() != 1) throw n.Error($"its body's condition has {outs[0].numel()} values, not one");
            go = outs[0].to(ScalarType.Bool).item<bool>();
            var next = outs[1..(1 + carried.Length)].Select(t => iteration.MoveToOuter(t.alias())).ToArray();
            foreach (var t in carried.Where(owned.Contains)) t.Dispose();
            owned.Clear();
            owned.UnionWith(next);
            carried = next;
            for (int k = 0; k < scanCount; k++)
            {
                var t = outs[1 + carried.Length + k];
                scanned += t.numel();
                if (scanned > NodeOutputElements) throw n.Error($"its scan outputs hold more than {NodeOutputElements} values, over the memory budget of {OnnxNode.MaxOutputBytes >> 20} MB");
                scans[k].Add(iteration.MoveToOuter(t.alias()));
            }
        }
        var stackedScans = scans.Select((s, k) =>
        {
            if (s.Count > 0)
            {
                if (s.Any(t => !t.shape.SequenceEqual(s[0].shape))) throw n.Error($"scan output {k} changes shape between iterations");
                var stacked = stack(s);
                foreach (var t in s) t.Dispose();
                return stacked;
            }
            // No iteration: an empty stack of the body's declared shape where it is static.
            var dims = body.OutputDims.ElementAtOrDefault(1 + carried.Length + k);
            return zeros([0, .. (dims ?? []).Select(d => d ?? 0)]);
        }).ToArray();
        return [.. carried, .. stackedScans];
    }

    /// <summary>Most float values the outputs of one node may hold (<see cref="OnnxNode.MaxOutputBytes"/>).</summary>
    const long NodeOutputElements = OnnxNode.MaxOutputBytes / 4;
}
