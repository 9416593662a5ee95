using Onnx;
using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Loupe.Models.Onnx;

/// <summary>ONNX operators (default domain, opsets 7–17) as differentiable TorchSharp code. Each operator has a
/// load-time check (<see cref="Check"/>: attributes the implementation does not handle are refused before anything
/// runs) and a run function.</summary>
public static class Ops
{
    delegate Tensor[] OpFn(OnnxNode n, Tensor?[] x);

    static Tensor[] One(Tensor t) => [t];

    static readonly Dictionary<string, OpFn> Table = new(StringComparer.Ordinal)
    {
        ["Conv"] = (n, x) => One(Conv(n, x[0]!, x[1]!, x.Length > 2 ? x[2] : null)),
        ["ConvTranspose"] = (n, x) => One(ConvTranspose(n, x[0]!, x[1]!, x.Length > 2 ? x[2] : null)),
        ["BatchNormalization"] = (n, x) => One(F.batch_norm(x[0]!, x[3]!, x[4]!, x[1], x[2], false, 0.1, n.Float("epsilon", 1e-5f))),
        ["Relu"] = (n, x) => One(x[0]!.relu()),
        ["LeakyRelu"] = (n, x) => One(F.leaky_relu(x[0]!, n.Float("alpha", 0.01f))),
        ["Clip"] = (n, x) => One(Clip(n, x)),
        ["Sigmoid"] = (n, x) => One(x[0]!.sigmoid()),
        ["Tanh"] = (n, x) => One(x[0]!.tanh()),
        ["HardSigmoid"] = (n, x) => One((x[0]! * n.Float("alpha", 0.2f) + n.Float("beta", 0.5f)).clamp(0, 1)),
        ["HardSwish"] = (n, x) => One(F.hardswish(x[0]!)),
        ["Softmax"] = (n, x) => One(Softmax(n, x[0]!)),
        ["Add"] = (n, x) => One(x[0]! + x[1]!),
        ["Sub"] = (n, x) => One(x[0]! - x[1]!),
        ["Mul"] = (n, x) => One(x[0]! * x[1]!),
        ["Div"] = (n, x) => One(x[0]!.is_floating_point() ? x[0]! / x[1]! : x[0]!.div(x[1]!, RoundingMode.trunc)),
        ["MaxPool"] = (n, x) => One(MaxPool(n, x[0]!)),
        ["AveragePool"] = (n, x) => One(AveragePool(n, x[0]!)),
        ["GlobalAveragePool"] = (n, x) => One(x[0]!.mean(SpatialDims(x[0]!), keepdim: true)),
        ["GlobalMaxPool"] = (n, x) => One(x[0]!.amax(SpatialDims(x[0]!), keepdim: true)),
        ["Gemm"] = (n, x) => One(Gemm(n, x[0]!, x[1]!, x.Length > 2 ? x[2] : null)),
        ["MatMul"] = (n, x) => One(MatMul(n, x[0]!, x[1]!)),
        ["Flatten"] = (n, x) => One(Flatten(n, x[0]!)),
        ["Reshape"] = (n, x) => One(Reshape(n, x[0]!, Longs(x[1]!))),
        ["Transpose"] = (n, x) => One(x[0]!.permute(n.Ints("perm") ?? Enumerable.Range(0, (int)x[0]!.dim()).Reverse().Select(i => (long)i).ToArray())),
        ["Concat"] = (n, x) => One(cat(x.Where(t => t is not null).ToArray()!, Axis(n.Int("axis", 0), x[0]!.dim()))),
        ["Split"] = (n, x) => Split(n, x),
        ["Slice"] = (n, x) => One(Slice(n, x)),
        ["Squeeze"] = (n, x) => One(Squeeze(n, x)),
        ["Unsqueeze"] = (n, x) => One(Unsqueeze(n, x)),
        ["Pad"] = (n, x) => One(Pad(n, x)),
        ["Identity"] = (n, x) => One(x[0]!.alias()),
        ["Dropout"] = (n, x) => n.HasOutput(1) ? [x[0]!.alias(), ones_like(x[0]!, ScalarType.Bool)] : One(x[0]!.alias()),
        ["Constant"] = (n, x) => One(Constant(n)),
        ["Shape"] = (n, x) => One(Shape(n, x[0]!)),
        ["Gather"] = (n, x) => One(Gather(n, x[0]!, x[1]!)),
        ["ReduceMean"] = (n, x) => One(ReduceMean(n, x[0]!)),
        ["Cast"] = (n, x) => One(Cast(n, x[0]!)),
    };

    /// <summary>The operators this backend runs.</summary>
    public static IReadOnlyCollection<string> Supported => Table.Keys;

    /// <summary>Refuses a node this backend cannot run exactly (throws <see cref="Loupe.Abstractions.LoupeException"/>).</summary>
    public static void Check(OnnxNode n)
    {
        if (n.Domain is not ("" or "ai.onnx") || !Table.ContainsKey(n.OpType))
            throw n.Error($"unsupported ONNX operator '{(n.Domain is "" or "ai.onnx" ? "" : n.Domain + ".")}{n.OpType}'; the onnx backend supports {string.Join(", ", Table.Keys.Order())}");
        switch (n.OpType)
        {
            case "BatchNormalization":
                if (n.Int("spatial", 1) != 1) throw n.Error("spatial = 0 (per-activation statistics) is not supported");
                if (n.Int("training_mode", 0) != 0) throw n.Error("training_mode = 1 is not supported (inference graphs only)");
                if (n.Outputs.Skip(1).Any(o => o.Length > 0)) throw n.Error("training outputs (running mean/var) are not supported");
                if (n.Inputs.Length < 5) throw n.Error("needs 5 inputs");
                break;
            case "MaxPool":
                if (n.HasOutput(1)) throw n.Error("the Indices output is not supported");
                if (n.Int("storage_order", 0) != 0) throw n.Error("storage_order = 1 is not supported");
                break;
            case "Conv" or "ConvTranspose" or "MaxPool" or "AveragePool":
                break;
            case "Constant":
                if (n.Has("sparse_value")) throw n.Error("sparse constants are not supported");
                if (n.Has("value_string") || n.Has("value_strings")) throw n.Error("string constants are not supported");
                break;
            case "Pad":
                if (n.String("mode", "constant") is not ("constant" or "reflect" or "edge")) throw n.Error($"pad mode '{n.String("mode", "")}' is not supported");
                break;
            case "Cast":
                _ = CastType(n);
                break;
        }
        if (n.OpType is "Conv" or "ConvTranspose" or "MaxPool" or "AveragePool")
        {
            var ap = n.String("auto_pad", "NOTSET");
            if (ap is not ("NOTSET" or "VALID" or "SAME_UPPER" or "SAME_LOWER" or "")) throw n.Error($"auto_pad '{ap}' is not supported");
            var k = n.Ints("kernel_shape");
            if (k is not null && k.Length != 2) throw n.Error($"only 2-D operators are supported (kernel_shape has {k.Length} dims)");
            if (n.OpType != "Conv" && n.OpType != "ConvTranspose" && k is null) throw n.Error("kernel_shape is required");
        }
    }

    /// <summary>Binds the run function of a checked node.</summary>
    internal static void Bind(OnnxNode n)
    {
        var fn = Table[n.OpType];
        n.Run = (node, inputs) => fn(node, inputs);
    }

    // ---- helpers ----

    internal static long[] Longs(Tensor t) => (t.dtype == ScalarType.Int64 ? t : t.to(ScalarType.Int64)).ToArray<long>();

    static long Axis(long axis, long rank) => axis < 0 ? axis + rank : axis;

    static long[] SpatialDims(Tensor x) => Enumerable.Range(2, (int)x.dim() - 2).Select(i => (long)i).ToArray();

    static long[] Fill(long[]? v, int n, long value) => v ?? Enumerable.Repeat(value, n).ToArray();

    /// <summary>Begin and end pads of the spatial dims (explicit, VALID or SAME_*).</summary>
    static (long[] Begin, long[] End) Pads(OnnxNode n, long[] input, long[] kernel, long[] stride, long[] dilation)
    {
        int r = kernel.Length;
        var autoPad = n.String("auto_pad", "NOTSET");
        if (autoPad is "SAME_UPPER" or "SAME_LOWER")
        {
            var b = new long[r]; var e = new long[r];
            for (int i = 0; i < r; i++)
            {
                long outSize = (input[i] + stride[i] - 1) / stride[i];
                long total = Math.Max(0, (outSize - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1 - input[i]);
                if (autoPad == "SAME_UPPER") { b[i] = total / 2; e[i] = total - b[i]; }
                else { e[i] = total / 2; b[i] = total - e[i]; }
            }
            return (b, e);
        }
        if (autoPad == "VALID") return (new long[r], new long[r]);
        var pads = n.Ints("pads") ?? new long[2 * r];
        if (pads.Length != 2 * r) throw n.Error($"pads has {pads.Length} values, expected {2 * r}");
        return (pads[..r], pads[r..]);
    }

    /// <summary>torch pad list (last dim first) for 2-D spatial begin/end pads.</summary>
    static long[] TorchPad(long[] b, long[] e) => [b[1], e[1], b[0], e[0]];

    static bool Symmetric(long[] b, long[] e) => b.SequenceEqual(e);

    /// <summary>Asymmetric pads with begin ≥ end often give the same output as symmetric begin pads (the extra end rows
    /// are never reached by a window): then the op pads itself and the explicit pad copy is skipped.</summary>
    static bool BeginPadsSuffice(long[] inSize, long[] k, long[] s, long[] d, long[] b, long[] e)
    {
        for (int i = 0; i < 2; i++)
        {
            if (b[i] < e[i]) return false;
            long span = d[i] * (k[i] - 1) + 1;
            if ((inSize[i] + b[i] + e[i] - span) / s[i] != (inSize[i] + 2 * b[i] - span) / s[i]) return false;
        }
        return true;
    }

    static Tensor Conv(OnnxNode n, Tensor x, Tensor w, Tensor? bias)
    {
        if (x.dim() != 4 || w.dim() != 4) throw n.Error($"only 2-D convolutions are supported (input {x.dim()}-D, weight {w.dim()}-D)");
        var k = n.Ints("kernel_shape") ?? [w.shape[2], w.shape[3]];
        var s = Fill(n.Ints("strides"), 2, 1);
        var d = Fill(n.Ints("dilations"), 2, 1);
        var g = n.Int("group", 1);
        var (b, e) = Pads(n, [x.shape[2], x.shape[3]], k, s, d);
        if (Symmetric(b, e) || BeginPadsSuffice([x.shape[2], x.shape[3]], k, s, d, b, e)) return F.conv2d(x, w, bias, s, b, d, g);
        return F.conv2d(F.pad(x, TorchPad(b, e)), w, bias, s, [0, 0], d, g);
    }

    static Tensor ConvTranspose(OnnxNode n, Tensor x, Tensor w, Tensor? bias)
    {
        if (x.dim() != 4 || w.dim() != 4) throw n.Error($"only 2-D transposed convolutions are supported (input {x.dim()}-D, weight {w.dim()}-D)");
        var k = n.Ints("kernel_shape") ?? [w.shape[2], w.shape[3]];
        var s = Fill(n.Ints("strides"), 2, 1);
        var d = Fill(n.Ints("dilations"), 2, 1);
        var op = Fill(n.Ints("output_padding"), 2, 0);
        var g = n.Int("group", 1);
        long[] inSize = [x.shape[2], x.shape[3]];
        long[] b = new long[2], e = new long[2];
        var outShape = n.Ints("output_shape");
        var autoPad = n.String("auto_pad", "NOTSET");
        if (outShape is not null || autoPad is "SAME_UPPER" or "SAME_LOWER")
        {
            if (outShape is not null && outShape.Length > 2) outShape = outShape[^2..];
            for (int i = 0; i < 2; i++)
            {
                long target = outShape is not null ? outShape[i] : inSize[i] * s[i];
                long total = s[i] * (inSize[i] - 1) + op[i] + (k[i] - 1) * d[i] + 1 - target;
                if (total < 0) throw n.Error($"output_shape {string.Join("×", outShape ?? [])} needs negative padding");
                if (autoPad == "SAME_UPPER") { b[i] = total / 2; e[i] = total - b[i]; }
                else { e[i] = total / 2; b[i] = total - e[i]; }
            }
        }
        else if (autoPad != "VALID")
        {
            var pads = n.Ints("pads") ?? new long[4];
            b = pads[..2]; e = pads[2..];
        }
        long[] p = [Math.Min(b[0], e[0]), Math.Min(b[1], e[1])];
        var y = F.conv_transpose2d(x, w, bias, s, p, op, d, g);
        if (Symmetric(b, e)) return y;
        long h = y.shape[2], wd = y.shape[3];
        return y[.., .., TensorIndex.Slice(b[0] - p[0], h - (e[0] - p[0])), TensorIndex.Slice(b[1] - p[1], wd - (e[1] - p[1]))];
    }

    static Tensor MaxPool(OnnxNode n, Tensor x)
    {
        if (x.dim() != 4) throw n.Error($"only 2-D pooling is supported (input {x.dim()}-D)");
        var k = n.Ints("kernel_shape")!;
        var s = Fill(n.Ints("strides"), 2, 1);
        var d = Fill(n.Ints("dilations"), 2, 1);
        bool ceil = n.Int("ceil_mode", 0) != 0;
        var (b, e) = Pads(n, [x.shape[2], x.shape[3]], k, s, d);
        if ((Symmetric(b, e) || !ceil && BeginPadsSuffice([x.shape[2], x.shape[3]], k, s, d, b, e)) && b[0] <= k[0] / 2 && b[1] <= k[1] / 2)
            return F.max_pool2d(x, k, s, b, d, ceil);
        return F.max_pool2d(F.pad(x, TorchPad(b, e), PaddingModes.Constant, double.NegativeInfinity), k, s, [0, 0], d, ceil);
    }

    static Tensor AveragePool(OnnxNode n, Tensor x)
    {
        if (x.dim() != 4) throw n.Error($"only 2-D pooling is supported (input {x.dim()}-D)");
        var k = n.Ints("kernel_shape")!;
        var s = Fill(n.Ints("strides"), 2, 1);
        bool ceil = n.Int("ceil_mode", 0) != 0;
        bool includePad = n.Int("count_include_pad", 0) != 0;
        var (b, e) = Pads(n, [x.shape[2], x.shape[3]], k, s, [1, 1]);
        if (b.All(v => v == 0) && e.All(v => v == 0)) return F.avg_pool2d(x, k, s, [0, 0], ceil, count_include_pad: false);
        if (Symmetric(b, e) && b[0] <= k[0] / 2 && b[1] <= k[1] / 2) return F.avg_pool2d(x, k, s, b, ceil, includePad);
        // Asymmetric pads: pad explicitly with zeros; without count_include_pad divide by the number of real pixels
        // in each window (the same pooling over a padded mask of ones).
        var pad = TorchPad(b, e);
        var sum = F.avg_pool2d(F.pad(x, pad), k, s, [0, 0], ceil, true);
        if (includePad) return sum;
        using var ones = torch.ones(1, 1, x.shape[2], x.shape[3], dtype: x.dtype, device: x.device);
        using var mask = F.pad(ones, pad);
        using var count = F.avg_pool2d(mask, k, s, [0, 0], ceil, true);
        return sum / count;
    }

    /// <summary>matmul with its shapes checked first: TorchSharp 0.107's THSTensor_matmul does not catch libtorch's
    /// error, so a shape mismatch there aborts the process (found by tools/Loupe.Fuzz).</summary>
    static Tensor MatMul(OnnxNode n, Tensor a, Tensor b)
    {
        string Shapes() => $"({string.Join("×", a.shape)}) and ({string.Join("×", b.shape)})";
        if (a.dim() == 0 || b.dim() == 0) throw n.Error($"cannot multiply scalars: {Shapes()}");
        long ka = a.shape[^1], kb = b.dim() == 1 ? b.shape[0] : b.shape[^2];
        if (ka != kb) throw n.Error($"cannot multiply matrices of shapes {Shapes()}");
        var ba = a.shape.SkipLast(2).Reverse().ToArray();
        var bb = b.shape.SkipLast(2).Reverse().ToArray();
        for (int i = 0; i < Math.Min(ba.Length, bb.Length); i++)
            if (ba[i] != bb[i] && ba[i] != 1 && bb[i] != 1) throw n.Error($"batch dimensions do not broadcast: {Shapes()}");
        return a.matmul(b);
    }

    static Tensor Gemm(OnnxNode n, Tensor a, Tensor b, Tensor? c)
    {
        if (a.dim() != 2 || b.dim() != 2) throw n.Error($"Gemm needs 2-D inputs, got ({string.Join("×", a.shape)}) and ({string.Join("×", b.shape)})");
        if (n.Int("transA", 0) != 0) a = a.t();
        if (n.Int("transB", 0) != 0) b = b.t();
        float alpha = n.Float("alpha", 1f), beta = n.Float("beta", 1f);
        var y = MatMul(n, a, b);
        if (alpha != 1f) y = y * alpha;
        if (c is not null && beta != 0f) y = beta == 1f ? y + c : y + c * beta;
        return y;
    }

    static Tensor Clip(OnnxNode n, Tensor?[] x)
    {
        if (n.Opset < 11)
            return x[0]!.clamp(n.Has("min") ? n.Float("min", 0) : null, n.Has("max") ? n.Float("max", 0) : null);
        Scalar? min = x.Length > 1 && x[1] is { } lo ? lo.to(ScalarType.Float32).item<float>() : null;
        Scalar? max = x.Length > 2 && x[2] is { } hi ? hi.to(ScalarType.Float32).item<float>() : null;
        if (min is null && max is null) return x[0]!.alias();
        return x[0]!.clamp(min, max);
    }

    static Tensor Softmax(OnnxNode n, Tensor x)
    {
        long rank = x.dim();
        if (n.Opset >= 13) return x.softmax(Axis(n.Int("axis", -1), rank));
        long axis = Axis(n.Int("axis", 1), rank);
        var shape = x.shape;
        long rows = shape[..(int)axis].Aggregate(1L, (p, v) => p * v);
        return x.reshape(rows, -1).softmax(1).reshape(shape);
    }

    static Tensor Flatten(OnnxNode n, Tensor x)
    {
        long axis = Axis(n.Int("axis", 1), x.dim());
        var shape = x.shape;
        long rows = shape[..(int)axis].Aggregate(1L, (p, v) => p * v);
        long cols = shape[(int)axis..].Aggregate(1L, (p, v) => p * v);
        return x.reshape(rows, cols);
    }

    static Tensor Reshape(OnnxNode n, Tensor x, long[] shape)
    {
        bool allowZero = n.Int("allowzero", 0) != 0;
        var target = (long[])shape.Clone();
        for (int i = 0; i < target.Length; i++)
            if (target[i] == 0 && !allowZero) target[i] = x.shape[i];
        return x.reshape(target);
    }

    static Tensor[] Split(OnnxNode n, Tensor?[] x)
    {
        var t = x[0]!;
        long axis = Axis(n.Int("axis", 0), t.dim());
        long[]? sizes = n.Opset >= 13 ? (x.Length > 1 && x[1] is { } s ? Longs(s) : null) : n.Ints("split");
        int outputs = n.Outputs.Length;
        if (sizes is null || sizes.Length == 0)
        {
            long dim = t.shape[axis];
            if (dim % outputs != 0) throw n.Error($"cannot split {dim} into {outputs} equal parts");
            sizes = Enumerable.Repeat(dim / outputs, outputs).ToArray();
        }
        return t.split(sizes, axis);
    }

    static Tensor Slice(OnnxNode n, Tensor?[] x)
    {
        var t = x[0]!;
        long[] starts, ends, axes, steps;
        if (n.Opset < 10)
        {
            starts = n.Ints("starts")!; ends = n.Ints("ends")!;
            axes = n.Ints("axes") ?? Enumerable.Range(0, starts.Length).Select(i => (long)i).ToArray();
            steps = Fill(null, starts.Length, 1);
        }
        else
        {
            starts = Longs(x[1]!); ends = Longs(x[2]!);
            axes = x.Length > 3 && x[3] is { } a ? Longs(a) : Enumerable.Range(0, starts.Length).Select(i => (long)i).ToArray();
            steps = x.Length > 4 && x[4] is { } st ? Longs(st) : Fill(null, starts.Length, 1);
        }
        for (int i = 0; i < starts.Length; i++)
        {
            long axis = Axis(axes[i], t.dim()), dim = t.shape[axis], step = steps[i];
            if (step == 0) throw n.Error("slice step 0");
            long start = starts[i], end = ends[i];
            if (start < 0) start += dim;
            if (end < 0) end += dim;
            if (step > 0)
            {
                start = Math.Clamp(start, 0, dim); end = Math.Clamp(end, 0, dim);
                t = t.slice(axis, start, Math.Max(start, end), step);
            }
            else
            {
                start = Math.Clamp(start, 0, dim - 1); end = Math.Clamp(end, -1, dim - 1);
                var idx = new List<long>();
                for (long j = start; j > end; j += step) idx.Add(j);
                using var index = tensor(idx.ToArray(), device: t.device);
                t = t.index_select(axis, index);
            }
        }
        return t;
    }

    static long[]? AxesOf(OnnxNode n, Tensor?[] x) =>
        n.Opset >= 13 ? (x.Length > 1 && x[1] is { } a ? Longs(a) : null) : n.Ints("axes");

    static Tensor Squeeze(OnnxNode n, Tensor?[] x)
    {
        var t = x[0]!;
        var axes = AxesOf(n, x);
        if (axes is null) return t.squeeze();
        foreach (var a in axes.Select(a => Axis(a, t.dim())).OrderDescending()) t = t.squeeze(a);
        return t;
    }

    static Tensor Unsqueeze(OnnxNode n, Tensor?[] x)
    {
        var t = x[0]!;
        var axes = AxesOf(n, x) ?? throw n.Error("axes are required");
        long rank = t.dim() + axes.Length;
        foreach (var a in axes.Select(a => Axis(a, rank)).Order()) t = t.unsqueeze(a);
        return t;
    }

    static Tensor Pad(OnnxNode n, Tensor?[] x)
    {
        var t = x[0]!;
        long[] pads; double value;
        if (n.Opset < 11) { pads = n.Ints("pads") ?? []; value = n.Float("value", 0); }
        else
        {
            pads = Longs(x[1]!);
            value = x.Length > 2 && x[2] is { } v && v.numel() > 0 ? v.to(ScalarType.Float64).item<double>() : 0;
        }
        int r = (int)t.dim();
        if (pads.Length != 2 * r) throw n.Error($"pads has {pads.Length} values for a {r}-D input");
        int first = Enumerable.Range(0, r).FirstOrDefault(i => pads[i] != 0 || pads[i + r] != 0, r);
        if (first == r) return t.alias();
        var list = new List<long>();
        for (int i = r - 1; i >= first; i--) { list.Add(pads[i]); list.Add(pads[i + r]); }
        var mode = n.String("mode", "constant") switch { "reflect" => PaddingModes.Reflect, "edge" => PaddingModes.Replicate, _ => PaddingModes.Constant };
        return F.pad(t, list.ToArray(), mode, value);
    }

    internal static Tensor Constant(OnnxNode n)
    {
        if (n.Attribute("value") is { T: { } tp }) return OnnxFile.ToTensor(tp, n.Where);
        if (n.Has("value_float")) return tensor(n.Float("value_float", 0));
        if (n.Has("value_floats")) return tensor(n.Floats("value_floats")!);
        if (n.Has("value_int")) return tensor(n.Int("value_int", 0));
        if (n.Has("value_ints")) return tensor(n.Ints("value_ints")!);
        throw n.Error("Constant has no value");
    }

    static Tensor Shape(OnnxNode n, Tensor x)
    {
        var shape = x.shape;
        long r = shape.Length;
        long start = n.Int("start", 0), end = n.Int("end", r);
        if (start < 0) start += r;
        if (end < 0) end += r;
        start = Math.Clamp(start, 0, r); end = Math.Clamp(end, start, r);
        return tensor(shape[(int)start..(int)end]);
    }

    static Tensor Gather(OnnxNode n, Tensor data, Tensor indices)
    {
        long axis = Axis(n.Int("axis", 0), data.dim());
        long dim = data.shape[axis];
        var idx = indices.to(ScalarType.Int64);
        idx = where(idx < 0, idx + dim, idx);
        var flat = idx.reshape(-1);
        if (flat.device != data.device) flat = flat.to(data.device);
        var picked = data.index_select(axis, flat);
        var shape = data.shape[..(int)axis].Concat(indices.shape).Concat(data.shape[((int)axis + 1)..]).ToArray();
        return picked.reshape(shape);
    }

    static Tensor ReduceMean(OnnxNode n, Tensor x)
    {
        bool keep = n.Int("keepdims", 1) != 0;
        var axes = n.Ints("axes") ?? Enumerable.Range(0, (int)x.dim()).Select(i => (long)i).ToArray();
        return x.mean(axes.Select(a => Axis(a, x.dim())).ToArray(), keep);
    }

    static ScalarType CastType(OnnxNode n) => (TensorProto.Types.DataType)n.Int("to", 0) switch
    {
        TensorProto.Types.DataType.Float or TensorProto.Types.DataType.Double or TensorProto.Types.DataType.Float16 => ScalarType.Float32,
        TensorProto.Types.DataType.Int64 or TensorProto.Types.DataType.Int32 or TensorProto.Types.DataType.Int16 or TensorProto.Types.DataType.Int8
            or TensorProto.Types.DataType.Uint8 or TensorProto.Types.DataType.Uint16 or TensorProto.Types.DataType.Uint32 or TensorProto.Types.DataType.Uint64 => ScalarType.Int64,
        TensorProto.Types.DataType.Bool => ScalarType.Bool,
        var t => throw n.Error($"Cast to {t} is not supported"),
    };

    static Tensor Cast(OnnxNode n, Tensor x)
    {
        var to = CastType(n);
        return x.dtype == to ? x.alias() : x.to(to);
    }
}
