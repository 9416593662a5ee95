using System.Text.RegularExpressions;
using Google.Protobuf;
using Loupe.Abstractions;
using Onnx;

namespace Loupe.Models.Onnx;

/// <summary>ONNX Runtime's fused operators (domain <c>com.microsoft</c>) in a graph it saved — a session's
/// <c>optimized_model_filepath</c> at <c>ORT_ENABLE_BASIC</c>/<c>EXTENDED</c>, or its transformer optimiser — expanded at
/// load into the standard operators they fuse, so both backends, module paths, Guided Backprop's and DeepLift's ReLU
/// and sigmoid rules, LRP's graph form and attention rollout see the graph the exporter wrote:
/// <c>FusedConv</c> → Conv (+ Add of Z) + its activation, <c>FusedGemm</c> → Gemm + activation, <c>Gelu</c>,
/// <c>BiasGelu</c> → (Add +) the exact GELU as the TorchScript exporter writes it (Div by √2, Erf, Add 1, Mul, Mul ½),
/// <c>FastGelu</c> → (Add +) the tanh GELU, <c>QuickGelu</c> → x·sigmoid(αx), <c>BiasAdd</c> → two Adds,
/// <c>SkipLayerNormalization</c> → Add(s) + LayerNormalization, <c>SkipSimplifiedLayerNormalization</c> → Add(s) +
/// SimplifiedLayerNormalization (semantics: ONNX Runtime's ContribOperators.md and its CPU kernels). The expanded nodes
/// take the names the exporter gave the fused ones where ONNX Runtime kept them in value names
/// (<c>/relu/Relu_output_0</c> → a Relu node <c>/relu/Relu</c>), so <c>layer: relu</c> still names the ReLU.
/// FusedMatMul, TransposeMatMul and the default-domain SimplifiedLayerNormalization are operators of the interpreter
/// (<see cref="Ops"/>); other <c>com.microsoft</c> operators stay as they are (the <c>onnx-runtime</c> backend runs
/// them).</summary>
public static partial class OnnxContrib
{
    /// <summary>ONNX Runtime's domain of its own operators.</summary>
    public const string Domain = "com.microsoft";

    /// <summary>The operators expanded at load.</summary>
    public static readonly IReadOnlyCollection<string> Expanded =
        ["FusedConv", "FusedGemm", "Gelu", "BiasGelu", "FastGelu", "QuickGelu", "BiasAdd", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization",
         "Attention", "MultiHeadAttention"];

    /// <summary>Replaces every expandable <c>com.microsoft</c> node of the main graph (and of If/Loop bodies) by standard
    /// operators.</summary>
    public static void Expand(ModelProto model, long opset, string source)
    {
        if (!model.Graph.Node.Any(IsExpanded) && !model.Graph.Node.Any(n => n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0))) return;
        var names = new Names(model.Graph);
        var initializers = new List<TensorProto>();
        var constants = Constants(model.Graph, []);
        ExpandGraph(model.Graph, new Emitter(names, initializers, constants, opset, source));
        model.Graph.Initializer.Add(initializers);
    }

    /// <summary>ONNX Runtime's operators that its backend runs from any file: those whose kernels check their shapes
    /// (a mismatch is an error, not a crash; ops-contrib fixtures).</summary>
    static readonly HashSet<string> SafeForOnnxRuntime = ["FusedMatMul", "TransposeMatMul"];

    /// <summary>Refuses, for the onnx-runtime backend, a node of another domain than ONNX's that is left after the
    /// expansion, unless the pipeline allows them (<paramref name="allowed"/>): ONNX Runtime runs its own operators'
    /// kernels on whatever the file gives them, and they are not hardened as its standard ones are (1.31's CPU
    /// Attention, given no bias — which its schema allows — crashes the process; the expansion now runs that one).</summary>
    public static void CheckForOnnxRuntime(OnnxFile file, bool allowed)
    {
        if (allowed) return;
        static IEnumerable<NodeProto> All(GraphProto g) => g.Node.SelectMany(n => n.Attribute.SelectMany(a => (a.G is null ? a.Graphs : a.Graphs.Prepend(a.G)).SelectMany(All)).Prepend(n));
        if (All(file.Model.Graph).FirstOrDefault(n => n.Domain is not ("" or "ai.onnx") && !(n.Domain == Domain && SafeForOnnxRuntime.Contains(n.OpType))) is { } node)
            throw new LoupeException($"{file.Source}: node '{(node.Name.Length > 0 ? node.Name : node.Output.FirstOrDefault())}' is {node.Domain}.{node.OpType}, an operator of ONNX Runtime's own (or another runtime's), not of ONNX; "
                + "the onnx-runtime backend runs such operators only with 'contrib_operators: true', for a file you trust (their kernels are not hardened against malformed graphs)"
                + (node.Domain == Domain + ".nchwc" ? "; this graph was saved at ORT_ENABLE_ALL for one machine's CPU: save it at ORT_ENABLE_EXTENDED instead" : ""));
    }

    static bool IsExpanded(NodeProto n) => n.Domain == Domain && Expanded.Contains(n.OpType);

    static void ExpandGraph(GraphProto graph, Emitter e)
    {
        foreach (var n in graph.Node)
            foreach (var a in n.Attribute)
            {
                if (a.G is not null) ExpandGraph(a.G, e);
                foreach (var g in a.Graphs) ExpandGraph(g, e);
            }
        if (!graph.Node.Any(IsExpanded)) return;
        var nodes = new List<NodeProto>(graph.Node.Count);
        foreach (var n in graph.Node)
        {
            if (!IsExpanded(n)) { nodes.Add(n); continue; }
            e.Begin(n, nodes);
            switch (n.OpType)
            {
                case "FusedConv": e.FusedConv(); break;
                case "FusedGemm": e.FusedGemm(); break;
                case "Gelu": e.Gelu(e.In(0), e.Out(0)); break;
                case "BiasGelu": e.Gelu(e.BiasAdded(e.In(0), e.In(1)), e.Out(0)); break;
                case "FastGelu": e.FastGelu(n.Input.Count > 1 && n.Input[1].Length > 0 ? e.BiasAdded(e.In(0), n.Input[1]) : e.In(0), e.Out(0)); break;
                case "QuickGelu": e.QuickGelu(); break;
                case "BiasAdd": e.Node("Add", [e.BiasAdded(e.In(0), e.In(1)), e.In(2)], [e.Out(0)], e.ScopeOf(e.Out(0))); break;
                case "SkipLayerNormalization": e.SkipNormalization(simplified: false); break;
                case "SkipSimplifiedLayerNormalization": e.SkipNormalization(simplified: true); break;
                case "Attention": e.Attention(); break;
                case "MultiHeadAttention": e.MultiHeadAttention(); break;
            }
        }
        graph.Node.Clear();
        graph.Node.Add(nodes);
    }

    /// <summary>Every name in the graph (values and nodes, subgraphs included), for fresh ones.</summary>
    sealed class Names
    {
        readonly HashSet<string> _values = new(StringComparer.Ordinal), _nodes = new(StringComparer.Ordinal);

        public Names(GraphProto graph) => Collect(graph);

        void Collect(GraphProto g)
        {
            _values.UnionWith(g.Input.Select(v => v.Name));
            _values.UnionWith(g.Output.Select(v => v.Name));
            _values.UnionWith(g.Initializer.Select(t => t.Name));
            foreach (var n in g.Node)
            {
                _values.UnionWith(n.Input);
                _values.UnionWith(n.Output);
                _nodes.Add(n.Name);
                foreach (var a in n.Attribute)
                {
                    if (a.G is not null) Collect(a.G);
                    foreach (var s in a.Graphs) Collect(s);
                }
            }
        }

        readonly Dictionary<string, int> _next = new(StringComparer.Ordinal);

        /// <summary><paramref name="wanted"/>, else <c>wanted_k</c> for the first k free, counting on from the last k
        /// given for it (a file full of such names costs each of them once, not once per call).</summary>
        string Fresh(HashSet<string> taken, string wanted)
        {
            if (taken.Add(wanted)) return wanted;
            for (int k = _next.GetValueOrDefault(wanted, 1); ; k++)
                if (taken.Add($"{wanted}_{k}"))
                {
                    _next[wanted] = k + 1;
                    return $"{wanted}_{k}";
                }
        }

        public string Value(string wanted) => Fresh(_values, wanted);
        public string Node(string wanted) => Fresh(_nodes, wanted);
    }

    /// <summary>Writes the standard nodes of one fused node.</summary>
    sealed partial class Emitter(Names names, List<TensorProto> initializers, IReadOnlyDictionary<string, TensorProto> constants, long opset, string source)
    {
        NodeProto _n = null!;
        List<NodeProto> _out = null!;
        bool _keepName;

        /// <summary>Starts the expansion of <paramref name="n"/> into <paramref name="output"/>: a Conv or Gemm keeps the
        /// fused node's name (the exporter's, ONNX Runtime kept it); other nodes are named in their value's scope.</summary>
        public void Begin(NodeProto n, List<NodeProto> output)
        {
            _n = n;
            _out = output;
            _keepName = n.OpType is "FusedConv" or "FusedGemm" && n.Name.Length > 0;
        }

        /// <summary>The operator begun, as a file names it (<c>com.microsoft.FusedConv</c>, <c>QLinearConv</c>).</summary>
        string Operator => (_n.Domain is "" or "ai.onnx" ? "" : _n.Domain + ".") + _n.OpType;

        LoupeException Error(string message) =>
            new($"{source}: {Operator} node '{(_n.Name.Length > 0 ? _n.Name : _n.Output.FirstOrDefault())}': {message}");

        public string In(int i) => i < _n.Input.Count && _n.Input[i].Length > 0 ? _n.Input[i] : throw Error($"input {i} is missing");
        public string Out(int i) => i < _n.Output.Count ? _n.Output[i] : "";
        string? Optional(int i) => i < _n.Input.Count && _n.Input[i].Length > 0 ? _n.Input[i] : null;

        [GeneratedRegex(@"^(.*/)?([^/]+)_output_\d+$")]
        private static partial Regex ExporterValue();

        /// <summary>The scope a value's name carries (<c>/layer1/layer1.0/relu/Relu_output_0</c> → <c>/layer1/layer1.0/relu/</c>),
        /// else the fused node's.</summary>
        public string ScopeOf(string value)
        {
            var m = ExporterValue().Match(value);
            if (m.Success && m.Groups[1].Success) return m.Groups[1].Value;
            int slash = _n.Name.LastIndexOf('/');
            return slash >= 0 ? _n.Name[..(slash + 1)] : (_n.Name.Length > 0 ? _n.Name + "/" : "");
        }

        /// <summary>The name of the node the exporter had written for <paramref name="value"/> (<c>/relu/Relu_output_0</c>
        /// → <c>/relu/Relu</c>), when the value's name says so and that op is <paramref name="op"/>.</summary>
        string? ExporterNode(string value, string op)
        {
            var m = ExporterValue().Match(value);
            return m.Success && (m.Groups[2].Value == op || m.Groups[2].Value.StartsWith(op + "_", StringComparison.Ordinal)) ? value[..value.LastIndexOf("_output_", StringComparison.Ordinal)] : null;
        }

        /// <summary>Adds a node, named <paramref name="name"/>, else (the main node of a FusedConv or FusedGemm) the fused
        /// node's name, else the op in <paramref name="scope"/> (default: its first output's).</summary>
        public NodeProto Node(string op, string[] inputs, string[] outputs, string? scope = null, string? name = null)
        {
            var node = new NodeProto { OpType = op, Domain = "" };
            node.Input.Add(inputs);
            node.Output.Add(outputs);
            // The main node takes the fused node's name as it is (ONNX Runtime names a fused Gemm "fused " + the Gemm's).
            node.Name = name is null && _keepName ? (_n.Name.StartsWith("fused ", StringComparison.Ordinal) ? _n.Name[6..] : _n.Name)
                : names.Node(name ?? (scope ?? ScopeOf(outputs[0])) + op);
            node.DocString = $"expanded from {Operator} '{_n.Name}'";
            _keepName = false;
            _out.Add(node);
            return node;
        }

        /// <summary>A fresh intermediate value, named as the exporter names a node's output.</summary>
        string Temp(string node) => names.Value(node + "_output_0");

        string Constant(float value) => Constant([value], []);

        string Constant(long[] values)
        {
            var t = new TensorProto { Name = names.Value($"{(_n.Name.Length > 0 ? _n.Name : _n.OpType)}/const"), DataType = (int)TensorProto.Types.DataType.Int64 };
            t.Dims.Add(values.Length);
            t.Int64Data.Add(values);
            initializers.Add(t);
            return t.Name;
        }

        /// <summary>One node of <paramref name="op"/> in <paramref name="scope"/> writing a fresh value, which it returns.</summary>
        string Step(string op, string[] inputs, string scope, params AttributeProto[] attributes)
        {
            var node = Node(op, inputs, [""], scope);
            node.Attribute.Add(attributes);
            return node.Output[0] = Temp(node.Name);
        }

        string Constant(float[] values, long[] dims)
        {
            var t = new TensorProto { Name = names.Value($"{(_n.Name.Length > 0 ? _n.Name : _n.OpType)}/const"), DataType = (int)TensorProto.Types.DataType.Float };
            t.Dims.Add(dims);
            t.FloatData.Add(values);
            initializers.Add(t);
            return t.Name;
        }

        static AttributeProto Attr(string name, float v) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = v };
        static AttributeProto Attr(string name, long v) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = v };

        float? FloatAttr(string name) => _n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.F : null;
        long IntAttr(string name, long fallback) => _n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.I : fallback;

        /// <summary>input + bias (the bias along the last axis), an Add in the scope of the input (the layer the bias
        /// belongs to).</summary>
        public string BiasAdded(string input, string bias)
        {
            string scope = ScopeOf(input);
            var add = Node("Add", [input, bias], [""], scope);
            add.Output[0] = Temp(add.Name);
            return add.Output[0];
        }

        /// <summary>The exact GELU, 0.5·x·(1 + erf(x/√2)), in the five nodes the TorchScript exporter writes (the
        /// interpreter's fused plan runs them as one <c>gelu</c>).</summary>
        public void Gelu(string x, string y)
        {
            string scope = ScopeOf(y);
            var erf = Step("Erf", [Step("Div", [x, Constant(MathF.Sqrt(2f))], scope)], scope);
            var mul = Step("Mul", [x, Step("Add", [erf, Constant(1f)], scope)], scope);
            Node("Mul", [mul, Constant(0.5f)], [y], scope);
        }

        /// <summary>The tanh GELU, 0.5·v·(1 + tanh(√(2/π)·(v + 0.044715·v³))) (FastGelu's formula).</summary>
        public void FastGelu(string v, string y)
        {
            string scope = ScopeOf(y);
            var cube = Step("Mul", [Step("Mul", [v, v], scope), v], scope);
            var inner = Step("Mul", [Step("Add", [v, Step("Mul", [cube, Constant(0.044715f)], scope)], scope), Constant(0.7978845608028654f)], scope);
            var mul = Step("Mul", [v, Step("Add", [Step("Tanh", [inner], scope), Constant(1f)], scope)], scope);
            Node("Mul", [mul, Constant(0.5f)], [y], scope);
        }

        /// <summary>x·sigmoid(α·x) (α = 1.702 by default; α = 1, SiLU, as the exporter wrote it: Sigmoid, Mul).</summary>
        public void QuickGelu()
        {
            string x = In(0), y = Out(0), scope = ScopeOf(y);
            float alpha = FloatAttr("alpha") ?? 1.702f;
            var sigmoid = Step("Sigmoid", [alpha == 1f ? x : Step("Mul", [x, Constant(alpha)], scope)], scope);
            Node("Mul", [x, sigmoid], [y], scope);
        }

        /// <summary>Conv (+ Z) + activation: act(Conv(X, W, B) + Z).</summary>
        public void FusedConv()
        {
            var conv = Node("Conv", [.. _n.Input.Take(3)], [""]);
            conv.Attribute.Add(_n.Attribute.Where(a => a.Name is not ("activation" or "activation_params")));
            var activation = _n.Attribute.FirstOrDefault(a => a.Name == "activation") is { } a ? a.S.ToStringUtf8() : null;
            if (activation is not (null or "Relu" or "Tanh" or "Sigmoid" or "LeakyRelu" or "Clip" or "HardSigmoid"))
                throw Error($"activation '{activation}' is not one ONNX Runtime fuses into a convolution (Relu, Tanh, Sigmoid, LeakyRelu, Clip, HardSigmoid)");
            string y = Out(0);
            string? z = Optional(3);
            conv.Output[0] = z is null && activation is null ? y : Temp(conv.Name);
            string value = conv.Output[0];
            if (z is not null)
            {
                var add = Node("Add", [value, z], [activation is null ? y : ""], ScopeOf(y));
                if (activation is not null) add.Output[0] = Temp(add.Name);
                value = add.Output[0];
            }
            if (activation is not null) Activation(activation, value, y, _n.Attribute.FirstOrDefault(p => p.Name == "activation_params")?.Floats.ToArray() ?? []);
        }

        /// <summary>Gemm + activation: act(α·A′B′ + β·C), the activation's parameters from activation_alpha/beta/gamma.</summary>
        public void FusedGemm()
        {
            var gemm = Node("Gemm", [.. _n.Input.Take(3)], [""]);
            gemm.Attribute.Add(_n.Attribute.Where(a => !a.Name.StartsWith("activation", StringComparison.Ordinal)));
            var activation = _n.Attribute.FirstOrDefault(a => a.Name == "activation") is { } a ? a.S.ToStringUtf8() : null;
            string y = Out(0);
            gemm.Output[0] = activation is null ? y : Temp(gemm.Name);
            if (activation is null) return;
            float Param(string name) => FloatAttr("activation_" + name) ?? throw Error($"activation {activation} needs the attribute activation_{name}");
            float[] parameters = activation switch
            {
                "Relu" or "Sigmoid" or "Tanh" or "Softplus" or "Softsign" => [],
                "LeakyRelu" or "Elu" or "ThresholdedRelu" => [Param("alpha")],
                "HardSigmoid" or "ScaledTanh" or "ParametricSoftplus" => [Param("alpha"), Param("beta")],
                "Selu" => [Param("alpha"), Param("gamma")],
                _ => throw Error($"activation '{activation}' is not one ONNX Runtime fuses into a Gemm"),
            };
            Activation(activation, gemm.Output[0], y, parameters);
        }

        /// <summary>One fused activation of <paramref name="x"/> into <paramref name="y"/>, as its standard node(s),
        /// named as the exporter named the activation where the output's name says so.</summary>
        void Activation(string activation, string x, string y, float[] p)
        {
            int expected = activation switch
            {
                "LeakyRelu" or "Elu" or "ThresholdedRelu" => 1,
                "Clip" or "HardSigmoid" or "ScaledTanh" or "ParametricSoftplus" or "Selu" => 2,
                _ => 0,
            };
            if (p.Length != expected) throw Error($"activation {activation} takes {expected} parameter(s), not {p.Length}");
            string scope = ScopeOf(y);
            NodeProto Act(string op, string[] inputs, string output) =>
                Node(op, inputs, [output], scope, name: output == y ? ExporterNode(y, op) : null);
            switch (activation)
            {
                case "Relu" or "Sigmoid" or "Tanh" or "Softplus" or "Softsign":
                    Act(activation, [x], y);
                    break;
                case "LeakyRelu" or "Elu" or "ThresholdedRelu":
                    if (activation == "ThresholdedRelu" && opset < 10) throw Error("ThresholdedRelu needs ONNX opset 10 or later");
                    Act(activation, [x], y).Attribute.Add(Attr("alpha", p[0]));
                    break;
                case "HardSigmoid":
                    Act(activation, [x], y).Attribute.Add([Attr("alpha", p[0]), Attr("beta", p[1])]);
                    break;
                case "Selu":
                    Act(activation, [x], y).Attribute.Add([Attr("alpha", p[0]), Attr("gamma", p[1])]);
                    break;
                case "Clip":
                    if (opset < 11) Act("Clip", [x], y).Attribute.Add([Attr("min", p[0]), Attr("max", p[1])]);
                    else Act("Clip", [x, Constant(p[0]), Constant(p[1])], y);
                    break;
                case "ScaledTanh" or "ParametricSoftplus":   // α·tanh(β·x), α·softplus(β·x)
                {
                    var inner = Step(activation == "ScaledTanh" ? "Tanh" : "Softplus", [Step("Mul", [x, Constant(p[1])], scope)], scope);
                    Node("Mul", [inner, Constant(p[0])], [y], scope);
                    break;
                }
            }
        }

        /// <summary>SkipLayerNormalization (s = input + skip (+ bias); LayerNormalization of s over the last axis, γ,
        /// β, ε = 1e-12 by default; outputs y, mean, 1/σ, s) and SkipSimplifiedLayerNormalization (its bias in
        /// slot 3, no β; SimplifiedLayerNormalization of s).</summary>
        public void SkipNormalization(bool simplified)
        {
            string? bias = Optional(simplified ? 3 : 4), sum = Out(3);
            if (simplified && Out(1).Length > 0)
                throw Error("its mean output (which ONNX Runtime's CPU kernel writes as 0) is not supported");
            string scope = ScopeOf(Out(0));
            var skipped = Node("Add", [In(0), In(1)], [bias is null && sum.Length > 0 ? sum : ""], scope);
            if (skipped.Output[0].Length == 0) skipped.Output[0] = Temp(skipped.Name);
            string s = skipped.Output[0];
            if (bias is not null)
            {
                var biased = Node("Add", [s, bias], [sum.Length > 0 ? sum : ""], scope);
                if (biased.Output[0].Length == 0) biased.Output[0] = Temp(biased.Name);
                s = biased.Output[0];
            }
            var norm = simplified
                ? Node("SimplifiedLayerNormalization", [s, In(2)], [Out(0), Out(2)], scope)
                : Node("LayerNormalization", [s, In(2), .. Optional(3) is { } beta ? new[] { beta } : []], [Out(0), Out(1), Out(2)], scope);
            while (norm.Output.Count > 1 && norm.Output[^1].Length == 0) norm.Output.RemoveAt(norm.Output.Count - 1);
            norm.Attribute.Add([Attr("axis", -1L), Attr("epsilon", FloatAttr("epsilon") ?? 1e-12f)]);
        }
    }
}
