using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>ONNX Runtime's operators that stay operators after <see cref="OnnxContrib"/>'s expansion: FusedMatMul and its
/// older name TransposeMatMul (<c>com.microsoft</c>: α·A′B′, each side optionally transposed and its first axis moved
/// to the rows, what ONNX Runtime makes of a Transpose + MatMul (+ Mul by a scalar) — attention's scaled QKᵀ), and
/// SimplifiedLayerNormalization, which ONNX Runtime registers in the default domain (RMS normalisation; it rewrites a
/// LayerNormalization spelled out as Pow, ReduceMean, Add, Sqrt, Div after the centring Sub into it). Semantics:
/// ONNX Runtime's ContribOperators.md and CPU kernels (matmul.h: rows and columns of a side with transBatch).</summary>
public static partial class Ops
{
    static readonly Dictionary<string, OpFn> ContribTable = new(StringComparer.Ordinal)
    {
        ["FusedMatMul"] = (n, x) => One(FusedMatMul(n, x[0]!, x[1]!)),
        ["TransposeMatMul"] = (n, x) => One(FusedMatMul(n, x[0]!, x[1]!)),
    };

    /// <summary>The <c>com.microsoft</c> operators the interpreter runs (besides those <see cref="OnnxContrib"/> expands).</summary>
    public static IReadOnlyCollection<string> SupportedContrib => ContribTable.Keys;

    /// <summary>Adds the default-domain operators of this file to the table.</summary>
    static Dictionary<string, OpFn> WithContribOps(Dictionary<string, OpFn> table)
    {
        table["SimplifiedLayerNormalization"] = (n, x) => SimplifiedLayerNorm(n, x[0]!, x[1]!);
        return table;
    }

    /// <summary>Load-time checks of the operators of this file.</summary>
    static void CheckContribOps(OnnxNode n)
    {
        if (n.OpType == "SimplifiedLayerNormalization" && n.Int("stash_type", 1) != 1)
            throw n.Error($"stash_type {n.Int("stash_type", 1)} is not supported (1: float)");
    }

    /// <summary>One side of FusedMatMul: with <paramref name="batch"/>, its first axis moved to the rows (the axis
    /// before the last); with <paramref name="transposed"/>, its two last axes swapped. A vector is taken as it is.</summary>
    static Tensor FusedSide(Tensor t, bool transposed, bool batch)
    {
        if (t.dim() < 2) return t;
        if (batch && t.dim() > 2)
        {
            long r = t.dim();
            t = t.permute([.. Enumerable.Range(1, (int)r - 2).Select(d => (long)d), 0, r - 1]);
        }
        return transposed ? t.transpose(-2, -1) : t;
    }

    static Tensor FusedMatMul(OnnxNode n, Tensor a, Tensor b)
    {
        bool tba = n.OpType == "FusedMatMul" && n.Int("transBatchA", 0) != 0, tbb = n.OpType == "FusedMatMul" && n.Int("transBatchB", 0) != 0;
        var y = MatMul(n, FusedSide(a, n.Int("transA", 0) != 0, tba), FusedSide(b, n.Int("transB", 0) != 0, tbb));
        float alpha = n.Float("alpha", 1f);
        return alpha == 1f ? y : y * alpha;
    }

    /// <summary>x / √(mean of x² over the dims from <c>axis</c> + ε) · scale, and 1/√(…) kept as size-1 dims (its optional
    /// inv_std_var output).</summary>
    static Tensor[] SimplifiedLayerNorm(OnnxNode n, Tensor x, Tensor scale)
    {
        long axis = Axis(n.Int("axis", -1), x.dim());
        if (axis < 0 || axis >= x.dim()) throw n.Error($"axis {n.Int("axis", -1)} is outside the input's {x.dim()} dims");
        var dims = Enumerable.Range((int)axis, (int)(x.dim() - axis)).Select(d => (long)d).ToArray();
        var inv = (x.square().mean(dims, keepdim: true) + n.Float("epsilon", 1e-5f)).rsqrt();
        return n.HasOutput(1) ? [x * inv * scale, inv] : [x * inv * scale];
    }
}
