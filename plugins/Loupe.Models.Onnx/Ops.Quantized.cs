using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>DequantizeLinear, and the interpreter's own QuantizeDequantize and Quantize that <see cref="Quantization"/>
/// makes of QuantizeLinear nodes.</summary>
public static partial class Ops
{
    static readonly Dictionary<string, OpFn> LoupeTable = new(StringComparer.Ordinal)
    {
        ["QuantizeDequantize"] = (n, x) =>   // one value per DequantizeLinear the pair had
        {
            var y = FakeQuantize(n, x[0]!, x[1]!, x.Length > 2 ? x[2] : null);
            return [y, .. Enumerable.Range(1, n.Outputs.Length - 1).Select(_ => y.alias())];
        },
        ["Quantize"] = (n, x) => One(Quantized(n, x[0]!, x[1]!, x.Length > 2 ? x[2] : null).Clamped.to(ScalarType.Int64)),
    };

    /// <summary>Adds the default-domain operators of this file to the table.</summary>
    static Dictionary<string, OpFn> WithQuantizedOps(Dictionary<string, OpFn> table)
    {
        table["DequantizeLinear"] = (n, x) => One(Dequantize(n, x[0]!, x[1]!, x.Length > 2 ? x[2] : null));
        return table;
    }

    /// <summary>Load-time checks of the operators of this file.</summary>
    static void CheckQuantizedOps(OnnxNode n)
    {
        if (n.OpType == "DequantizeLinear" && n.Int("block_size", 0) != 0) throw n.Error("block quantisation (block_size) is not supported");
    }

    /// <summary>A scale or zero point laid along <c>axis</c> of an input of <paramref name="rank"/> dims (a 1-D one of
    /// more than one element), or as it is (per tensor).</summary>
    static Tensor AlongAxis(OnnxNode n, Tensor p, long rank)
    {
        if (p.dim() == 0 || p.numel() == 1) return p.reshape([]);
        if (p.dim() != 1) throw n.Error($"a per-axis scale or zero point must be 1-D, not ({string.Join("×", p.shape)})");
        long axis = Axis(n.Int("axis", 1), rank);
        if (axis < 0 || axis >= rank) throw n.Error($"axis {n.Int("axis", 1)} is outside the input's {rank} dims");
        var shape = Enumerable.Repeat(1L, (int)rank).ToArray();
        shape[axis] = p.shape[0];
        return p.reshape(shape);
    }

    /// <summary>(x − zero point)·scale, in float32.</summary>
    static Tensor Dequantize(OnnxNode n, Tensor x, Tensor scale, Tensor? zero)
    {
        var centred = zero is null ? x : x - AlongAxis(n, zero.to(x.dtype), x.dim());
        return centred.to(ScalarType.Float32) * AlongAxis(n, scale.to(ScalarType.Float32), x.dim());
    }

    /// <summary>round(x / scale) + zero point (half to even), before and after the clamp to [q_min, q_max], with the
    /// scale and zero point laid along the axis.</summary>
    static (Tensor Unclamped, Tensor Clamped, Tensor Scale, Tensor Zero) Quantized(OnnxNode n, Tensor x, Tensor scale, Tensor? zero)
    {
        var s = AlongAxis(n, scale.to(ScalarType.Float32), x.dim());
        var z = zero is null ? zeros([], ScalarType.Float32) : AlongAxis(n, zero.to(ScalarType.Float32), x.dim());
        var q = (x.detach() / s).round() + z;
        return (q, q.clamp(n.Int("q_min", 0), n.Int("q_max", 255)), s, z);
    }

    /// <summary>Fake quantisation: the dequantised quantisation of x, with PyTorch's straight-through gradient (1 where
    /// the unclamped value is within [q_min, q_max], else 0).</summary>
    static Tensor FakeQuantize(OnnxNode n, Tensor x, Tensor scale, Tensor? zero)
    {
        var (q, clamped, s, z) = Quantized(n, x, scale, zero);
        var y = (clamped - z) * s;
        if (!x.requires_grad) return y;
        var inside = q.ge(n.Int("q_min", 0)).logical_and(q.le(n.Int("q_max", 255))).to(x.dtype);
        return y + (x - x.detach()) * inside;
    }
}
