using Loupe.Abstractions;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Models.Onnx;

// The ONNX graph as a ModelGraph: each runtime node maps to a standard operator; constants (initializers and folded
// subgraphs) become parameters. A MatMul or Conv followed by an Add of a constant becomes one layer with that bias.
public sealed partial class OnnxModel : IModelGraphSource
{
    static readonly string[] GraphOps =
        ["Conv", "Gemm", "MatMul", "Add", "BatchNormalization", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape", "Concat", "Identity", "Dropout", "Pad", "Clip", "Sigmoid", "Mul", "HardSigmoid", "HardSwish",
         "Transpose", "LayerNormalization", "the exact GELU (Div by √2, Erf, Add 1, Mul, Mul by 0.5)",
         "the layer norm below opset 17 (ReduceMean, Sub, Pow, ReduceMean, Add ε, Sqrt, Div, Mul γ, Add β)"];

    /// <inheritdoc/>
    public ModelGraph Graph()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Refold();
        var nodes = new List<GraphNode>();
        var index = new Dictionary<string, int>(StringComparer.Ordinal) { [_inputName] = -1 };
        // Values something reads: an optional output nobody reads (PyTorch 2's MaxPool Indices) needs no graph form.
        var read = _plan.SelectMany(n => n.Reads).Append(_outputName).ToHashSet(StringComparer.Ordinal);
        var inGelu = _geluChains.Values.SelectMany(c => c).ToHashSet();
        var gated = SelfGates();
        var norms = LayerNormChains();
        var inNorm = norms.Values.SelectMany(c => c.Members).ToHashSet();
        for (int at = 0; at < _plan.Count; at++)
        {
            var n = _plan[at];
            if (inGelu.Contains(at)) continue;   // read as one Gelu at its Div
            if (gated.Gates.Contains(at)) continue;   // read as one Silu / Hardswish at its Mul
            if (norms.TryGetValue(at, out var ln))
            {
                // The exporter's layer norm below opset 17 (its mean, centring, variance, ε, root, division, scale and
                // shift), one operator under its last node's name.
                var last = _plan[ln.Members[^1]];
                int from = index.TryGetValue(ln.Input, out var li) ? li : throw n.Error("its input is not computed from the graph input");
                nodes.Add(new GraphNode(last.Name.Length > 0 ? last.Name : last.Outputs[0], GraphOp.LayerNorm, [from]) { Weight = ln.Weight, Bias = ln.Bias, Eps = ln.Eps });
                index[last.Outputs[0]] = nodes.Count - 1;
                continue;
            }
            if (inNorm.Contains(at)) continue;
            if (gated.Products.TryGetValue(at, out var product))
            {
                int from = index.TryGetValue(product.Input, out var g) ? g : throw n.Error("its gate's input is not computed from the graph input");
                nodes.Add(new GraphNode(n.Name.Length > 0 ? n.Name : n.Outputs[0], product.Op, [from]));
                index[n.Outputs[0]] = nodes.Count - 1;
                continue;
            }
            int In(int i) => n.HasInput(i) && index.TryGetValue(n.Inputs[i], out var k) ? k
                : throw n.Error($"input {i} ('{(i < n.Inputs.Length ? n.Inputs[i] : "")}') is not computed from the graph input: the model graph needs one data path per operator");
            Tensor Const(int i) => n.HasInput(i) && _constants.TryGetValue(n.Inputs[i], out var t) ? t
                : throw n.Error($"input {i} must be a constant (initializer) for the model graph");
            string name = n.Name.Length > 0 ? n.Name : n.Outputs[0];
            GraphNode? node = null;
            int? alias = null;
            if (_geluChains.TryGetValue(at, out var chain))
            {
                // The exporter's exact GELU: x / √2 → Erf → + 1 → x · (·) → · 0.5, one operator under its last node's name.
                var last = _plan[chain[^1]];
                nodes.Add(new GraphNode(last.Name.Length > 0 ? last.Name : last.Outputs[0], GraphOp.Gelu, [In(0)]));
                index[last.Outputs[0]] = nodes.Count - 1;
                continue;
            }
            switch (n.OpType)
            {
                case "Conv":
                {
                    var w = Const(1);
                    if (w.dim() != 4) throw n.Error("the model graph supports 2-D convolutions only");
                    node = new GraphNode(name, GraphOp.Conv, [In(0)])
                    {
                        Weight = w, Bias = n.HasInput(2) ? Const(2) : null, Stride = n.Ints("strides") ?? [1, 1],
                        Padding = Pads(n), Dilation = n.Ints("dilations") ?? [1, 1], Groups = n.Int("group", 1),
                    };
                    break;
                }
                case "Gemm":
                {
                    if (n.Int("transA", 0) != 0) throw n.Error("transA = 1 has no dense-layer form in the model graph");
                    var w = Const(1);
                    float alpha = n.Float("alpha", 1f), beta = n.Float("beta", 1f);
                    w = n.Int("transB", 0) != 0 ? w : w.t();
                    Tensor? b = n.HasInput(2) ? Const(2) : null;
                    node = new GraphNode(name, GraphOp.Linear, [In(0)])
                    {
                        Weight = alpha == 1f ? w : w * alpha,
                        Bias = b is null ? null : (beta == 1f ? b : b * beta).flatten(),
                    };
                    break;
                }
                case "MatMul":
                {
                    var w = Const(1);
                    if (w.dim() != 2) throw n.Error("the model graph supports MatMul by a constant matrix only");
                    node = new GraphNode(name, GraphOp.Linear, [In(0)]) { Weight = w.t() };
                    break;
                }
                case "Add":
                {
                    bool c0 = _constants.ContainsKey(n.Inputs[0]), c1 = _constants.ContainsKey(n.Inputs[1]);
                    if (!c0 && !c1) { node = new GraphNode(name, GraphOp.Add, [In(0), In(1)]); break; }
                    // x + constant: the bias of the layer before (MatMul, bias-free Conv).
                    int from = In(c0 ? 1 : 0);
                    var c = Const(c0 ? 0 : 1);
                    if (from < 0 || !nodes[from].IsLinearLayer || nodes[from].Bias is not null || c.numel() != nodes[from].Weight!.shape[0])
                        throw n.Error("adds a constant that is not the bias of the Conv/MatMul before it: no model-graph form");
                    nodes[from] = nodes[from] with { Bias = c.flatten() };
                    alias = from;
                    break;
                }
                case "BatchNormalization":
                    node = new GraphNode(name, GraphOp.BatchNorm, [In(0)])
                    { Weight = Const(1), Bias = Const(2), Mean = Const(3), Var = Const(4), Eps = n.Float("epsilon", 1e-5f) };
                    break;
                case "Relu": node = new GraphNode(name, GraphOp.Relu, [In(0)]); break;
                case "MaxPool":
                case "AveragePool":
                {
                    if (n.HasOutput(1) && read.Contains(n.Outputs[1])) throw n.Error("max-pool indices have no model-graph form");
                    var k = n.Ints("kernel_shape") ?? throw n.Error("kernel_shape is missing");
                    if (k.Length != 2) throw n.Error("the model graph supports 2-D pools only");
                    node = new GraphNode(name, n.OpType == "MaxPool" ? GraphOp.MaxPool : GraphOp.AvgPool, [In(0)])
                    {
                        Kernel = k, Stride = n.Ints("strides") ?? [1, 1], Padding = Pads(n), Dilation = n.Ints("dilations") ?? [1, 1],
                        CeilMode = n.Int("ceil_mode", 0) != 0, CountIncludePad = n.Int("count_include_pad", 0) != 0,
                    };
                    break;
                }
                case "GlobalAveragePool": node = new GraphNode(name, GraphOp.AdaptiveAvgPool, [In(0)]) { Kernel = [1, 1] }; break;
                case "ReduceMean":
                {
                    // The mean over the two spatial dims (PyTorch 2's global pooling): an adaptive 1×1 pool, then a
                    // flatten when the dims are not kept.
                    var axes = (Ops.AxesFromInput(n) ? n.HasInput(1) ? Const(1).to(ScalarType.Int64).ToArray<long>() : null : n.Ints("axes"))?.Order().ToArray();
                    if (axes is not ([2, 3] or [-2, -1])) throw n.Error($"the model graph supports ReduceMean over the two spatial dims (axes 2, 3) only, not ({string.Join(", ", axes ?? [])})");
                    var pool = new GraphNode(name, GraphOp.AdaptiveAvgPool, [In(0)]) { Kernel = [1, 1] };
                    if (n.Int("keepdims", 1) != 0) { node = pool; break; }
                    nodes.Add(pool);
                    node = new GraphNode(name + "/flatten", GraphOp.Flatten, [nodes.Count - 1]);
                    break;
                }
                case "Flatten":
                    if (n.Int("axis", 1) != 1) throw n.Error("the model graph supports Flatten with axis 1 only");
                    node = new GraphNode(name, GraphOp.Flatten, [In(0)]);
                    break;
                case "Reshape":
                {
                    var shape = Const(1).to(ScalarType.Int64).ToArray<long>();
                    if (shape.Length < 2) throw n.Error("the model graph supports reshapes that keep the batch dimension only");
                    node = new GraphNode(name, GraphOp.Reshape, [In(0)]) { Shape = shape[1..] };
                    break;
                }
                case "Concat":
                    node = new GraphNode(name, GraphOp.Concat, Enumerable.Range(0, n.Inputs.Length).Select(In).ToArray()) { Axis = n.Int("axis", 1) };
                    break;
                case "Identity" or "Dropout":
                    if (n.HasOutput(1) && read.Contains(n.Outputs[1])) throw n.Error("a dropout mask output has no model-graph form");
                    node = new GraphNode(name, GraphOp.Identity, [In(0)]);
                    break;
                case "Pad": node = PadNode(n, name, In(0), Const); break;
                case "Clip":
                {
                    double? Bound(int i, string attribute) => n.Opset < 11
                        ? (n.Has(attribute) ? n.Float(attribute, 0) : null)
                        : n.HasInput(i) ? Const(i).to(ScalarType.Float64).item<double>() : null;
                    node = new GraphNode(name, GraphOp.Clip, [In(0)]) { Min = Bound(1, "min"), Max = Bound(2, "max") };
                    break;
                }
                case "Sigmoid": node = new GraphNode(name, GraphOp.Sigmoid, [In(0)]); break;
                case "Mul":
                {
                    // x · y (squeeze-and-excitation, SiLU as x · σ(x)), or x times a constant factor.
                    bool c0 = _constants.ContainsKey(n.Inputs[0]), c1 = _constants.ContainsKey(n.Inputs[1]);
                    if (c0 && c1) throw n.Error("multiplies two constants: no model-graph form");
                    node = c0 || c1 ? new GraphNode(name, GraphOp.Mul, [In(c0 ? 1 : 0)]) { Weight = Const(c0 ? 0 : 1) }
                        : new GraphNode(name, GraphOp.Mul, [In(0), In(1)]);
                    break;
                }
                case "HardSigmoid":
                    node = new GraphNode(name, GraphOp.Hardsigmoid, [In(0)]) { Alpha = n.Float("alpha", 0.2f), Beta = n.Float("beta", 0.5f) };
                    break;
                case "HardSwish": node = new GraphNode(name, GraphOp.Hardswish, [In(0)]); break;
                case "Transpose":
                {
                    var perm = n.Ints("perm") ?? throw n.Error("a Transpose without perm (reversing every axis, the batch too) has no model-graph form");
                    if (perm.Length < 2 || perm[0] != 0) throw n.Error($"perm ({string.Join(", ", perm)}) moves the batch dimension: no model-graph form");
                    node = new GraphNode(name, GraphOp.Permute, [In(0)]) { Dims = perm };
                    break;
                }
                case "LayerNormalization":
                {
                    if (n.Int("axis", -1) != -1) throw n.Error($"axis {n.Int("axis", -1)}: the model graph normalises the last axis only (axis -1)");
                    if (n.Outputs.Skip(1).Any(o => o.Length > 0 && read.Contains(o))) throw n.Error("the mean and inverse deviation outputs have no model-graph form");
                    node = new GraphNode(name, GraphOp.LayerNorm, [In(0)]) { Weight = Const(1), Bias = n.HasInput(2) ? Const(2) : null, Eps = n.Float("epsilon", 1e-5f) };
                    break;
                }
                default:
                    throw n.Error($"operator {n.OpType} has no model-graph form; supported: {string.Join(", ", GraphOps)}");
            }
            if (alias is { } a) index[n.Outputs[0]] = a;
            else { nodes.Add(node!); index[n.Outputs[0]] = nodes.Count - 1; }
        }
        int output = index.TryGetValue(_outputName, out var o) ? o : throw new LoupeException($"{_source}: output '{_outputName}' is not computed from the input");
        if (output != nodes.Count - 1 || _flattenOutput)
            nodes.Add(new GraphNode("output", _flattenOutput ? GraphOp.Flatten : GraphOp.Identity, [output]));
        var graph = new ModelGraph(nodes);
        graph.Validate(_source);
        return graph;
    }

    /// <summary>The exporter's SiLU and hard-swish: Mul(x, Sigmoid(x)) and Mul(x, HardSigmoid(x)) with PyTorch's α = 1/6,
    /// β = 1/2, whose gate nothing else reads — one operator each (the PyTorch module they came from), at the Mul's
    /// position; the gates' positions are skipped.</summary>
    (HashSet<int> Gates, Dictionary<int, (GraphOp Op, string Input)> Products) SelfGates()
    {
        var (readers, producer) = Wiring();
        var gates = new HashSet<int>();
        var products = new Dictionary<int, (GraphOp, string)>();
        for (int i = 0; i < _plan.Count; i++)
        {
            var m = _plan[i];
            if (m.OpType != "Mul" || m.Inputs.Length != 2) continue;
            for (int side = 0; side < 2; side++)
            {
                if (!producer.TryGetValue(m.Inputs[1 - side], out var g) || readers.GetValueOrDefault(m.Inputs[1 - side]) != 1) continue;
                var gate = _plan[g];
                if (gate.Inputs.Length < 1 || gate.Inputs[0] != m.Inputs[side]) continue;
                GraphOp? op = gate.OpType switch
                {
                    "Sigmoid" => GraphOp.Silu,
                    "HardSigmoid" when Math.Abs(gate.Float("alpha", 0.2f) - 1.0 / 6) < 1e-6 && Math.Abs(gate.Float("beta", 0.5f) - 0.5) < 1e-6 => GraphOp.Hardswish,
                    _ => null,
                };
                if (op is null) continue;
                gates.Add(g);
                products[i] = (op.Value, m.Inputs[side]);
                break;
            }
        }
        return (gates, products);
    }

    /// <summary>How many nodes read each value (the model's output counts as read), and the position of each value's
    /// producer in the plan.</summary>
    (Dictionary<string, int> Readers, Dictionary<string, int> Producer) Wiring()
    {
        var readers = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var v in _plan.SelectMany(p => p.Reads).Append(_outputName)) readers[v] = readers.GetValueOrDefault(v) + 1;
        var producer = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < _plan.Count; i++)
            foreach (var o in _plan[i].Outputs) producer[o] = i;
        return (readers, producer);
    }

    /// <summary>The exporter's layer norm of the last axis below opset 17: m = ReduceMean(x), d = Sub(x, m),
    /// v = ReduceMean(Pow(d, 2)), Div(d, Sqrt(Add(v, ε))), then optionally Mul by a constant γ and Add of a constant β —
    /// each value read only inside the chain (d by the Pow and the Div). Keyed by the first ReduceMean's position: the
    /// chain's positions, x, ε, γ and β.</summary>
    Dictionary<int, (int[] Members, string Input, double Eps, Tensor? Weight, Tensor? Bias)> LayerNormChains()
    {
        var (readers, producer) = Wiring();
        var readersOf = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        for (int i = 0; i < _plan.Count; i++)
            foreach (var v in _plan[i].Reads) (readersOf.TryGetValue(v, out var l) ? l : readersOf[v] = []).Add(i);
        Tensor? Const(string v) => _constants.TryGetValue(v, out var t) ? t : null;
        bool LastAxis(OnnxNode r)
        {
            var axes = Ops.AxesFromInput(r) ? (r.Inputs.Length > 1 && Const(r.Inputs[1]) is { } a ? a.to(ScalarType.Int64).ToArray<long>() : null) : r.Ints("axes");
            return axes is [-1] && r.Int("keepdims", 1) == 1;
        }
        // The one node reading v (and nothing else), of type `op`, or -1.
        int Sole(string v, string op) => readers.GetValueOrDefault(v) == 1 && readersOf.TryGetValue(v, out var l) && _plan[l[0]].OpType == op ? l[0] : -1;
        string? Other(OnnxNode n, string known) => n.Inputs.Length != 2 ? null : n.Inputs[0] == known ? n.Inputs[1] : n.Inputs[1] == known ? n.Inputs[0] : null;
        var chains = new Dictionary<int, (int[], string, double, Tensor?, Tensor?)>();
        for (int i = 0; i < _plan.Count; i++)
        {
            var mean = _plan[i];
            if (mean.OpType != "ReduceMean" || mean.Inputs.Length < 1 || Const(mean.Inputs[0]) is not null || !LastAxis(mean)) continue;
            string x = mean.Inputs[0];
            int sub = Sole(mean.Outputs[0], "Sub");
            if (sub < 0 || _plan[sub].Inputs is not [var sx, var sm] || sx != x || sm != mean.Outputs[0]) continue;
            string d = _plan[sub].Outputs[0];
            if (readers.GetValueOrDefault(d) != 2 || !readersOf.TryGetValue(d, out var dl)) continue;
            int pow = dl.FirstOrDefault(k => _plan[k].OpType == "Pow", -1), div = dl.FirstOrDefault(k => _plan[k].OpType == "Div", -1);
            if (pow < 0 || div < 0 || _plan[pow].Inputs[0] != d || Const(_plan[pow].Inputs[1]) is not { } two || two.numel() != 1 || two.to(ScalarType.Float64).item<double>() != 2) continue;
            int variance = Sole(_plan[pow].Outputs[0], "ReduceMean");
            if (variance < 0 || !LastAxis(_plan[variance])) continue;
            int plus = Sole(_plan[variance].Outputs[0], "Add");
            if (plus < 0 || Other(_plan[plus], _plan[variance].Outputs[0]) is not { } epsName || Const(epsName) is not { } eps || eps.numel() != 1) continue;
            int root = Sole(_plan[plus].Outputs[0], "Sqrt");
            if (root < 0 || Sole(_plan[root].Outputs[0], "Div") != div || _plan[div].Inputs[0] != d) continue;
            var members = new List<int> { i, sub, pow, variance, plus, root, div };
            Tensor? weight = null, bias = null;
            int scale = Sole(_plan[div].Outputs[0], "Mul");
            if (scale >= 0 && Other(_plan[scale], _plan[div].Outputs[0]) is { } wName && Const(wName) is { } w && w.dim() == 1)
            {
                members.Add(scale);
                weight = w;
                int shift = Sole(_plan[scale].Outputs[0], "Add");
                if (shift >= 0 && Other(_plan[shift], _plan[scale].Outputs[0]) is { } bName && Const(bName) is { } b && b.dim() == 1)
                {
                    members.Add(shift);
                    bias = b;
                }
            }
            chains[i] = ([.. members], x, eps.to(ScalarType.Float64).item<double>(), weight, bias);
        }
        return chains;
    }

    /// <summary>A constant Pad of the two spatial dimensions of a 4-D value (batch and channels unpadded).</summary>
    static GraphNode PadNode(OnnxNode n, string name, int input, Func<int, Tensor> constant)
    {
        if (n.String("mode", "constant") != "constant") throw n.Error($"{n.String("mode", "")} padding has no model-graph form (constant only)");
        long[] pads = n.Opset < 11 ? n.Ints("pads") ?? [] : constant(1).to(ScalarType.Int64).ToArray<long>();
        double value = n.Opset < 11 ? n.Float("value", 0) : n.HasInput(2) ? constant(2).to(ScalarType.Float64).item<double>() : 0;
        if (n.Opset >= 11 && n.HasInput(3)) throw n.Error("Pad with axes has no model-graph form");
        if (pads.Length != 8 || pads[0] != 0 || pads[1] != 0 || pads[4] != 0 || pads[5] != 0)
            throw n.Error($"pads [{string.Join(", ", pads)}]: the model graph pads the two spatial dimensions of a 4-D value only");
        // ONNX: [n, c, h, w begins, n, c, h, w ends]; F.pad: (left, right, top, bottom).
        return new GraphNode(name, GraphOp.Pad, [input]) { Pads = [pads[3], pads[7], pads[2], pads[6]], PadValue = value };
    }

    static long[] Pads(OnnxNode n)
    {
        if (n.String("auto_pad", "NOTSET") is not ("NOTSET" or "")) throw n.Error("auto_pad has no model-graph form: export with explicit pads");
        var p = n.Ints("pads") ?? [0, 0, 0, 0];
        if (p.Length != 4 || p[0] != p[2] || p[1] != p[3]) throw n.Error($"pads [{string.Join(", ", p)}] are not symmetric: no model-graph form");
        return [p[0], p[1]];
    }
}
