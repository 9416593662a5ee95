using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Loupe.Models.Onnx;

/// <summary>Operators that PyTorch 2's exporter (opsets 18–22) and other exporters write besides the TorchScript-era set:
/// Gelu (opset 20), GroupNormalization (18, and 21's per-channel scale), CastLike, the remaining activations (Mish, Softplus,
/// Softsign, Elu, Selu, Celu, PRelu, ThresholdedRelu), comparisons (LessOrEqual, GreaterOrEqual), IsNaN, IsInf, Sign,
/// Round, Sin, Cos, variadic Sum and Mean, LogSoftmax, CumSum, Einsum, Trilu, Size, and opset 23's Attention (what
/// PyTorch's exporter writes for scaled_dot_product_attention at opset 23) and RMSNormalization.</summary>
public static partial class Ops
{
    /// <summary>Adds the operators of this file to the table.</summary>
    static Dictionary<string, OpFn> WithNewerOps(Dictionary<string, OpFn> table)
    {
        table["Gelu"] = (n, x) => One(F.gelu(x[0]!, n.String("approximate", "none") == "tanh" ? TorchSharp.Modules.GELU.Approximate.tanh : TorchSharp.Modules.GELU.Approximate.none));
        table["GroupNormalization"] = (n, x) => One(GroupNorm(n, x[0]!, x[1]!, x[2]!));
        table["CastLike"] = (n, x) => One(x[0]!.dtype == x[1]!.dtype ? x[0]!.alias() : x[0]!.to(x[1]!.dtype));
        table["Mish"] = (n, x) => One(F.mish(x[0]!));
        table["Softplus"] = (n, x) => One(F.softplus(x[0]!, 1, double.PositiveInfinity));
        table["Softsign"] = (n, x) => One(x[0]! / (x[0]!.abs() + 1));
        table["Elu"] = (n, x) => One(F.elu(x[0]!, n.Float("alpha", 1f)));
        table["Celu"] = (n, x) => One(F.celu(x[0]!, n.Float("alpha", 1f)));
        table["Selu"] = (n, x) =>
        {
            float alpha = n.Float("alpha", 1.67326319217681884765625f), gamma = n.Float("gamma", 1.05070102214813232421875f);
            var t = x[0]!;
            return One(where(t.gt(0), t, (t.exp() - 1) * alpha) * gamma);
        };
        table["PRelu"] = (n, x) => One(where(x[0]!.lt(0), x[0]! * x[1]!, x[0]!).expand(x[0]!.shape));
        table["ThresholdedRelu"] = (n, x) => One(where(x[0]!.gt(n.Float("alpha", 1f)), x[0]!, zeros_like(x[0]!)));
        table["LessOrEqual"] = (n, x) => One(x[0]!.le(x[1]!));
        table["GreaterOrEqual"] = (n, x) => One(x[0]!.ge(x[1]!));
        table["IsNaN"] = (n, x) => One(x[0]!.isnan());
        table["IsInf"] = (n, x) => One(IsInf(n, x[0]!));
        table["Sign"] = (n, x) => One(x[0]!.sign());
        table["Round"] = (n, x) => One(x[0]!.round());   // half to even, as ONNX
        table["Sin"] = (n, x) => One(x[0]!.sin());
        table["Cos"] = (n, x) => One(x[0]!.cos());
        table["Sum"] = (n, x) => One(x.OfType<Tensor>().Aggregate((a, b) => a + b));
        table["Mean"] = (n, x) => One(x.OfType<Tensor>().Aggregate((a, b) => a + b) / x.OfType<Tensor>().Count());
        table["LogSoftmax"] = (n, x) => One(AlongAxis(n, x[0]!, (t, d) => t.log_softmax(d)));
        table["CumSum"] = (n, x) => One(CumSum(n, x[0]!, x[1]!));
        table["Einsum"] = (n, x) => One(einsum(n.String("equation", ""), x.OfType<Tensor>().ToArray()));
        table["Trilu"] = (n, x) =>
        {
            long k = x.Length > 1 && x[1] is { } kt ? Longs(kt)[0] : 0;
            return One(n.Int("upper", 1) != 0 ? x[0]!.triu(k) : x[0]!.tril(k));
        };
        table["Size"] = (n, x) => One(tensor(x[0]!.numel()));
        table["Attention"] = (n, x) => One(Attention(n, x));
        table["RMSNormalization"] = (n, x) => One(RmsNorm(n, x[0]!, x[1]!));
        return table;
    }

    /// <summary>Load-time checks of the operators of this file.</summary>
    static void CheckNewerOps(OnnxNode n)
    {
        switch (n.OpType)
        {
            case "Gelu":
                if (n.String("approximate", "none") is not ("none" or "tanh")) throw n.Error($"approximate '{n.String("approximate", "")}' is not supported (none, tanh)");
                break;
            case "GroupNormalization":
                if (n.Int("num_groups", 0) < 1) throw n.Error("num_groups must be given and ≥ 1");
                break;
            case "Attention":
                if (n.HasInput(4) || n.HasInput(5) || n.HasInput(6)) throw n.Error("past_key / past_value (a key-value cache) and nonpad_kv_seqlen are not supported");
                if (n.HasOutput(1) || n.HasOutput(2) || n.HasOutput(3)) throw n.Error("the present_key, present_value and qk_matmul_output outputs are not supported");
                if (n.Int("qk_matmul_output_mode", 0) != 0) throw n.Error("qk_matmul_output_mode other than 0 is not supported");
                break;
            case "Einsum":
                var eq = n.String("equation", "");
                if (eq.Length == 0 || eq.Length > 256 || eq.Any(c => !(char.IsAsciiLetter(c) || c is ',' or '-' or '>' or '.' or ' ')))
                    throw n.Error($"equation '{eq}' is not an einsum equation");
                break;
        }
    }

    /// <summary>GroupNormalization: the channels in <c>num_groups</c> groups, each normalised over its channels and the
    /// spatial dims; then scaled and shifted — per group in opset 18 (scale and bias of num_groups values), per channel
    /// from opset 21 (of C values).</summary>
    static Tensor GroupNorm(OnnxNode n, Tensor x, Tensor scale, Tensor bias)
    {
        long groups = n.Int("num_groups", 0), c = x.dim() >= 2 ? x.shape[1] : 0;
        if (x.dim() < 3 || c % groups != 0) throw n.Error($"input ({string.Join("×", x.shape)}) needs rank ≥ 3 and channels divisible by num_groups {groups}");
        long perChannel = n.Opset >= 21 ? c : groups;
        if (scale.numel() != perChannel || bias.numel() != perChannel)
            throw n.Error($"scale and bias must hold {perChannel} values ({(n.Opset >= 21 ? "one per channel, opset 21" : "one per group, opset 18")}), got {scale.numel()} and {bias.numel()}");
        float eps = n.Float("epsilon", 1e-5f);
        if (n.Opset >= 21) return F.group_norm(x, groups, scale.reshape(c), bias.reshape(c), eps);
        // Opset 18: one scale and bias per group, i.e. repeated over the group's channels.
        long each = c / groups;
        return F.group_norm(x, groups, scale.reshape(groups).repeat_interleave(each), bias.reshape(groups).repeat_interleave(each), eps);
    }

    static Tensor IsInf(OnnxNode n, Tensor x)
    {
        bool neg = n.Int("detect_negative", 1) != 0, pos = n.Int("detect_positive", 1) != 0;
        if (neg && pos) return x.isinf();
        if (neg) return x.isneginf();
        if (pos) return x.isposinf();
        return zeros_like(x, ScalarType.Bool);
    }

    /// <summary>Running sums along the axis given as the second input; <c>exclusive</c> leaves each element out of its own
    /// sum, <c>reverse</c> sums from the end.</summary>
    static Tensor CumSum(OnnxNode n, Tensor x, Tensor axisTensor)
    {
        long axis = Axis(Longs(axisTensor)[0], x.dim());
        if (axis < 0 || axis >= x.dim()) throw n.Error($"axis {Longs(axisTensor)[0]} is outside the input's {x.dim()} dims");
        bool reverse = n.Int("reverse", 0) != 0, exclusive = n.Int("exclusive", 0) != 0;
        var t = reverse ? x.flip(axis) : x;
        var y = t.cumsum(axis);
        if (exclusive) y = y - t;
        return reverse ? y.flip(axis) : y;
    }

    /// <summary>Opset 23's Attention without a key-value cache: softmax(softcap(Q·Kᵀ·scale) + mask [+ causal]) · V over
    /// 4-D (batch, heads, sequence, head size) or 3-D (batch, sequence, heads × head size; q_num_heads, kv_num_heads)
    /// inputs; fewer key-value heads than query heads are repeated (grouped-query attention); a boolean mask keeps its
    /// true places, a float mask is added; the causal mask lets query i see keys j ≤ i; a row with every key masked
    /// gives 0, as ONNX's reference.</summary>
    static Tensor Attention(OnnxNode n, Tensor?[] x)
    {
        Tensor q = x[0]!, k = x[1]!, v = x[2]!;
        var mask = x.Length > 3 ? x[3] : null;
        long rank = q.dim();
        if (rank != k.dim() || rank != v.dim() || rank is not (3 or 4))
            throw n.Error($"Q, K and V must all be 3-D or all 4-D, got ({string.Join("×", q.shape)}), ({string.Join("×", k.shape)}), ({string.Join("×", v.shape)})");
        if (rank == 3)
        {
            long qh = n.Int("q_num_heads", 0), kvh = n.Int("kv_num_heads", 0);
            if (qh < 1 || kvh < 1 || q.shape[2] % qh != 0 || k.shape[2] % kvh != 0 || v.shape[2] % kvh != 0)
                throw n.Error($"3-D inputs need q_num_heads and kv_num_heads that divide their hidden sizes ({q.shape[2]}, {k.shape[2]}, {v.shape[2]})");
            Tensor Heads(Tensor t, long heads) => t.reshape(t.shape[0], t.shape[1], heads, t.shape[2] / heads).transpose(1, 2);
            (q, k, v) = (Heads(q, qh), Heads(k, kvh), Heads(v, kvh));
        }
        if (k.shape[1] != v.shape[1] || q.shape[1] % k.shape[1] != 0 || q.shape[3] != k.shape[3] || k.shape[2] != v.shape[2])
            throw n.Error($"Q ({string.Join("×", q.shape)}), K ({string.Join("×", k.shape)}) and V ({string.Join("×", v.shape)}) do not form an attention");
        if (q.shape[1] != k.shape[1])
        {
            long repeat = q.shape[1] / k.shape[1];
            (k, v) = (k.repeat_interleave(repeat, 1), v.repeat_interleave(repeat, 1));
        }
        double scale = n.Has("scale") ? n.Float("scale", 1f) : 1 / Math.Sqrt(q.shape[3]);
        double root = Math.Sqrt(scale);
        var scores = MatMul(n, q * root, (k * root).transpose(-1, -2));
        float softcap = n.Float("softcap", 0f);
        if (softcap > 0) scores = (scores / softcap).tanh() * softcap;
        long qs = q.shape[2], ks = k.shape[2];
        Tensor? bias = null;
        if (mask is not null)
        {
            bias = mask.dtype == ScalarType.Bool ? where(mask, 0f, float.NegativeInfinity) : mask.to(scores.dtype);
            if (bias.shape[^1] < ks)   // a mask shorter than the keys: the missing keys masked, as ONNX's reference
                bias = F.pad(bias, [0, ks - bias.shape[^1]], PaddingModes.Constant, double.NegativeInfinity);
        }
        if (n.Int("is_causal", 0) != 0)
        {
            var allowed = arange(ks).view(1, ks).le(arange(qs).view(qs, 1));
            var causal = where(allowed, 0f, float.NegativeInfinity);
            bias = bias is null ? causal : bias + causal;
        }
        if (bias is null) return MatMul(n, scores.softmax(-1), v) is var y0 && rank == 3 ? Merged(y0) : y0;
        scores = scores + bias;
        // A row whose keys are all masked: 0, not NaN (and no NaN in the backward pass either).
        var masked = scores.detach().amax([-1], keepdim: true).isneginf();
        var p = where(masked, 0f, where(masked, zeros_like(scores), scores).softmax(-1));
        var y = MatMul(n, p, v);
        return rank == 3 ? Merged(y) : y;

        static Tensor Merged(Tensor t) => t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1);
    }

    /// <summary>Opset 23's RMSNormalization: x / √(mean of x² over the dims from <c>axis</c> + ε) · scale.</summary>
    static Tensor RmsNorm(OnnxNode n, Tensor x, Tensor scale)
    {
        long axis = Axis(n.Int("axis", -1), x.dim());
        if (axis < 0 || axis >= x.dim()) throw n.Error($"axis {n.Int("axis", -1)} is outside the input's {x.dim()} dims");
        var dims = Enumerable.Range((int)axis, (int)(x.dim() - axis)).Select(d => (long)d).ToArray();
        return x * (x.square().mean(dims, keepdim: true) + n.Float("epsilon", 1e-5f)).rsqrt() * scale;
    }
}
