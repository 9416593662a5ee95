using Onnx;
using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Loupe.Models.Onnx;

/// <summary>ONNX operators (default domain, opsets 7–23) as differentiable TorchSharp code. Each operator has a
/// load-time check (<see cref="Check"/>: attributes the implementation does not handle are refused before anything
/// runs) and a run function.</summary>
public static partial class Ops
{
    delegate Tensor[] OpFn(OnnxNode n, Tensor?[] x);

    static Tensor[] One(Tensor t) => [t];

    static readonly Dictionary<string, OpFn> Table = WithQuantizedOps(WithContribOps(WithLegacyOps(WithNewerOps(WithReduceOps(WithDetectionOps(WithHeadOps(WithTensorOps(new(StringComparer.Ordinal)
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
        ["MaxPool"] = (n, x) => n.HasOutput(1) ? MaxPoolWithIndices(n, x[0]!) : One(MaxPool(n, x[0]!)),
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
        ["Cast"] = (n, x) => One(Cast(n, x[0]!)),
        // If and Loop run subgraphs over the enclosing values: the interpreter runs them (OnnxModel.Branches.cs).
        ["If"] = (n, x) => throw n.Error("If is run by the interpreter, not as an operator"),
        ["Loop"] = (n, x) => throw n.Error("Loop is run by the interpreter, not as an operator"),
    }))))))));

    /// <summary>The operators this backend runs.</summary>
    public static IReadOnlyCollection<string> Supported => Table.Keys;

    /// <summary>Refuses a node this backend cannot run exactly (throws <see cref="Loupe.Abstractions.LoupeException"/>).</summary>
    public static void Check(OnnxNode n)
    {
        if (n.Domain == OnnxContrib.Domain && ContribTable.ContainsKey(n.OpType)) return;
        if (n.Domain == Quantization.Domain && LoupeTable.ContainsKey(n.OpType)) return;
        if (n.Domain == OnnxContrib.Domain + ".nchwc")
            throw n.Error($"'{n.Domain}.{n.OpType}' is ONNX Runtime's blocked memory layout for this machine's CPU, written into graphs saved at ORT_ENABLE_ALL; save the graph at ORT_ENABLE_EXTENDED or below (its fused operators load), or run it on the onnx-runtime backend");
        if (n.Domain is not ("" or "ai.onnx") || !Table.ContainsKey(n.OpType))
            throw n.Error($"unsupported ONNX operator '{(n.Domain is "" or "ai.onnx" ? "" : n.Domain + ".")}{n.OpType}'; the onnx backend supports {string.Join(", ", Table.Keys.Order())}"
                + $" and ONNX Runtime's {string.Join(", ", OnnxContrib.Expanded.Concat(ContribTable.Keys).Concat(OnnxContrib.QOperators).Order().Select(o => OnnxContrib.Domain + "." + o))}"
                + " (and the integer operators QLinearConv, QLinearMatMul, rewritten at load into QDQ form)");
        switch (n.OpType)
        {
            case "BatchNormalization":
                if (n.Int("spatial", 1) != 1) throw n.Error("spatial = 0 (per-activation statistics) is not supported");
                if (n.Int("training_mode", 0) != 0) throw n.Error("training_mode = 1 is not supported (inference graphs only)");
                if (n.Outputs.Skip(1).Any(o => o.Length > 0)) throw n.Error("training outputs (running mean/var) are not supported");
                if (n.Inputs.Length < 5) throw n.Error("needs 5 inputs");
                break;
            case "MaxPool":
                if (n.HasOutput(1) && n.Int("storage_order", 0) != 0) throw n.Error("storage_order = 1 (column-major indices) is not supported");
                break;
            case "AveragePool":
                if (n.Ints("dilations") is { } dil && dil.Any(v => v != 1)) throw n.Error($"dilations ({string.Join(", ", dil)}) are not supported (1 only)");
                break;
            case "Conv" or "ConvTranspose":
                break;
            case "Constant":
                if (n.Has("sparse_value")) throw n.Error("sparse constants are not supported");
                if (n.Has("value_string") || n.Has("value_strings")) throw n.Error("string constants are not supported");
                break;
            case "Pad":
                if (n.String("mode", "constant") is not ("constant" or "reflect" or "edge" or "wrap")) throw n.Error($"pad mode '{n.String("mode", "")}' is not supported");
                break;
            case "Cast":
                _ = CastType(n);
                break;
        }
        CheckTensorOps(n);
        CheckHeadOps(n);
        CheckDetectionOps(n);
        CheckNewerOps(n);
        CheckLegacyOps(n);
        CheckContribOps(n);
        CheckQuantizedOps(n);
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
        var fn = n.Domain == OnnxContrib.Domain ? ContribTable[n.OpType] : n.Domain == Quantization.Domain ? LoupeTable[n.OpType] : Table[n.OpType];
        n.Run = (node, inputs) => fn(node, inputs);
    }

    // ---- helpers ----

    internal static long[] Longs(Tensor t) => (t.dtype == ScalarType.Int64 ? t : t.to(ScalarType.Int64)).ToArray<long>();

    static long Axis(long axis, long rank) => axis < 0 ? axis + rank : axis;

    static long[] SpatialDims(Tensor x) => Enumerable.Range(2, (int)x.dim() - 2).Select(i => (long)i).ToArray();

    static long[] Fill(long[]? v, int n, long value) => v ?? Enumerable.Repeat(value, n).ToArray();

    /// <summary>matmul with its shapes checked first: TorchSharp 0.107's THSTensor_matmul does not catch libtorch's
    /// error, so a shape mismatch there aborts the process (found by tools/Loupe.Fuzz).</summary>
    static Tensor MatMul(OnnxNode n, Tensor a, Tensor b)
    {
        if (CheckedOps.MatMulError(a.shape, b.shape) is { } error) throw n.Error(error);
        long ka = a.shape[^1];
        if (a.dim() > 2 && b.dim() == 2 && ka > 0 && a.numel() > 0)
            return a.reshape(-1, ka).mm(b).reshape([.. a.shape[..^1], b.shape[1]]);
        return a.MatMul(b);
    }

    /// <summary>libtorch's linear on the rows of <paramref name="x"/> (any rank ≥ 1) as one 2-D GEMM. libtorch's own
    /// N-D path leaves the single GEMM when x is a transpose's view whose size-1 axis has a large stride (vit_b_16's
    /// in-projection input, [197,1,768] with strides 768,151296,1: 3.4× slower forward and backward, measured with
    /// tests/Loupe.Benchmarks --gemm-parity 5 layout); flattening first is a view (a copy where it cannot be), and the
    /// values are the same.</summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias)
    {
        long k = x.dim() > 0 ? x.shape[^1] : 0;
        if (x.dim() == 2 || k == 0 || x.numel() == 0) return F.linear(x, weight, bias);
        return F.linear(x.reshape(-1, k), weight, bias).reshape([.. x.shape[..^1], weight.shape[0]]);
    }

    static Tensor Gemm(OnnxNode n, Tensor a, Tensor b, Tensor? c)
    {
        if (a.dim() != 2 || b.dim() != 2) throw n.Error($"Gemm needs 2-D inputs, got ({string.Join("×", a.shape)}) and ({string.Join("×", b.shape)})");
        if (n.Int("transA", 0) != 0) a = a.t();
        if (n.Int("transB", 0) != 0) b = b.t();
        float alpha = n.Float("alpha", 1f), beta = n.Float("beta", 1f);
        // The common case (a Linear layer: bias vector, unit scales) as one addmm, as nn.Linear runs it.
        if (alpha == 1f && beta == 1f && c is { } bias && bias.dim() == 1 && a.shape[1] == b.shape[0] && bias.shape[0] == b.shape[1])
            return addmm(bias, a, b, 1f, 1f);
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

    /// <summary>The output of a Relu, LeakyRelu, Sigmoid, Tanh, Softmax or MaxPool node under DeepLift's rescale rule
    /// (Captum's multipliers; its nonlinear rule covers LeakyReLU too), or null for any other node (which keeps its
    /// gradient, as Captum's linear layers do).</summary>
    internal static Tensor? Rescaled(OnnxNode n, Tensor?[] x)
    {
        switch (n.OpType)
        {
            case "Relu": return Rescale.Nonlinear(x[0]!, Nonlinearity.Relu);
            case "LeakyRelu":
            {
                float alpha = n.Float("alpha", 0.01f);
                return Rescale.Elementwise(x[0]!, t => F.leaky_relu(t, alpha), a => where(a.gt(0), ones_like(a), full_like(a, alpha)));
            }
            case "Sigmoid": return Rescale.Nonlinear(x[0]!, Nonlinearity.Sigmoid);
            case "Tanh": return Rescale.Nonlinear(x[0]!, Nonlinearity.Tanh);
            case "Softmax":
            {
                long rank = x[0]!.dim();
                long axis = Axis(n.Int("axis", n.Opset >= 13 ? -1 : 1), rank);
                if (n.Opset < 13 && axis != rank - 1)
                    throw n.Error($"the rescale rule (deeplift) needs a Softmax over one axis; opset {n.Opset} flattens the dims from axis {axis} of a {rank}-D input");
                return Rescale.Nonlinear(x[0]!, Nonlinearity.Softmax, axis);
            }
            case "MaxPool":
                if (n.Outputs.Length > 1 && n.Outputs[1].Length > 0) throw n.Error("the rescale rule (deeplift) does not cover a MaxPool whose indices are used");
                return RescaleMaxPool(n, x[0]!);
            default: return null;
        }
    }

    static Tensor Softmax(OnnxNode n, Tensor x) => AlongAxis(n, x, (t, d) => t.softmax(d));

    /// <summary>Softmax or LogSoftmax (<paramref name="f"/>) as the node's opset defines the axis: from opset 13 along
    /// <c>axis</c> (default −1); before, over the input coerced to 2-D at <c>axis</c> (default 1).</summary>
    static Tensor AlongAxis(OnnxNode n, Tensor x, Func<Tensor, long, Tensor> f)
    {
        long rank = x.dim();
        if (n.Opset >= 13) return f(x, Axis(n.Int("axis", -1), rank));
        long axis = Axis(n.Int("axis", 1), rank);
        var shape = x.shape;
        long rows = shape[..(int)axis].Aggregate(1L, (p, v) => p * v);
        return f(x.reshape(rows, -1), 1).reshape(shape);
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
        var y = x.dtype == to ? x.alias() : x.to(to);   // (to int64: truncated toward zero)
        // Integers are int64 here; a cast to a narrower integer type wraps as ONNX's (C's) conversion does: uint8 200
        // as int8 is −56 (a quantised graph's Cast between its integer types).
        long bits = (TensorProto.Types.DataType)n.Int("to", 0) switch
        {
            TensorProto.Types.DataType.Int8 or TensorProto.Types.DataType.Uint8 => 8,
            TensorProto.Types.DataType.Int16 or TensorProto.Types.DataType.Uint16 => 16,
            TensorProto.Types.DataType.Int32 or TensorProto.Types.DataType.Uint32 => 32,
            _ => 0,
        };
        if (bits == 0 || y.dtype != ScalarType.Int64) return y;
        bool signed = (TensorProto.Types.DataType)n.Int("to", 0) is TensorProto.Types.DataType.Int8 or TensorProto.Types.DataType.Int16 or TensorProto.Types.DataType.Int32;
        long range = 1L << (int)bits, half = range / 2;
        return signed ? (y + half).remainder(range) - half : y.remainder(range);
    }
}
