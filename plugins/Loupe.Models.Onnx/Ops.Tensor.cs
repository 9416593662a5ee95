using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Loupe.Models.Onnx;

/// <summary>ONNX operators that transformer and modern-CNN exports use (ViT, Swin, ConvNeXt, EfficientNet):
/// LayerNormalization, Pow, Sqrt, Erf, element-wise comparisons and logic, ConstantOfShape, Expand, Where, Range, Mod,
/// ScatterND, plus a few unary operators. Integer tensors are Int64 throughout (as <see cref="Cast"/> makes them).</summary>
public static partial class Ops
{
    /// <summary>Adds the operators of this file to the table.</summary>
    static Dictionary<string, OpFn> WithTensorOps(Dictionary<string, OpFn> table)
    {
        table["LayerNormalization"] = (n, x) => n.HasOutput(1) || n.HasOutput(2) ? LayerNormWithStatistics(n, x[0]!, x[1]!, x.Length > 2 ? x[2] : null)
            : One(LayerNorm(n, x[0]!, x[1]!, x.Length > 2 ? x[2] : null));
        table["Pow"] = (n, x) => One(Pow(x[0]!, x[1]!));
        table["Sqrt"] = (n, x) => One(x[0]!.sqrt());
        table["Erf"] = (n, x) => One(x[0]!.erf());
        table["Exp"] = (n, x) => One(x[0]!.exp());
        table["Log"] = (n, x) => One(x[0]!.log());
        table["Neg"] = (n, x) => One(x[0]!.neg());
        table["Abs"] = (n, x) => One(x[0]!.abs());
        table["Reciprocal"] = (n, x) => One(x[0]!.reciprocal());
        table["Equal"] = (n, x) => One(x[0]!.eq(x[1]!));
        table["Less"] = (n, x) => One(x[0]!.lt(x[1]!));
        table["Greater"] = (n, x) => One(x[0]!.gt(x[1]!));
        table["Not"] = (n, x) => One(x[0]!.logical_not());
        table["And"] = (n, x) => One(x[0]!.logical_and(x[1]!));
        table["Or"] = (n, x) => One(x[0]!.logical_or(x[1]!));
        table["Where"] = (n, x) => One(where(x[0]!.to(ScalarType.Bool), x[1]!, x[2]!));
        table["Mod"] = (n, x) => One(n.Int("fmod", 0) != 0 ? x[0]!.fmod(x[1]!) : x[0]!.remainder(x[1]!));
        table["ConstantOfShape"] = (n, x) => One(ConstantOfShape(n, x[0]!));
        table["Expand"] = (n, x) => One(Expand(n, x[0]!, Longs(x[1]!)));
        table["Range"] = (n, x) => One(Range(n, x[0]!, x[1]!, x[2]!));
        table["ScatterND"] = (n, x) => One(ScatterND(n, x[0]!, x[1]!, x[2]!));
        return table;
    }

    /// <summary>Load-time checks of the operators of this file.</summary>
    static void CheckTensorOps(OnnxNode n)
    {
        switch (n.OpType)
        {
            case "ScatterND":
                if (n.String("reduction", "none") is not ("none" or "add" or "mul" or "max" or "min")) throw n.Error($"reduction '{n.String("reduction", "")}' is not supported (none, add, mul, max, min)");
                break;
        }
    }

    /// <summary>Normalises over the dims from <c>axis</c> to the last, then scales and shifts (computed in float32,
    /// the stash type the exporters write).</summary>
    static Tensor LayerNorm(OnnxNode n, Tensor x, Tensor scale, Tensor? bias)
    {
        long axis = Axis(n.Int("axis", -1), x.dim());
        var shape = x.shape[(int)axis..];
        float eps = n.Float("epsilon", 1e-5f);
        if (scale.shape.SequenceEqual(shape) && (bias is null || bias.shape.SequenceEqual(shape)))
            return F.layer_norm(x, shape, scale, bias, eps);
        // Scale/bias that only broadcast to the normalised shape: normalise, then apply them with broadcasting.
        var y = F.layer_norm(x, shape, null, null, eps) * scale;
        return bias is null ? y : y + bias;
    }

    /// <summary>LayerNormalization with its Mean and InvStdDev outputs (PyTorch 2's exporter names them): the mean and
    /// 1/√(var + ε) over the normalised dims, kept as size-1 dims.</summary>
    static Tensor[] LayerNormWithStatistics(OnnxNode n, Tensor x, Tensor scale, Tensor? bias)
    {
        long axis = Axis(n.Int("axis", -1), x.dim());
        var dims = Enumerable.Range((int)axis, (int)(x.dim() - axis)).Select(d => (long)d).ToArray();
        var mean = x.mean(dims, keepdim: true);
        var inv = ((x - mean).square().mean(dims, keepdim: true) + n.Float("epsilon", 1e-5f)).rsqrt();
        return [LayerNorm(n, x, scale, bias), mean, inv];
    }

    static Tensor Pow(Tensor x, Tensor y)
    {
        // Exporters write x^2 with a constant exponent: a scalar exponent keeps libtorch's exact square.
        if (y.numel() == 1 && y.dim() <= x.dim() && x.is_floating_point())
        {
            double e = y.to(ScalarType.Float64).item<double>();
            var r = x.pow(e);
            return y.dim() == 0 ? r : r.reshape(BroadcastShape(x.shape, y.shape));
        }
        return x.pow(y.is_floating_point() || !x.is_floating_point() ? y : y.to(x.dtype));
    }

    static Tensor ConstantOfShape(OnnxNode n, Tensor shape)
    {
        var dims = Longs(shape);
        if (dims.Any(d => d < 0)) throw n.Error($"negative dimension in shape ({string.Join("×", dims)})");
        using var value = n.Attribute("value") is { T: { } tp } ? OnnxFile.ToTensor(tp, n.Where) : tensor(0f);
        if (value.numel() != 1) throw n.Error($"value must hold one element, it holds {value.numel()}");
        n.CheckOutput(dims); // the shape comes from the file: bounded before anything is allocated
        return value.reshape([]).expand(dims).clone();
    }

    /// <summary>numpy broadcasting of two shapes (ONNX's multidirectional broadcasting).</summary>
    static long[] BroadcastShape(long[] a, long[] b)
    {
        int r = Math.Max(a.Length, b.Length);
        var o = new long[r];
        for (int i = 0; i < r; i++)
        {
            long da = i < r - a.Length ? 1 : a[i - (r - a.Length)], db = i < r - b.Length ? 1 : b[i - (r - b.Length)];
            if (da != db && da != 1 && db != 1) throw new ArgumentException($"shapes ({string.Join("×", a)}) and ({string.Join("×", b)}) do not broadcast");
            o[i] = da == 1 ? db : da;
        }
        return o;
    }

    static Tensor Expand(OnnxNode n, Tensor x, long[] shape)
    {
        long[] target;
        try { target = BroadcastShape(x.shape, shape); }
        catch (ArgumentException e) { throw n.Error(e.Message); }
        n.CheckOutput(target); // a view, but the next operator would materialise it
        return x.expand(target);
    }

    static Tensor Range(OnnxNode n, Tensor start, Tensor limit, Tensor delta)
    {
        if (start.is_floating_point())
        {
            double s = start.to(ScalarType.Float64).item<double>(), l = limit.to(ScalarType.Float64).item<double>(), d = delta.to(ScalarType.Float64).item<double>();
            if (d == 0) throw n.Error("delta is 0");
            var steps = Math.Ceiling((l - s) / d);
            if (!(steps <= long.MaxValue)) throw n.Error($"range ({s}, {l}, {d}) has no finite length");
            long count = Math.Max((long)steps, 0);
            n.CheckOutput([count]);
            return (arange(count, dtype: ScalarType.Float64) * d + s).to(start.dtype);
        }
        long si = start.item<long>(), li = limit.item<long>(), di = delta.item<long>();
        if (di == 0) throw n.Error("delta is 0");
        long n2 = Math.Max((long)Math.Ceiling((li - si) / (double)di), 0);
        n.CheckOutput([n2]);
        return arange(n2, dtype: ScalarType.Int64) * di + si;
    }

    /// <summary>Copies <paramref name="data"/> with the slices addressed by the last axis of <paramref name="indices"/>
    /// replaced by (or, with a reduction, combined with) <paramref name="updates"/>; differentiable in both.</summary>
    static Tensor ScatterND(OnnxNode n, Tensor data, Tensor indices, Tensor updates)
    {
        int k = (int)indices.shape[^1];
        if (k > data.dim()) throw n.Error($"indices address {k} dims of a {data.dim()}-D tensor");
        var lead = data.shape[..k];
        var rest = data.shape[k..];
        var idx = indices.to(ScalarType.Int64).reshape(-1, k);
        var lin = zeros(idx.shape[0], dtype: ScalarType.Int64, device: data.device);
        long stride = 1;
        for (int j = k - 1; j >= 0; j--)
        {
            var col = idx[.., j];
            col = where(col < 0, col + lead[j], col);
            if (col.numel() > 0 && (col.min().item<long>() < 0 || col.max().item<long>() >= lead[j]))
                throw n.Error($"index out of range for dim {j} of size {lead[j]}");
            lin = lin + col * stride;
            stride *= lead[j];
        }
        var flat = data.reshape([stride, .. rest]);
        var upd = updates.reshape([-1, .. rest]).to(data.dtype);
        return ScatterRows(n, flat, lin, upd).reshape(data.shape);
    }

    /// <summary>Rows <paramref name="rows"/> of <paramref name="flat"/> replaced by, or with reduction add / mul / max / min
    /// (opsets 16 and 18) combined with, the rows of <paramref name="updates"/>; the data's own value takes part in the
    /// reduction, as ONNX defines it. mul, max and min go in rounds, each taking the next update of every row (a row
    /// named by more than <see cref="MaxScatterRepeats"/> updates is refused), so the result keeps its gradient.</summary>
    static Tensor ScatterRows(OnnxNode n, Tensor flat, Tensor rows, Tensor updates)
    {
        var reduction = n.String("reduction", "none");
        if (reduction == "none") return flat.index_copy(0, rows, updates);
        if (reduction == "add") return flat.index_add(0, rows, updates, 1);
        var places = rows.ToArray<long>();
        var round = new long[places.Length];
        var seen = new Dictionary<long, long>();
        for (int i = 0; i < places.Length; i++)
        {
            long k = seen.GetValueOrDefault(places[i]);
            if (k >= MaxScatterRepeats) throw n.Error($"place {places[i]} receives more than {MaxScatterRepeats} updates");
            round[i] = k;
            seen[places[i]] = k + 1;
        }
        long rounds = seen.Count == 0 ? 0 : seen.Values.Max();
        var y = flat;
        using var order = tensor(round);
        for (long r = 0; r < rounds; r++)
        {
            var pick = order.eq(r).nonzero().view(-1);
            var at = rows.index_select(0, pick);
            var old = y.index_select(0, at);
            var upd = updates.index_select(0, pick);
            y = y.index_copy(0, at, reduction switch { "mul" => old * upd, "max" => old.maximum(upd), _ => old.minimum(upd) });
        }
        return y;
    }

    /// <summary>Most updates a ScatterND or ScatterElements reduction may send to one place.</summary>
    const int MaxScatterRepeats = 1024;
}
