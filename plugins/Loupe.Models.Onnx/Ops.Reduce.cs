using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>The Reduce* operators in every opset form: axes as an attribute (ReduceSum before opset 13, the others
/// before opset 18) or as an optional second input (ReduceSum from 13, all of them from 18, as PyTorch 2's exporter
/// writes them), <c>keepdims</c>, and <c>noop_with_empty_axes</c> (no axes: the input unchanged instead of a reduction
/// over every axis).</summary>
public static partial class Ops
{
    /// <summary>Adds the operators of this file to the table.</summary>
    static Dictionary<string, OpFn> WithReduceOps(Dictionary<string, OpFn> table)
    {
        // (a local list: the table is built while this class's static fields are initialised, in no set order across files)
        string[] ops = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"];
        foreach (var op in ops) table[op] = (n, x) => One(Reduction(n, x));
        return table;
    }

    /// <summary>Whether the node reads its axes from its second input (else from the <c>axes</c> attribute).</summary>
    internal static bool AxesFromInput(OnnxNode n) => n.Opset >= (n.OpType == "ReduceSum" ? 13 : 18);

    /// <summary>The axes a Reduce* node reduces over, non-negative and distinct, or null for "leave the input as it is"
    /// (no axes and noop_with_empty_axes = 1).</summary>
    static long[]? ReductionAxes(OnnxNode n, Tensor?[] x)
    {
        var data = x[0]!;
        long rank = data.dim();
        var axes = AxesFromInput(n) ? (x.Length > 1 && x[1] is { } a ? Longs(a) : null) : n.Ints("axes");
        if (axes is null || axes.Length == 0)
            return n.Int("noop_with_empty_axes", 0) != 0 ? null : Enumerable.Range(0, (int)rank).Select(i => (long)i).ToArray();
        var list = axes.Select(v => Axis(v, rank)).Distinct().ToArray();
        if (list.Any(v => v < 0 || v >= rank)) throw n.Error($"axes ({string.Join(", ", axes)}) are outside the input's {rank} dims");
        return list;
    }

    static Tensor Reduction(OnnxNode n, Tensor?[] x)
    {
        var t = x[0]!;
        if (ReductionAxes(n, x) is not { } axes) return t.alias();
        bool keep = n.Int("keepdims", 1) != 0;
        switch (n.OpType)
        {
            case "ReduceMean": return t.mean(axes, keep);
            case "ReduceSum": return t.sum(axes, keep);
            case "ReduceMax": return t.amax(axes, keep);
            case "ReduceMin": return t.amin(axes, keep);
            case "ReduceL1": return t.abs().sum(axes, keep);
            case "ReduceL2": return t.square().sum(axes, keep).sqrt();
            case "ReduceLogSum": return t.sum(axes, keep).log();
            case "ReduceLogSumExp":
            {
                // log Σ exp about the (constant) maximum, so large values do not overflow; libtorch's logsumexp takes one dim
                var m = t.detach().amax(axes, true);
                m = where(m.isfinite(), m, zeros_like(m));
                var y = (t - m).exp().sum(axes, true).log() + m;
                return keep ? y : y.reshape(y.shape.Where((_, i) => !axes.Contains(i)).ToArray());
            }
            case "ReduceSumSquare": return t.square().sum(axes, keep);
            case "ReduceProd":
                foreach (var a in axes.OrderDescending()) t = t.prod(a, keep);   // from the last axis, so the others keep their place
                return t;
            default: throw n.Error("not a reduction");
        }
    }
}
