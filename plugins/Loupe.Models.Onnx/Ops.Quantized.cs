using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>DequantizeLinear, dynamic quantisation (DynamicQuantizeLinear, MatMulInteger, ConvInteger), and the
/// interpreter's own QuantizeDequantize, Quantize and QuantizeStraightThrough that <see cref="Quantization"/> makes of
/// QuantizeLinear nodes.</summary>
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
        ["QuantizeStraightThrough"] = (n, x) =>   // read only by integer products: float integers with a gradient
        {
            var (q, inside, s, _) = Quantized(n, x[0]!, x[1]!, x.Length > 2 ? x[2] : null);
            return One(StraightThrough(x[0]!, q, inside, s));
        },
    };

    /// <summary>Adds the default-domain operators of this file to the table.</summary>
    static Dictionary<string, OpFn> WithQuantizedOps(Dictionary<string, OpFn> table)
    {
        table["DequantizeLinear"] = (n, x) => One(Dequantize(n, x[0]!, x[1]!, x.Length > 2 ? x[2] : null));
        table["DynamicQuantizeLinear"] = (n, x) => DynamicQuantize(x[0]!);
        // Dynamic quantisation's integer products, as float32 values (exact integers up to 2^24; the int32 sums ONNX
        // Runtime casts to float after differ by float rounding beyond), so the gradient of DynamicQuantizeLinear passes.
        table["MatMulInteger"] = (n, x) => One(MatMul(n, Centred(n, x[0]!, x.Length > 2 ? x[2] : null, -2), Centred(n, x[1]!, x.Length > 3 ? x[3] : null, -1)));
        table["ConvInteger"] = (n, x) => One(Conv(n, Centred(n, x[0]!, x.Length > 2 ? x[2] : null, 1), Centred(n, x[1]!, x.Length > 3 ? x[3] : null, 0), null));
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

    /// <summary>x − zero point in float32; a zero point of one value per row or column (MatMulInteger's a and b) or per
    /// output channel (ConvInteger's w) is laid along <paramref name="axis"/> of x.</summary>
    static Tensor Centred(OnnxNode n, Tensor x, Tensor? zero, long axis)
    {
        var v = x.to(ScalarType.Float32);
        if (zero is null) return v;
        var z = zero.to(ScalarType.Float32);
        if (z.numel() == 1) return v - z.reshape([]);
        if (z.dim() != 1) throw n.Error($"a zero point must be one value or 1-D, not ({string.Join("×", z.shape)})");
        long rank = v.dim(), at = Axis(axis, rank);
        if (at < 0 || at >= rank || v.shape[at] != z.shape[0]) throw n.Error($"{z.shape[0]} zero points do not match dim {axis} of an input of ({string.Join("×", v.shape)})");
        var shape = Enumerable.Repeat(1L, (int)rank).ToArray();
        shape[at] = z.shape[0];
        return v - z.reshape(shape);
    }

    /// <summary>DynamicQuantizeLinear (ONNX): scale s = (max(0, max x) − min(0, min x)) / 255, zero point z =
    /// clamp(round(−min(0, min x) / s), 0, 255), y = clamp(round(x / s) + z, 0, 255) (round half to even). y is returned
    /// as float32 integers with the straight-through gradient 1/s where round(x / s) + z is inside [0, 255] (s and z
    /// taken as constants, as PyTorch's fake quantisation takes its scale), so that an integer product after it
    /// (MatMulInteger, ConvInteger) times s passes the input's gradient as the float product would; s is float32, z
    /// uint8. All-zero x: s = 0, y = z = 0.</summary>
    static Tensor[] DynamicQuantize(Tensor x)
    {
        var d = x.detach().to(ScalarType.Float32);
        var lo = d.numel() == 0 ? zeros([]) : d.min().clamp_max(0);
        var hi = d.numel() == 0 ? zeros([]) : d.max().clamp_min(0);
        var scale = (hi - lo) / 255f;
        var safe = where(scale.eq(0), ones_like(scale), scale);
        var zero = (-lo / safe).round().clamp(0, 255);
        var q = (d / safe).round_().add_(zero);
        var inside = x.requires_grad ? q.ge(0).logical_and_(q.le(255)) : null;
        return [StraightThrough(x, q.clamp_(0, 255), inside, safe), scale, zero.to(ScalarType.Byte)];
    }

    /// <summary>The quantised integers <paramref name="clamped"/> as float32, with the straight-through gradient 1/s
    /// where the unclamped value was inside the range (<paramref name="inside"/>; null: x has no gradient).</summary>
    static Tensor StraightThrough(Tensor x, Tensor clamped, Tensor? inside, Tensor s)
    {
        if (inside is null) return clamped;
        var v = x.to(ScalarType.Float32);
        return clamped + (v - v.detach()) / s * inside.to(ScalarType.Float32);
    }

    /// <summary>(x − zero point)·scale, in float32.</summary>
    static Tensor Dequantize(OnnxNode n, Tensor x, Tensor scale, Tensor? zero)
    {
        var centred = zero is null ? x : x - AlongAxis(n, zero.to(x.dtype), x.dim());
        return centred.to(ScalarType.Float32) * AlongAxis(n, scale.to(ScalarType.Float32), x.dim());
    }

    /// <summary>round(x / scale) + zero point (half to even) clamped to [q_min, q_max], in one float32 buffer (a
    /// quantisation of a large value holds one copy of it, not one per step), with the mask of the values that were
    /// inside the range before the clamp when x has a gradient; the scale and zero point laid along the axis.</summary>
    static (Tensor Clamped, Tensor? Inside, Tensor Scale, Tensor Zero) Quantized(OnnxNode n, Tensor x, Tensor scale, Tensor? zero)
    {
        var s = AlongAxis(n, scale.to(ScalarType.Float32), x.dim());
        var z = zero is null ? zeros([], ScalarType.Float32) : AlongAxis(n, zero.to(ScalarType.Float32), x.dim());
        var q = x.detach().to(ScalarType.Float32).div(s).round_().add_(z);
        long min = n.Int("q_min", 0), max = n.Int("q_max", 255);
        var inside = x.requires_grad ? q.ge(min).logical_and_(q.le(max)) : null;
        return (q.clamp_(min, max), inside, s, z);
    }

    /// <summary>Fake quantisation: the dequantised quantisation of x, with PyTorch's straight-through gradient (1 where
    /// the unclamped value is within [q_min, q_max], else 0).</summary>
    static Tensor FakeQuantize(OnnxNode n, Tensor x, Tensor scale, Tensor? zero)
    {
        var (q, inside, s, z) = Quantized(n, x, scale, zero);
        var y = q.sub_(z).mul_(s);
        return inside is null ? y : y + (x - x.detach()) * inside.to(x.dtype);
    }
}
