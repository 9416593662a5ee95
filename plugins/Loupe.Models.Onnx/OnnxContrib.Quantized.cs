using Loupe.Abstractions;
using Onnx;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Loupe.Models.Onnx;

/// <summary>Quantised graphs in ONNX's QOperator form — what ONNX Runtime saves after optimising a QDQ graph (its CPU
/// provider fuses each DequantizeLinear → op → QuantizeLinear into one integer operator), what its quantiser writes with
/// <c>QuantFormat.QOperator</c>, and the int8 models of the ONNX Model Zoo — rewritten at load into the QDQ form that
/// <see cref="Quantization"/> runs (onnx backend only: ONNX Runtime runs these operators itself). Each integer operator
/// becomes DequantizeLinear of its inputs → the float operator → QuantizeLinear of its output, as its specification
/// defines it (ONNX's QLinearConv and QLinearMatMul; ONNX Runtime's ContribOperators.md for the com.microsoft ones):
/// QLinearConv (its int32 bias scaled by x_scale·w_scale), QLinearMatMul, QGemm (bias scaled by a_scale·b_scale, α, a
/// float output without y_scale), QLinearAdd, QLinearMul, QLinearAveragePool, QLinearGlobalAveragePool,
/// QLinearConcat, QLinearSigmoid, QLinearLeakyRelu, QLinearSoftmax, QLinearWhere. The float
/// operator keeps the integer one's name (ONNX Runtime keeps the exporter's: <c>/features/0/0/Conv</c>), so layers
/// and module paths are the exported graph's. Then the operators that move or select integers between a
/// QuantizeLinear and the DequantizeLinears after it (MaxPool, Reshape, Transpose, Resize, Pad, Concat of one scale, …)
/// run on the dequantised values, followed by a QuantizeLinear of the same scale and zero point (exact for the
/// operators that only select values; the rounding ONNX Runtime's integer kernel does for Resize's interpolation), so
/// that every QuantizeLinear → DequantizeLinear is a pair — a fake quantisation through which gradients pass. ONNX
/// Runtime's fused dynamic quantisation (DynamicQuantizeMatMul, MatMulIntegerToFloat) becomes DynamicQuantizeLinear →
/// MatMulInteger → Mul by the scales (→ Add of the bias), which <see cref="Ops"/> runs with a gradient.</summary>
public static partial class OnnxContrib
{
    /// <summary>The com.microsoft integer operators expanded into QDQ form on the onnx backend.</summary>
    public static readonly IReadOnlyCollection<string> QOperators =
        ["QLinearConv", "QGemm", "QLinearAdd", "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid",
         "QLinearLeakyRelu", "QLinearSoftmax", "QLinearWhere", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"];

    static bool IsQOperator(NodeProto n) => n.Domain is "" or "ai.onnx" ? n.OpType is "QLinearConv" or "QLinearMatMul" : n.Domain == Domain && QOperators.Contains(n.OpType);

    /// <summary>Rewrites the integer operators of <paramref name="graph"/> (the main graph) into QDQ form and moves the
    /// integer-domain operators after a QuantizeLinear onto dequantised values (see the class summary).</summary>
    public static void ExpandQuantized(GraphProto graph, long opset, string source)
    {
        bool expand = graph.Node.Any(IsQOperator);
        if (!expand && !graph.Node.Any(n => n.OpType == "QuantizeLinear" && n.Domain is "" or "ai.onnx")) return;
        var names = new Names(graph);
        var initializers = new List<TensorProto>();
        var constants = Constants(graph, graph.Node);
        var e = new Emitter(names, initializers, constants, opset, source);
        var nodes = new List<NodeProto>(graph.Node.Count);
        var types = new IntegerTypes(graph, constants);
        foreach (var n in graph.Node)
        {
            int first = nodes.Count;
            if (expand && IsQOperator(n))
            {
                e.Begin(n, nodes);
                e.QOperator(types);
            }
            else nodes.Add(n);
            for (int k = first; k < nodes.Count; k++) types.Learn(nodes[k], initializers);
        }
        nodes = LiftIntegerOperators(nodes, e, constants, opset);
        graph.Node.Clear();
        graph.Node.Add(nodes);
        graph.Initializer.Add(initializers);
    }

    /// <summary>The graph's constant values by name: its initializers (a name given twice: the last, as the model's load
    /// takes it) and the value tensors of its Constant nodes among <paramref name="nodes"/>.</summary>
    internal static Dictionary<string, TensorProto> Constants(GraphProto graph, IEnumerable<NodeProto> nodes)
    {
        var constants = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        foreach (var t in graph.Initializer) constants[t.Name] = t;
        foreach (var n in nodes)
            if (n.OpType == "Constant" && n.Domain is "" or "ai.onnx" && n.Output.Count == 1 && n.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { } t)
                constants[n.Output[0]] = t;
        return constants;
    }

    /// <summary>The integer type of values the rewrite needs one for (a QLinear operator without a zero point
    /// quantises to its input's type), learnt from the graph's inputs, constants and QuantizeLinear nodes.</summary>
    sealed class IntegerTypes
    {
        readonly Dictionary<string, DataType> _types = new(StringComparer.Ordinal);

        public IntegerTypes(GraphProto graph, IReadOnlyDictionary<string, TensorProto> constants)
        {
            foreach (var i in graph.Input)
                if (i.Type?.TensorType is { } t) _types[i.Name] = (DataType)t.ElemType;
            foreach (var (name, c) in constants) _types[name] = (DataType)c.DataType;
        }

        public DataType? Of(string value) => _types.TryGetValue(value, out var t) ? t : null;

        /// <summary>Records the output type of a QuantizeLinear (its zero point's, else output_dtype, else uint8) and of
        /// operators that keep their input's type.</summary>
        public void Learn(NodeProto n, List<TensorProto> added)
        {
            if (n.Output.Count == 0 || n.Domain is not ("" or "ai.onnx")) return;
            if (n.OpType == "QuantizeLinear")
            {
                var t = n.Input.Count > 2 && n.Input[2].Length > 0 ? Of(n.Input[2]) ?? (DataType?)added.FirstOrDefault(c => c.Name == n.Input[2])?.DataType
                    : n.Attribute.FirstOrDefault(a => a.Name == "output_dtype") is { I: not 0 } o ? (DataType)o.I : DataType.Uint8;
                if (t is { } type) _types[n.Output[0]] = type;
            }
            else if (Movable(n.OpType) && n.Input.Count > 0 && Of(n.Input[0]) is { } t)
                foreach (var o in n.Output.Where(o => o.Length > 0)) _types[o] = t;
        }
    }

    /// <summary>Operators that select, move or interpolate values without changing their scale: on integers between a
    /// QuantizeLinear and its DequantizeLinears they commute with the dequantisation.</summary>
    static bool Movable(string op) => op is "MaxPool" or "GlobalMaxPool" or "Reshape" or "Flatten" or "Transpose" or "Squeeze" or "Unsqueeze" or "Identity"
        or "Slice" or "Gather" or "GatherElements" or "GatherND" or "Expand" or "Tile" or "DepthToSpace" or "SpaceToDepth" or "Resize" or "Upsample"
        or "Pad" or "Split" or "ReduceMax" or "ReduceMin" or "Concat";

    /// <summary>Each movable operator reading the integers of a per-tensor QuantizeLinear (directly or through other
    /// movable operators) is run on DequantizeLinear of them and followed by a QuantizeLinear of the same scale and zero
    /// point, which writes the operator's outputs as before.</summary>
    static List<NodeProto> LiftIntegerOperators(List<NodeProto> nodes, Emitter e, IReadOnlyDictionary<string, TensorProto> constants, long opset)
    {
        var quantised = new Dictionary<string, NodeProto>(StringComparer.Ordinal);   // value → the per-tensor QuantizeLinear that writes it (or its equal)
        var result = new List<NodeProto>(nodes.Count);
        foreach (var n in nodes)
        {
            if (n.Domain is not ("" or "ai.onnx")) { result.Add(n); continue; }
            if (n.OpType == "QuantizeLinear" && n.Input.Count >= 2 && n.Output.Count >= 1 && PerTensor(n.Input[1], constants)
                && (n.Input.Count < 3 || n.Input[2].Length == 0 || PerTensor(n.Input[2], constants)))
            {
                quantised[n.Output[0]] = n;
                result.Add(n);
                continue;
            }
            int data = n.OpType == "Concat" ? n.Input.Count : 1;
            if (!Movable(n.OpType) || n.Input.Count == 0 || !quantised.TryGetValue(n.Input[0], out var q)
                || n.Input.Take(data).Any(i => !quantised.TryGetValue(i, out var other) || !SameQuantisation(q, other, constants))
                || (n.OpType == "MaxPool" && n.Output.Skip(1).Any(o => o.Length > 0))
                || (n.OpType == "Pad" && (opset < 11 || n.Attribute.Any(a => a.Name == "value"))))
            {
                result.Add(n);
                continue;
            }
            e.Lift(n, q, data, result);
            foreach (var o in n.Output.Where(o => o.Length > 0)) quantised[o] = q;
        }
        return result;
    }

    /// <summary>Whether a scale or zero point is one value (a constant of one element).</summary>
    internal static bool PerTensor(string value, IReadOnlyDictionary<string, TensorProto> constants) =>
        constants.TryGetValue(value, out var t) && t.Dims.Aggregate(1L, (p, d) => p * d) == 1;

    static bool SameQuantisation(NodeProto a, NodeProto b, IReadOnlyDictionary<string, TensorProto> constants) =>
        ReferenceEquals(a, b) || (Quantization.Same(a.Input[1], b.Input[1], constants)
            && Quantization.Same(a.Input.Count > 2 ? a.Input[2] : "", b.Input.Count > 2 ? b.Input[2] : "", constants));

    sealed partial class Emitter
    {
        /// <summary>Writes the QDQ form of the integer operator begun (<see cref="Begin"/>).</summary>
        public void QOperator(IntegerTypes types)
        {
            if (Out(0).Length == 0) throw Error("has no output");
            if (_n.Attribute.FirstOrDefault(a => a.Name == "channels_last") is { I: not 0 })
                throw Error("channels_last = 1 (ONNX Runtime's NHWC layout, written at ORT_ENABLE_ALL for one machine's CPU) is not supported; save the graph at ORT_ENABLE_EXTENDED or below");
            // The output's integer type where it has no zero point: the first input's (the com.microsoft operators quantise to their input's type).
            DataType OutputType(string? zero) =>
                (zero is not null ? types.Of(zero) : null) ?? types.Of(_n.OpType == "QLinearConcat" ? In(2) : _n.OpType == "QLinearWhere" ? In(1) : In(0))
                ?? throw Error("its output has no zero point and the type of its input is not known at load");
            string Scope() => ScopeOf(Out(0));
            switch (_n.OpType)
            {
                case "QLinearConv":   // x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B
                {
                    string x = Dequantized(0), w = Dequantized(3, axis: 0);
                    var inputs = Optional(8) is { } bias ? new[] { x, w, ScaledBias(bias, In(1), In(4)) } : [x, w];
                    var conv = Main("Conv", inputs, _n.Attribute.Where(a => a.Name != "channels_last"));
                    Quantise(Rectified(conv, Optional(7), OutputType(Optional(7))), In(6), Optional(7), OutputType(Optional(7)), Scope());
                    break;
                }
                case "QLinearMatMul":   // a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point
                {
                    if (!PerTensor(In(1), constants)) throw Error("a per-row scale of a (ONNX Runtime's kernel takes one scale for a) is not supported");
                    var mm = Main("MatMul", [Dequantized(0), Dequantized(3, axis: -1)], []);
                    Quantise(Rectified(mm, Optional(7), OutputType(Optional(7))), In(6), Optional(7), OutputType(Optional(7)), Scope());
                    break;
                }
                case "QGemm":   // A, a_scale, a_zero_point, B, b_scale, b_zero_point, C, y_scale, y_zero_point
                {
                    long transB = IntAttr("transB", 0);
                    float alpha = FloatAttr("alpha") ?? 1f;
                    string a = Dequantized(0), b = Dequantized(3, axis: transB != 0 ? 0 : 1);
                    var bias = Optional(6);
                    // C is quantised with scale α/β·a_scale·b_scale: β·C' = α·a_scale·b_scale·C.
                    var attributes = new List<AttributeProto> { Attr("alpha", alpha), Attr("transA", IntAttr("transA", 0)), Attr("transB", transB) };
                    if (bias is not null) attributes.Add(Attr("beta", alpha));
                    string y = Optional(7) is null ? Out(0) : "";
                    var gemm = Main("Gemm", bias is null ? [a, b] : [a, b, ScaledBias(bias, In(1), In(4))], attributes, y);
                    if (Optional(7) is { } scale) Quantise(Rectified(gemm, Optional(8), OutputType(Optional(8))), scale, Optional(8), OutputType(Optional(8)), Scope());
                    break;
                }
                case "QLinearAdd" or "QLinearMul":   // A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point
                {
                    var sum = Main(_n.OpType[7..], [Dequantized(0), Dequantized(3)], []);
                    Quantise(_n.OpType == "QLinearAdd" ? Rectified(sum, Optional(7), OutputType(Optional(7))) : sum, In(6), Optional(7), OutputType(Optional(7)), Scope());
                    break;
                }
                case "QLinearAveragePool" or "QLinearGlobalAveragePool" or "QLinearSigmoid" or "QLinearLeakyRelu":   // X, X_scale, X_zero_point, Y_scale, Y_zero_point
                {
                    string op = _n.OpType[7..];
                    IEnumerable<AttributeProto> attributes = op == "LeakyRelu" ? [Attr("alpha", FloatAttr("alpha") ?? 0.01f)]
                        : _n.Attribute.Where(a => a.Name != "channels_last");
                    Quantise(Main(op, [Dequantized(0)], attributes), In(3), Optional(4), OutputType(Optional(4)), Scope());
                    break;
                }
                case "QLinearSoftmax":
                {
                    long version = _n.Attribute.FirstOrDefault(a => a.Name == "opset") is { } v ? v.I : throw Error("needs its opset attribute");
                    if (version >= 13 != opset >= 13)
                        throw Error($"its softmax is opset {version}'s (axis semantics of opset {(version >= 13 ? "13 and later" : "12 and earlier")}) in a graph of opset {opset}; not supported");
                    long axis = IntAttr("axis", version >= 13 ? -1 : 1);
                    Quantise(Main("Softmax", [Dequantized(0)], [Attr("axis", axis)]), In(3), Optional(4), OutputType(Optional(4)), Scope());
                    break;
                }
                case "QLinearConcat":   // Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per input
                {
                    if (_n.Input.Count < 5 || (_n.Input.Count - 2) % 3 != 0) throw Error($"needs Y_scale, Y_zero_point and triples of (X, scale, zero point), not {_n.Input.Count} inputs");
                    var parts = Enumerable.Range(0, (_n.Input.Count - 2) / 3).Select(k => Dequantized(2 + 3 * k)).ToArray();
                    long axis = _n.Attribute.FirstOrDefault(a => a.Name == "axis") is { } ax ? ax.I : throw Error("needs its axis attribute");
                    Quantise(Main("Concat", parts, [Attr("axis", axis)]), In(0), Optional(1), OutputType(Optional(1)), Scope());
                    break;
                }
                case "QLinearWhere":   // condition, X, x_scale, x_zero_point, Y, y_scale, y_zero_point, z_scale, z_zero_point
                    Quantise(Main("Where", [In(0), Dequantized(1), Dequantized(4)], []), In(7), Optional(8), OutputType(Optional(8)), Scope());
                    break;
                case "DynamicQuantizeMatMul":   // A (float), B, b_scale, b_zero_point, bias: DynamicQuantizeLinear(A), then as below
                {
                    var quantise = Node("DynamicQuantizeLinear", [In(0)], ["", "", ""], Scope());
                    for (int k = 0; k < 3; k++) quantise.Output[k] = names.Value($"{quantise.Name}_output_{k}");
                    IntegerProductToFloat(quantise.Output[0], In(1), quantise.Output[1], In(2), quantise.Output[2], Optional(3), Optional(4));
                    break;
                }
                case "MatMulIntegerToFloat":   // A, B, a_scale, b_scale, a_zero_point, b_zero_point, bias
                    IntegerProductToFloat(In(0), In(1), In(2), In(3), Optional(4), Optional(5), Optional(6));
                    break;
                default:
                    throw Error("is not an integer operator this load rewrites");
            }
        }

        /// <summary>MatMulInteger(a, b, a_zero_point, b_zero_point) · a_scale·b_scale (+ bias) into the output, the product
        /// under the fused node's name.</summary>
        void IntegerProductToFloat(string a, string b, string aScale, string bScale, string? aZero, string? bZero, string? bias)
        {
            string scope = ScopeOf(Out(0));
            var inputs = new List<string> { a, b, aZero ?? "", bZero ?? "" };
            while (inputs[^1].Length == 0) inputs.RemoveAt(inputs.Count - 1);
            var product = Main("MatMulInteger", [.. inputs], []);
            var scale = Node("Mul", [aScale, bScale], [""], scope);
            scale.Output[0] = Temp(scale.Name);
            var scaled = Node("Mul", [product, scale.Output[0]], [bias is null ? Out(0) : ""], scope);
            if (bias is not null) Node("Add", [scaled.Output[0] = Temp(scaled.Name), bias], [Out(0)], scope);
        }

        /// <summary>DequantizeLinear of the integer input at <paramref name="i"/> with the scale and zero point after it
        /// (along <paramref name="axis"/> when they hold one value per channel or column).</summary>
        string Dequantized(int i, long? axis = null)
        {
            var node = Node("DequantizeLinear", Optional(i + 2) is { } zero ? [In(i), In(i + 1), zero] : [In(i), In(i + 1)], [""], ScopeOf(Out(0)));
            if (axis is { } a && !PerTensor(In(i + 1), constants)) node.Attribute.Add(Attr("axis", a));
            return node.Output[0] = Temp(node.Name);
        }

        /// <summary>An int32 bias as float: B·(scale₁·scale₂) (zero point 0).</summary>
        string ScaledBias(string bias, string scale1, string scale2)
        {
            string scope = ScopeOf(Out(0));
            var cast = Node("Cast", [bias], [""], scope);
            cast.Attribute.Add(Attr("to", (long)DataType.Float));
            cast.Output[0] = Temp(cast.Name);
            var scale = Node("Mul", [scale1, scale2], [""], scope);
            scale.Output[0] = Temp(scale.Name);
            var scaled = Node("Mul", [cast.Output[0], scale.Output[0]], [""], scope);
            return scaled.Output[0] = Temp(scaled.Name);
        }

        /// <summary>The float operator of the integer one, under its name, writing a fresh value (or <paramref name="output"/>).</summary>
        string Main(string op, string[] inputs, IEnumerable<AttributeProto> attributes, string output = "")
        {
            _keepName = _n.Name.Length > 0;
            var node = Node(op, inputs, [output]);
            node.Attribute.Add(attributes);
            if (output.Length == 0) node.Output[0] = Temp(node.Name);
            return node.Output[0];
        }

        /// <summary><paramref name="value"/>, through a Relu when its quantisation starts at 0 (its zero point is the
        /// type's minimum): ONNX Runtime removes a ReLU before such a QuantizeLinear when it fuses (ReluQuantFusion; the
        /// values are the same), which the gradient would otherwise not see — the straight-through gradient of the
        /// quantisation alone is 1 on (−scale/2, 0), where the ReLU's is 0.</summary>
        string Rectified(string value, string? zero, DataType type)
        {
            long point = 0;
            if (zero is not null)
            {
                if (!constants.TryGetValue(zero, out var z) || !PerTensor(zero, constants)) return value;
                using var scope = TorchSharp.torch.NewDisposeScope();
                try { point = OnnxFile.ToTensor(z, source).to(TorchSharp.torch.ScalarType.Int64).item<long>(); }
                catch (LoupeException) { return value; }   // a malformed constant: refused by name where it is read
            }
            if (Quantization.Range(type) is not { } range || point != range.Min) return value;
            var relu = Node("Relu", [value], [""], ScopeOf(Out(0)));
            return relu.Output[0] = Temp(relu.Name);
        }

        /// <summary>QuantizeLinear of <paramref name="value"/> into the integer operator's output.</summary>
        void Quantise(string value, string scale, string? zero, DataType type, string scope) =>
            Node("QuantizeLinear", [value, scale, zero ?? Zero(type)], [Out(0)], scope);

        /// <summary>A scalar zero of an integer type (a zero point the file left out).</summary>
        string Zero(DataType type)
        {
            var t = new TensorProto { Name = names.Value($"{(_n.Name.Length > 0 ? _n.Name : _n.OpType)}/zero_point"), DataType = (int)type };
            if (type is DataType.Int64) t.Int64Data.Add(0);
            else t.Int32Data.Add(0);
            initializers.Add(t);
            return t.Name;
        }

        /// <summary>Writes <paramref name="n"/> (an operator on the integers of QuantizeLinear <paramref name="q"/>) on
        /// dequantised values into <paramref name="output"/>: DequantizeLinear of its first <paramref name="data"/>
        /// inputs (a constant Pad's value too), the operator under its own name, and QuantizeLinear of each of its outputs
        /// with q's scale, zero point and attributes.</summary>
        public void Lift(NodeProto n, NodeProto q, int data, List<NodeProto> output)
        {
            _n = n;
            _out = output;
            _keepName = false;
            string scope = n.Name.LastIndexOf('/') is var slash and >= 0 ? n.Name[..(slash + 1)] : "";
            string[] Parameters() => q.Input.Count > 2 && q.Input[2].Length > 0 ? [q.Input[1], q.Input[2]] : [q.Input[1]];
            string Dq(string value)
            {
                var node = Node("DequantizeLinear", [value, .. Parameters()], [""], scope);
                return node.Output[0] = Temp(node.Name);
            }
            var lifted = n.Clone();
            for (int i = 0; i < data; i++) lifted.Input[i] = Dq(n.Input[i]);
            if (n.OpType == "Pad" && (n.Attribute.FirstOrDefault(a => a.Name == "mode")?.S.ToStringUtf8() ?? "constant") == "constant")
            {
                // The pad value v of the integers is (v − zero point)·scale after: dequantised as the data (absent: 0).
                string value = n.Input.Count > 2 && n.Input[2].Length > 0 ? n.Input[2]
                    : Zero(q.Input.Count > 2 && q.Input[2].Length > 0 && constants.TryGetValue(q.Input[2], out var z) ? (DataType)z.DataType
                        : q.Attribute.FirstOrDefault(a => a.Name == "output_dtype") is { I: not 0 } o ? (DataType)o.I : DataType.Uint8);
                while (lifted.Input.Count < 3) lifted.Input.Add("");
                lifted.Input[2] = Dq(value);
            }
            for (int i = 0; i < n.Output.Count; i++)
                if (n.Output[i].Length > 0) lifted.Output[i] = Temp(n.Name.Length > 0 ? n.Name : scope + n.OpType);
            output.Add(lifted);
            for (int i = 0; i < n.Output.Count; i++)
            {
                if (n.Output[i].Length == 0) continue;
                var requantise = Node("QuantizeLinear", [lifted.Output[i], .. Parameters()], [n.Output[i]], scope);
                requantise.Attribute.Add(q.Attribute);
            }
        }
    }
}
