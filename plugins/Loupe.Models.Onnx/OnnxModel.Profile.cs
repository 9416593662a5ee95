using System.Diagnostics;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Models.Onnx;

/// <summary>Time of one operator type over the profiled calls: forward, and backward of its nodes alone.</summary>
public sealed record OperatorTime(string Op, int Nodes, double ForwardMs, double BackwardMs);

// Where the interpreter's time goes, per operator type (tests/Loupe.Benchmarks --profile-onnx). Forward: a stopwatch
// around each node of the plan the model runs. Backward: each node again on detached copies of its inputs, then a
// stopwatch around autograd of that node alone (a random upstream gradient), so the backward of every operator type
// is measured separately. On a shared machine absolute times drift; the shares within one run are what to read.
public sealed partial class OnnxModel
{
    /// <summary>Per operator type, forward and backward milliseconds summed over <paramref name="calls"/> calls on
    /// <paramref name="input"/> (fused plan when <paramref name="fused"/>), most expensive first. <paramref name="clockMs"/>
    /// replaces the wall clock (e.g. the calling thread's CPU time, with one intra-op thread).</summary>
    public IReadOnlyList<OperatorTime> ProfileByOperator(Tensor input, int calls, bool fused = true, Func<double>? clockMs = null, bool byShape = false)
    {
        clockMs ??= () => Stopwatch.GetTimestamp() * 1000.0 / Stopwatch.Frequency;
        ObjectDisposedException.ThrowIf(_disposed, this);
        var plan = fused ? _fused : _plan;
        var fwd = new Dictionary<string, double>(StringComparer.Ordinal);
        var bwd = new Dictionary<string, double>(StringComparer.Ordinal);
        // byShape: one row per operator type and input shapes/strides (where a layout makes one node slower than another).
        string Key(OnnxNode n, Tensor?[] inputs) => !byShape ? n.OpType
            : $"{n.OpType} {string.Join(" ", inputs.Where(t => t is not null).Select(t => $"[{string.Join("×", t!.shape)}]{(t!.is_contiguous() ? "" : "/" + string.Join(",", t.stride()))}"))}";
        var count = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int call = 0; call < calls; call++)
        {
            using var scope = NewDisposeScope();
            var env = new Dictionary<string, Tensor>(_constants, StringComparer.Ordinal) { [_inputName] = Laid(input.detach().requires_grad_(true)) };
            foreach (var n in plan)
            {
                var inputs = n.Inputs.Select(i => i.Length > 0 ? env[i] : null).ToArray();
                var key = Key(n, inputs);
                if (call == 0) count[key] = count.GetValueOrDefault(key) + 1;
                double start = clockMs();
                var outs = Run(n, inputs);
                fwd[key] = fwd.GetValueOrDefault(key) + clockMs() - start;
                for (int k = 0; k < n.Outputs.Length && k < outs.Length; k++)
                    if (n.Outputs[k].Length > 0) env[n.Outputs[k]] = outs[k];

                // Backward of this node alone, on leaves that stand for its non-constant float inputs.
                var leaves = inputs.Select((t, i) => t is not null && t.is_floating_point() && !_constants.ContainsKey(n.Inputs[i]) ? t.detach().requires_grad_(true) : t).ToArray();
                var wrt = leaves.Where((t, i) => t is not null && t.requires_grad && !ReferenceEquals(t, inputs[i])).Select(t => t!).ToArray();
                if (wrt.Length == 0 || !outs[0].is_floating_point()) continue;
                var y = Run(n, leaves)[0];
                if (!y.requires_grad) continue;
                var g = randn_like(y);
                start = clockMs();
                _ = CheckedOps.Grad([y], wrt, [g], allowUnused: true);
                bwd[key] = bwd.GetValueOrDefault(key) + clockMs() - start;
            }
        }
        return fwd.Keys.Select(op => new OperatorTime(op, count[op], fwd[op], bwd.GetValueOrDefault(op)))
            .OrderByDescending(t => t.ForwardMs + t.BackwardMs).ToList();
    }
}
