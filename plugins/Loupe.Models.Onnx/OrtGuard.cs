using Onnx;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Models.Onnx;

/// <summary>The static fence before ONNX Runtime sees a model (issue 26 item 7): ONNX Runtime allocates whatever a
/// node's output shape asks for, and constant-folds at session creation, so a hostile file whose Resize, Pad, Expand,
/// ConstantOfShape, Tile, Range, ConvTranspose, ... output is huge would exhaust memory before any run. This pass
/// infers every output shape it can from the model's declared input size (batch 1): shapes through the common
/// operators, and the values of small constant tensors (initializers, <c>Constant</c>, <c>Shape</c> and the integer
/// arithmetic exporters build sizes with), so sizes computed in the graph are known too. Each inferred output is held
/// to the same budget as the <c>onnx</c> backend's (<see cref="OnnxNode.MaxOutputBytes"/>); values it cannot infer
/// (data-dependent shapes, unknown operators, control flow) stay unknown and are left to ONNX Runtime.</summary>
public static partial class OrtGuard
{
    /// <summary>Constant tensors up to this many elements are tracked by value.</summary>
    const int MaxTracked = 4096;

    /// <summary>What is known about a value: its shape and, for small constants, its elements (row-major).</summary>
    sealed record V(long[] Shape, double[]? Data = null, bool Int = false);

    /// <summary>Throws a LoupeException naming the node whose inferred output is over the budget.</summary>
    public static void Check(OnnxFile file, long[] inputShape) => Shapes(file, inputShape);

    /// <summary>Checks as <see cref="Check"/> and returns the most bytes one inferred node holds for the input
    /// (its output's float bytes × <see cref="Copies"/>): what one image costs at the largest node.</summary>
    public static long Peak(OnnxFile file, long[] inputShape)
    {
        long peak = 0;
        Shapes(file, inputShape, (n, shape, kernel) => peak = Math.Max(peak, Math.Max(kernel,
            shape.Aggregate(4L * Copies(n), (p, d) => d <= 0 ? 0 : p > long.MaxValue / d ? long.MaxValue : p * d))));
        return peak;
    }

    /// <summary>The output shapes the pass infers (value name → shape; values it cannot infer are absent), after
    /// checking each against the budget (throws a LoupeException naming the first node over it).</summary>
    public static IReadOnlyDictionary<string, long[]> Shapes(OnnxFile file, long[] inputShape) => Shapes(file, inputShape, null);

    static IReadOnlyDictionary<string, long[]> Shapes(OnnxFile file, long[] inputShape, Action<OnnxNode, long[], long>? each)
    {
        var g = file.Model.Graph;
        var known = new Dictionary<string, V>(StringComparer.Ordinal);
        foreach (var t in g.Initializer) if (FromTensor(t, file.Source) is { } v) known[t.Name] = v;
        known[file.Input.Name] = new V(inputShape);
        int index = 0;
        foreach (var proto in g.Node)
        {
            var n = new OnnxNode(proto, file.Opset, file.Source, index++);
            var ins = n.Inputs.Select(i => i.Length > 0 ? known.GetValueOrDefault(i) : null).ToArray();
            if (n.OpType == "Attention" && n.Domain is "" or "ai.onnx") CheckAttention(n, ins);
            if (n.OpType == "RoiAlign" && n.Domain is "" or "ai.onnx") CheckRoiAlign(n, ins);
            V?[] outs;
            try { outs = Infer(n, ins); }
            catch (Exception e) when (e is not Abstractions.LoupeException) { outs = []; } // nonsense shapes: ONNX Runtime says so
            long kernel = CheckResize(n, ins.Length > 0 ? ins[0] : null, outs.Length > 0 ? outs[0] : null);
            for (int k = 0; k < n.Outputs.Length && k < outs.Length; k++)
                if (n.Outputs[k].Length > 0 && outs[k] is { } o)
                {
                    n.CheckOutput(o.Shape, copies: Copies(n));
                    each?.Invoke(n, o.Shape, k == 0 ? kernel : 0);
                    known[n.Outputs[k]] = o;
                }
        }
        return known.Where(kv => kv.Key != file.Input.Name).ToDictionary(kv => kv.Key, kv => kv.Value.Shape, StringComparer.Ordinal);
    }

    /// <summary>How many tensors of its output's size ONNX Runtime's kernel holds at once (found by
    /// tools/Loupe.Fuzz's onnx-runtime target: a wrap Pad to 940 MB grew the process by 1.7 GB, a constant one to
    /// 760 MB by 2.0 GB, a cubic Resize to 600 MB ran past 5 s, a linear Upsample to 400 MB took 1.5 GB, a Tile to
    /// 880 MB 1.6 GB): the onnx backend's counts for Resize and Upsample, two for Pad and Tile.</summary>
    static int Copies(OnnxNode n) => n.OpType switch
    {
        "Resize" => n.String("mode", "nearest") == "nearest" ? 2 : 4,
        "Upsample" => n.String("mode", "nearest") == "nearest" ? 2 : 6,
        "Pad" or "Tile" => 2,
        _ => 1,
    };

    /// <summary>ONNX Runtime's RoiAlign precomputes, for each box it pools, four positions and four weights (48 bytes) per
    /// sample of every output bin — output_height × output_width × grid_h × grid_w entries — one table per box its
    /// threads pool at once (found by tools/Loupe.Fuzz's onnx-runtime target: a 100,000 × 1,696 output of one box grew
    /// the process by 8.6 GB, past 5 s). The grid is sampling_ratio, or ⌈box size / bins⌉ per box when 0: known here
    /// when the boxes are constants, counted as 1 (the least) when they are computed.</summary>
    static void CheckRoiAlign(OnnxNode n, V?[] ins)
    {
        long oh = n.Int("output_height", 1), ow = n.Int("output_width", 1), ratio = n.Int("sampling_ratio", 0);
        if (oh < 1 || ow < 1) throw n.Error($"output_height and output_width ({oh}, {ow}) must be at least 1");
        if (ratio < 0) throw n.Error($"sampling_ratio ({ratio}) must be 0 (adaptive) or more");
        double gh = Math.Max(ratio, 1), gw = gh;
        if (ratio == 0 && ins.Length > 1 && ins[1] is { Data: { } box, Shape: [_, 4] })
        {
            double scale = n.Float("spatial_scale", 1f);
            for (int i = 0; i + 3 < box.Length; i += 4)
            {
                gh = Math.Max(gh, Math.Ceiling(Math.Abs(box[i + 3] - box[i + 1]) * scale / oh));
                gw = Math.Max(gw, Math.Ceiling(Math.Abs(box[i + 2] - box[i]) * scale / ow));
            }
        }
        double boxes = ins.Length > 1 && ins[1] is { Shape: [var r, ..] } ? Math.Clamp(r, 1, Environment.ProcessorCount) : 1;
        double bytes = 48.0 * oh * ow * gh * gw * boxes;
        if (bytes > OnnxNode.MaxOutputBytes)
            throw n.Error($"ONNX Runtime's tables for {boxes:0} box(es) of {oh}×{ow} bins of {gh:0}×{gw:0} samples ({bytes / (1 << 20):0} MB) are over the memory budget of {OnnxNode.MaxOutputBytes >> 20} MB");
    }

    static V? FromTensor(TensorProto t, string source)
    {
        var dims = t.Dims.ToArray();
        if (dims.Any(d => d < 0)) return null;
        long n = 1;
        foreach (var d in dims) n = d > 0 && n > MaxTracked ? n : n * d;
        var dt = (TensorProto.Types.DataType)t.DataType;
        bool isInt = dt is not (TensorProto.Types.DataType.Float or TensorProto.Types.DataType.Double or TensorProto.Types.DataType.Float16 or TensorProto.Types.DataType.Bfloat16);
        if (n > MaxTracked) return new V(dims, null, isInt);
        try
        {
            using var scope = NewDisposeScope();
            return new V(dims, OnnxFile.ToTensor(t, source).to(ScalarType.Float64).ToArray<double>(), isInt);
        }
        catch (Exception) { return new V(dims, null, isInt); } // unsupported or malformed: ONNX Runtime will say so
    }

    static readonly HashSet<string> SameShape =
    [
        "Identity", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu", "Softplus", "Softsign",
        "Gelu", "Erf", "Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Not", "IsNaN", "IsInf",
        "Softmax", "LogSoftmax", "Hardmax", "BatchNormalization", "InstanceNormalization", "LayerNormalization", "LpNormalization", "GroupNormalization", "RMSNormalization",
        "LRN", "Clip", "Dropout", "Cast", "CastLike", "Sin", "Cos", "Tan", "ThresholdedRelu", "Shrink", "Mish", "Trilu", "CumSum",
        "MeanVarianceNormalization", "ReverseSequence", "ScatterND", "ScatterElements", "Scatter",
        // quantisation keeps the shape (found by the onnx-runtime fuzz target on the QOperator seeds: a huge Pad of the
        // integers after a QuantizeLinear went unchecked, its size unknown past the quantisation)
        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    ];

    static readonly HashSet<string> Broadcasting =
    [
        "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
        "And", "Or", "Xor", "Mod", "PRelu", "Where", "BitShift",
    ];

    static V?[] Infer(OnnxNode n, V?[] x)
    {
        long[]? S(int i) => i < x.Length ? x[i]?.Shape : null;
        double[]? D(int i) => i < x.Length ? x[i]?.Data : null;
        long[]? L(int i) => D(i)?.Select(v => (long)v).ToArray();
        if (SameShape.Contains(n.OpType))
        {
            if (x.Length == 0 || x[0] is not { } a) return [];
            var data = a.Data is { } d ? n.OpType switch
            {
                "Identity" or "Cast" or "CastLike" => d.Select(v => a.Int || IntCast(n) ? Math.Truncate(v) : v).ToArray(),
                "Neg" => d.Select(v => -v).ToArray(), "Abs" => d.Select(v => Math.Abs(v)).ToArray(), "Floor" => d.Select(v => Math.Floor(v)).ToArray(),
                "Ceil" => d.Select(v => Math.Ceiling(v)).ToArray(), "Not" => d.Select(v => v == 0 ? 1.0 : 0).ToArray(), "Round" => d.Select(v => Math.Round(v)).ToArray(), "Sqrt" => d.Select(v => Math.Sqrt(v)).ToArray(),
                _ => null,
            } : null;
            var isInt = n.OpType is "Cast" ? IntCast(n) : a.Int;
            return [new V(a.Shape, data, isInt), new V(a.Shape)];
        }
        if (Broadcasting.Contains(n.OpType))
        {
            if (x.Length == 0 || x.Any(v => v is null)) return [];
            var shape = x.Select(v => v!.Shape).Aggregate(Broadcast);
            bool isInt = n.OpType is "Equal" or "Less" or "Greater" or "LessOrEqual" or "GreaterOrEqual" or "And" or "Or" or "Xor"
                || x.Skip(n.OpType == "Where" ? 1 : 0).All(v => v!.Int);
            return [new V(shape, Arithmetic(n.OpType, x!, shape), isInt)];
        }
        switch (n.OpType)
        {
            case "Constant":
            {
                if (n.Attribute("value") is { T: { } t }) return [FromTensor(t, n.Where)];
                if (n.Attribute("value_float") is { } f) return [new V([], [f.F])];
                if (n.Attribute("value_floats") is { } fs) return [new V([fs.Floats.Count], fs.Floats.Select(v => (double)v).ToArray())];
                if (n.Attribute("value_int") is { } i) return [new V([], [i.I], true)];
                if (n.Attribute("value_ints") is { } @is) return [new V([@is.Ints.Count], @is.Ints.Select(v => (double)v).ToArray(), true)];
                return [];
            }
            case "Shape":
            {
                if (S(0) is not { } s) return [];
                long r = s.Length, start = Axis(n.Int("start", 0), r, true), end = n.Has("end") ? Axis(n.Int("end", r), r, true) : r;
                var dims = s.Skip((int)start).Take((int)Math.Max(end - start, 0)).Select(v => (double)v).ToArray();
                return [new V([dims.Length], dims, true)];
            }
            case "Size": return S(0) is { } sz ? [new V([], [sz.Aggregate(1L, (p, v) => p * v)], true)] : [];
            case "Conv" or "ConvTranspose" or "MaxPool" or "AveragePool" or "LpPool": return [Windowed(n, S(0), S(1)), Windowed(n, S(0), S(1))];
            case "GlobalAveragePool" or "GlobalMaxPool" or "GlobalLpPool":
                return S(0) is { Length: > 2 } gs ? [new V([gs[0], gs[1], .. gs.Skip(2).Select(_ => 1L)])] : [];
            case "RoiAlign":
                return S(0) is { Length: 4 } rx && S(1) is { Length: 2 } rr ? [new V([rr[0], rx[1], n.Int("output_height", 1), n.Int("output_width", 1)])] : [];
            case "MaxRoiPool":
                return S(0) is { Length: 4 } px && S(1) is { Length: 2 } pr && n.Ints("pooled_shape") is [var ph, var pw] ? [new V([pr[0], px[1], ph, pw])] : [];
            case "Gemm":
            {
                if (S(0) is not { Length: 2 } a || S(1) is not { Length: 2 } b) return [];
                return [new V([n.Int("transA", 0) != 0 ? a[1] : a[0], n.Int("transB", 0) != 0 ? b[0] : b[1]])];
            }
            case "MatMul":
            {
                if (S(0) is not { Length: > 0 } a || S(1) is not { Length: > 0 } b) return [];
                if (a.Length == 1 && b.Length == 1) return [new V([])];
                if (b.Length == 1) return [new V(a[..^1])];
                if (a.Length == 1) return [new V([.. b[..^2], b[^1]])];
                return [new V([.. Broadcast(a[..^2], b[..^2]), a[^2], b[^1]])];
            }
            case "Flatten":
            {
                if (S(0) is not { } s) return [];
                long axis = Axis(n.Int("axis", 1), s.Length, true);
                return [new V([Product(s.Take((int)axis)), Product(s.Skip((int)axis))])];
            }
            case "Reshape":
            {
                if (S(0) is not { } s || L(1) is not { } wanted) return [];
                bool allowZero = n.Int("allowzero", 0) != 0;
                var shape = wanted.Select((v, i) => v == 0 && !allowZero ? s[i] : v).ToArray();
                int unknown = Array.IndexOf(shape, -1L);
                if (unknown >= 0)
                {
                    long rest = Product(shape.Where((_, i) => i != unknown));
                    shape[unknown] = rest == 0 ? 0 : Product(s) / rest;
                }
                return [new V(shape, x[0]!.Data, x[0]!.Int)];
            }
            case "Transpose":
            {
                if (S(0) is not { } s) return [];
                var perm = n.Ints("perm") ?? Enumerable.Range(0, s.Length).Reverse().Select(i => (long)i).ToArray();
                var shape = perm.Select(p => s[p]).ToArray();
                // Output index o along output axis k reads input axis perm[k]: gather through the inverse permutation.
                var data = x[0]!.Data is { } d ? Gather(s, shape, d, (o, k) => o, perm) : null;
                return [new V(shape, data, x[0]!.Int)];
            }
            case "Concat":
            {
                if (x.Length == 0 || x.Any(v => v is null)) return [];
                var first = x[0]!.Shape;
                long axis = Axis(n.Int("axis", 0), first.Length, false);
                var shape = first.ToArray();
                shape[axis] = x.Sum(v => v!.Shape[axis]);
                var data = first.Length == 1 && x.All(v => v!.Data is not null) ? x.SelectMany(v => v!.Data!).ToArray() : null;
                return [new V(shape, data, x.All(v => v!.Int))];
            }
            case "Squeeze" or "Unsqueeze":
            {
                if (S(0) is not { } s) return [];
                var axes = n.Opset >= 13 ? x.Length > 1 ? L(1) : null : n.Ints("axes");
                if (n.OpType == "Squeeze")
                {
                    var drop = axes?.Select(a => Axis(a, s.Length, false)).ToHashSet();
                    return [new V(s.Where((d, i) => drop is null ? d != 1 : !drop.Contains(i)).ToArray(), x[0]!.Data, x[0]!.Int)];
                }
                if (axes is null) return [];
                int rank = s.Length + axes.Length;
                var at = axes.Select(a => Axis(a, rank, false)).ToHashSet();
                var shape = new long[rank];
                for (int i = 0, j = 0; i < rank; i++) shape[i] = at.Contains(i) ? 1 : s[j++];
                return [new V(shape, x[0]!.Data, x[0]!.Int)];
            }
            case "Gather":
            {
                if (S(0) is not { } s || S(1) is not { } q) return [];
                long axis = Axis(n.Int("axis", 0), s.Length, false);
                long[] shape = [.. s.Take((int)axis), .. q, .. s.Skip((int)axis + 1)];
                double[]? data = null;
                if (s.Length == 1 && D(0) is { } d && L(1) is { } idx && idx.All(i => i >= -d.Length && i < d.Length))
                    data = idx.Select(i => d[i < 0 ? i + d.Length : i]).ToArray();
                return [new V(shape, data, x[0]!.Int)];
            }
            case "Slice": return [Slice(n, x)];
            case "ReduceMean" or "ReduceSum" or "ReduceMax" or "ReduceMin" or "ReduceProd" or "ReduceL1" or "ReduceL2" or "ReduceLogSum"
                or "ReduceLogSumExp" or "ReduceSumSquare" or "ArgMax" or "ArgMin":
            {
                if (S(0) is not { } s) return [];
                bool keep = n.Int("keepdims", 1) != 0;
                bool fromInput = !n.OpType.StartsWith("Arg") && Ops.AxesFromInput(n);
                long[]? axes = n.OpType.StartsWith("Arg") ? [n.Int("axis", 0)] : fromInput ? x.Length > 1 ? L(1) : null : n.Ints("axes");
                if (fromInput && n.HasInput(1) && axes is null) return [];   // axes computed in the graph: unknown
                var set = (axes is { Length: > 0 } ? axes : Enumerable.Range(0, s.Length).Select(i => (long)i)).Select(a => Axis(a, s.Length, false)).ToHashSet();
                if (axes is null or { Length: 0 } && n.Int("noop_with_empty_axes", 0) != 0) set.Clear();
                return [new V(s.Select((d, i) => set.Contains(i) ? keep ? 1 : -1 : d).Where(d => d >= 0).ToArray())];
            }
            case "Pad":
            {
                if (S(0) is not { } s) return [];
                var pads = n.Opset < 11 ? n.Ints("pads") : L(1);
                if (n.Opset >= 18 && n.HasInput(3))
                {
                    // Opset 18: pads for the listed axes only.
                    if (L(3) is not { } axes || pads is null || pads.Length != 2 * axes.Length) return [];
                    var full = new long[2 * s.Length];
                    for (int i = 0; i < axes.Length; i++)
                    {
                        long a = Axis(axes[i], s.Length, false);
                        full[a] = pads[i];
                        full[a + s.Length] = pads[i + axes.Length];
                    }
                    pads = full;
                }
                if (pads is null || pads.Length != 2 * s.Length) return [];
                if (pads.Any(p => Math.Abs(p) > 1L << 40)) return [new V(s.Select(_ => long.MaxValue / 2).ToArray())];   // beyond any image: over the budget
                return [new V(s.Select((d, i) => d + pads[i] + pads[i + s.Length]).ToArray())];
            }
            case "Resize" or "Upsample":
            {
                if (S(0) is not { } s) return [];
                // Opset 18: sizes or scales may list only the axes attribute's axes; the others keep their size.
                var axes = n.OpType == "Resize" && n.Opset >= 18 && n.Ints("axes") is { } ax ? ax.Select(a => Axis(a, s.Length, false)).ToArray()
                    : Enumerable.Range(0, s.Length).Select(i => (long)i).ToArray();
                var sizes = n.OpType == "Resize" && n.Opset >= 11 && x.Length > 3 ? L(3) : null;
                if (sizes is { Length: > 0 } && sizes.Length == axes.Length)
                {
                    var o = s.ToArray();
                    for (int i = 0; i < axes.Length; i++) o[axes[i]] = sizes[i];
                    return [new V(o)];
                }
                var scales = n.OpType == "Upsample" && n.Opset < 9 ? n.Attribute("scales")?.Floats.Select(f => (double)f).ToArray()
                    : D(n.OpType == "Resize" && n.Opset >= 11 ? 2 : 1);
                if (scales is null || scales.Length != axes.Length) return [];
                var scaled = s.ToArray();
                for (int i = 0; i < axes.Length; i++) scaled[axes[i]] = Floor(s[axes[i]] * scales[i]);
                return [new V(scaled)];
            }
            case "Expand": return S(0) is { } es && L(1) is { } to ? [new V(Broadcast(es, to))] : [];
            case "ConstantOfShape":
            {
                if (L(0) is not { } shape) return [];
                if (shape.Any(d => d < 0)) return [];
                n.CheckOutput(shape);
                var fill = n.Attribute("value") is { T: { } t } ? FromTensor(t, n.Where) : null;
                double[]? data = Product(shape) <= MaxTracked ? Enumerable.Repeat(fill?.Data is [var f] ? f : 0, (int)Product(shape)).ToArray() : null;
                return [new V(shape, data, fill?.Int ?? false)];
            }
            case "Tile":
                return S(0) is { } ts && L(1) is { } reps && reps.Length == ts.Length ? [new V(ts.Select((d, i) => Product([d, Math.Max(reps[i], 0)])).ToArray())] : [];
            case "Range":
            {
                if (D(0) is not [var start] || D(1) is not [var limit] || D(2) is not [var delta] || delta == 0) return [];
                double steps = Math.Ceiling((limit - start) / delta);
                long count = steps > long.MaxValue / 2 ? long.MaxValue / 2 : (long)Math.Max(steps, 0);
                double[]? data = count <= MaxTracked ? Enumerable.Range(0, (int)count).Select(i => start + i * delta).ToArray() : null;
                return [new V([count], data, x.All(v => v!.Int))];
            }
            case "OneHot":
            {
                if (S(0) is not { } s || D(1) is not [var depth]) return [];
                long axis = Axis(n.Int("axis", -1), s.Length + 1, false);
                var shape = s.ToList();
                shape.Insert((int)axis, (long)depth);
                return [new V(shape.ToArray())];
            }
            case "TopK":
            {
                if (S(0) is not { } s) return [];
                long k = n.Opset < 10 ? n.Int("k", 1) : L(1) is [var kk] ? kk : -1;
                if (k < 0) return [];
                var shape = s.ToArray();
                shape[Axis(n.Int("axis", -1), s.Length, false)] = k;
                return [new V(shape), new V(shape, null, true)];
            }
            case "Split":
            {
                if (S(0) is not { } s) return [];
                long axis = Axis(n.Int("axis", 0), s.Length, false);
                var parts = n.Opset < 13 ? n.Ints("split") : x.Length > 1 ? L(1) : null;
                int outputs = n.Outputs.Length;
                if (parts is null && n.Opset >= 18 && n.Int("num_outputs", 0) is > 0 and var k)
                {
                    long each = (s[axis] + k - 1) / k;
                    parts = Enumerable.Range(0, (int)Math.Min(k, outputs)).Select(i => Math.Clamp(s[axis] - i * each, 0, each)).ToArray();
                }
                parts ??= s[axis] % outputs == 0 ? Enumerable.Repeat(s[axis] / outputs, outputs).ToArray() : null;
                if (parts is null || parts.Length != outputs) return [];
                return parts.Select(p => { var o = s.ToArray(); o[axis] = p; return (V?)new V(o); }).ToArray();
            }
            case "DepthToSpace" or "SpaceToDepth":
            {
                if (S(0) is not { Length: 4 } s) return [];
                long b = n.Int("blocksize", 1);
                if (b <= 0) return [];
                return n.OpType == "DepthToSpace" ? [new V([s[0], s[1] / (b * b), s[2] * b, s[3] * b])] : [new V([s[0], s[1] * b * b, s[2] / b, s[3] / b])];
            }
            default: return [];
        }
    }
}
