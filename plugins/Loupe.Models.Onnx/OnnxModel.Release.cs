using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

// Without gradients, a forward frees each value the graph computes once its last reader has run, as ONNX Runtime's
// executor does, instead of holding every value until the forward returns: the peak is the largest set of values
// live at once (a few activations), not their sum (resnet50 on 32 images: a 4.4 GB peak before, 1.9 GB now), and the
// memory a freed value leaves is reused by the next nodes. With gradients nothing is freed here: autograd keeps what its
// backward needs by reference, but custom backward functions (straight-through estimators) may hold the handles.
public sealed partial class OnnxModel
{
    string[][]? _releasePlan, _releaseFused;
    [ThreadStatic] static int _heldPeak;

    /// <summary>Diagnostics: the most tensors computed by the graph's nodes that the last forward without gradients on
    /// this thread held at once (a graph run row by row: the rows' peaks together; 0 after a forward with gradients,
    /// which frees nothing). Values a capture keeps or an intervention replaces are held to the end.</summary>
    public static int HeldPeak => _heldPeak;

    /// <summary>For each position of <paramref name="plan"/>, the values no later node reads: the outputs of the nodes
    /// up to it whose last reader is it (or that nothing reads), never the model's output.</summary>
    string[][] ReleaseAfter(List<OnnxNode> plan)
    {
        bool fused = !ReferenceEquals(plan, _plan);
        if ((fused ? _releaseFused : _releasePlan) is { } known) return known;
        var last = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < plan.Count; i++)
            foreach (var v in plan[i].Reads) last[v] = i;
        var after = new List<string>[plan.Count];
        for (int i = 0; i < plan.Count; i++) after[i] = [];
        for (int i = 0; i < plan.Count; i++)
            foreach (var o in plan[i].Outputs)
                if (o.Length > 0 && o != _outputName) after[Math.Max(i, last.GetValueOrDefault(o, i))].Add(o);
        var built = after.Select(l => l.ToArray()).ToArray();
        if (fused) _releaseFused = built; else _releasePlan = built;
        return built;
    }

    /// <summary>The values a forward without gradients frees as it goes (null with gradients: nothing is freed).</summary>
    sealed class Releaser
    {
        readonly string[][] _after;
        readonly HashSet<Tensor> _held;   // constants, the input, side inputs: never freed
        readonly TorchSharp.DisposeScope _scope;   // the forward's: only tensors it created are freed
        readonly Dictionary<Tensor, int> _names = new(ReferenceEqualityComparer.Instance);   // names per computed tensor
        readonly Func<string, bool> _kept;
        int _live;

        /// <summary>The most computed tensors held at once so far.</summary>
        public int Peak { get; private set; }

        Releaser(string[][] after, TorchSharp.DisposeScope scope, IEnumerable<Tensor> held, Func<string, bool> kept)
        {
            _after = after;
            _scope = scope;
            _held = new HashSet<Tensor>(held, ReferenceEqualityComparer.Instance);
            _kept = kept;
        }

        /// <summary>A releaser for this forward, or null when gradients are on.</summary>
        public static Releaser? For(OnnxModel model, List<OnnxNode> plan, TorchSharp.DisposeScope scope, Dictionary<string, Tensor> env, LayerCapture[] captures, Intervention[] interventions) =>
            is_grad_enabled() ? null : new Releaser(model.ReleaseAfter(plan), scope, env.Values, name => captures.Any(c => c.Keeps(name)) || interventions.Any(iv => iv.Value == name));

        /// <summary>Counts a value the node at this position stored (an operator may return one of its inputs, or a
        /// tensor another name holds: the tensor is freed when its last name is). A tensor this forward did not create
        /// (an If branch's initializer, a constant an operator hands back) is never freed.</summary>
        public void Stored(Tensor t)
        {
            if (_held.Contains(t) || !_scope.Contains(t)) return;
            int count = _names.GetValueOrDefault(t);
            _names[t] = count + 1;
            if (count == 0) Peak = Math.Max(Peak, ++_live);
        }

        /// <summary>Records this forward's peak (<see cref="HeldPeak"/>).</summary>
        public void Finish() => _heldPeak = Peak;

        /// <summary>Records the peak of a forward run row by row: the rows' peaks together (the rows go in step).</summary>
        public static void Finish(Releaser?[] rows)
        {
            if (rows.Length > 0 && rows[0] is not null) _heldPeak = rows.Sum(r => r!.Peak);
        }

        /// <summary>Frees the values no node after <paramref name="position"/> reads.</summary>
        public void After(int position, Dictionary<string, Tensor> env)
        {
            foreach (var name in _after[position])
            {
                if (_kept(name) || !env.TryGetValue(name, out var t) || _held.Contains(t)) continue;
                env.Remove(name);
                if (!_names.TryGetValue(t, out int count)) continue;
                if (count > 1) { _names[t] = count - 1; continue; }
                _names.Remove(t);
                _live--;
                t.Dispose();
            }
        }
    }
}
