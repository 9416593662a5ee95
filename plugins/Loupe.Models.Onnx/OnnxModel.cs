using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>An ONNX graph run as a differentiable TorchSharp program. Every node output is a layer (its ONNX value
/// name; the node name is an alias of its first output). Subgraphs whose inputs are all constants are evaluated once
/// at load (constant folding) and are not layers. Capture follows <c>TorchModel</c> exactly: the "hook" is the
/// interpreter replacing a node's output before later nodes read it.</summary>
public sealed partial class OnnxModel : IModel
{
    readonly List<OnnxNode> _plan;
    readonly Dictionary<string, Tensor> _constants;
    readonly Dictionary<string, string> _layerToValue;
    readonly Dictionary<string, Tensor> _parameters;
    readonly string _inputName, _outputName, _source;
    readonly long?[] _inputDims;
    readonly bool _flattenOutput, _unbatched;
    bool _batchIsOne;
    readonly HashSet<string> _graphOutputs;
    readonly object _gate = new();
    readonly OpenCaptures<LayerCapture> _captures;
    bool _disposed;

    readonly SideInputStore _side;
    readonly List<Tensor> _branchTensors = new();   // the If branches' and Loop bodies' own initializers

    OnnxModel(OnnxFile file, InputSpec input, long?[] inputDims, string? output, bool flattenOutput, SideInputStore side)
    {
        Loupe.Abstractions.Toolkit.TorchNative.Configure();   // before the graph's first convolution
        _captures = new(_gate);
        _source = file.Source;
        _side = side;
        var graph = file.Model.Graph;
        _inputName = file.Input.Name;
        _flattenOutput = flattenOutput;
        _unbatched = file.Unbatched;
        // A graph exported for a batch of one (PyTorch's default without dynamic axes): its reshapes and expands may
        // have the 1 written in, so a larger batch runs as rows of one, in step (ForwardImages), unless the load-time
        // probe (RunsBatched) finds that the graph takes any batch.
        _batchIsOne = !_unbatched && OnnxFile.Dims(file.Input) is [1, ..];
        _graphOutputs = graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        _outputName = output ?? graph.Output[0].Name;
        if (!graph.Output.Any(o => o.Name == _outputName) && !graph.Node.Any(n => n.Output.Contains(_outputName)))
            throw new LoupeException($"{_source}: output '{output}' is neither a graph output nor a node output; graph outputs: {string.Join(", ", graph.Output.Select(o => o.Name))}");

        var nodes = Quantization.Prepare(graph, file.Opset, _source).Select((n, i) => new OnnxNode(n, file.Opset, _source, i)).ToList();
        foreach (var n in nodes) Ops.Check(n);                      // every unsupported operator is refused before anything runs
        foreach (var n in nodes) Ops.Bind(n);
        CompileBranches(nodes, file, _branchTensors);

        _constants = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        _parameters = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        _plan = new List<OnnxNode>();
        try
        {
            using (no_grad())
            {
                foreach (var init in graph.Initializer)
                {
                    var t = OnnxFile.ToTensor(init, _source);
                    t.DetachFromDisposeScope();
                    if (_constants.Remove(init.Name, out var dup)) dup.Dispose();
                    _constants[init.Name] = t;
                    _parameters[init.Name] = t;
                    _parameterValue[init.Name] = init.Name;
                }
                var defined = new HashSet<string>(_constants.Keys, StringComparer.Ordinal) { _inputName };
                defined.UnionWith(side.Names);
                foreach (var n in nodes)
                {
                    foreach (var i in n.Reads)
                        if (!defined.Contains(i)) throw n.Error($"input '{i}' is not produced by any earlier node, initializer or graph input (graph not topologically sorted?)");
                    if (n.Reads.All(_constants.ContainsKey))
                    {
                        // Constant folding: evaluated once, now.
                        using var scope = NewDisposeScope();
                        var outs = Evaluate(n, _constants);
                        for (int k = 0; k < n.Outputs.Length && k < outs.Length; k++)
                            if (n.Outputs[k].Length > 0)
                            {
                                var c = outs[k].detach().clone();
                                c.DetachFromDisposeScope();
                                _constants[n.Outputs[k]] = c;
                            }
                        _foldedNodes.Add(n);
                    }
                    else _plan.Add(n);
                    foreach (var o in n.Outputs.Where(o => o.Length > 0)) defined.Add(o);
                }
                if (!defined.Contains(_outputName)) throw new LoupeException($"{_source}: output '{_outputName}' is never computed");
            }
        }
        catch
        {
            foreach (var t in _constants.Values) t.Dispose();
            throw;
        }

        // Layers: every output of a node that runs per forward, plus node names as aliases.
        _layerToValue = new Dictionary<string, string>(StringComparer.Ordinal);
        var layers = new List<LayerInfo>();
        foreach (var n in _plan)
        {
            var geometry = GeometryOf(n);
            foreach (var o in n.Outputs.Where(o => o.Length > 0))
                if (_layerToValue.TryAdd(o, o)) layers.Add(new LayerInfo(o, n.OpType) { Geometry = geometry });
        }
        var nodeNames = _plan.Where(n => n.Name.Length > 0).GroupBy(n => n.Name).Where(g => g.Count() == 1).Select(g => g.First());
        foreach (var n in nodeNames)
        {
            var first = n.Outputs.FirstOrDefault(o => o.Length > 0);
            if (first is not null && _layerToValue.TryAdd(n.Name, first)) layers.Add(new LayerInfo(n.Name, n.OpType) { Geometry = GeometryOf(n), AliasOf = first });
        }
        foreach (var (path, value, op) in ModulePaths.Of(_plan))   // PyTorch module paths of exported graphs
            if (_layerToValue.TryAdd(path, value)) layers.Add(new LayerInfo(path, $"module ({op}) = {value}") { AliasOf = value, IsModule = true });
        Layers = layers;
        BuildFusedPlan();

        // Parameters: initializers by name, plus "<layer>.weight"/".bias" for Conv, ConvTranspose and Gemm (the
        // tensor as stored in the file), "<layer>.weight/.bias/.running_mean/.running_var" for BatchNormalization.
        foreach (var n in nodes)
        {
            string[] roles = n.OpType switch
            {
                "Conv" or "ConvTranspose" or "Gemm" => ["", "weight", "bias"],
                "BatchNormalization" => ["", "weight", "bias", "running_mean", "running_var"],
                _ => [],
            };
            var names = new[] { n.Name, n.Outputs.FirstOrDefault() ?? "" }.Where(s => s.Length > 0).Distinct();
            for (int r = 1; r < roles.Length && r < n.Inputs.Length; r++)
                if (n.Inputs[r].Length > 0 && _constants.TryGetValue(n.Inputs[r], out var p))
                    foreach (var name in names)
                        if (_parameters.TryAdd($"{name}.{roles[r]}", p)) _parameterValue[$"{name}.{roles[r]}"] = n.Inputs[r];
        }
        NameLinearWeights(nodes);

        DefaultInput = input;
        _inputDims = inputDims;
    }

    /// <summary>Builds the interpreter over a checked file and test-runs it once on zeros (so shape errors surface at load).</summary>
    public static OnnxModel Create(OnnxFile file, OnnxOptions options)
    {
        file.CheckUnbatchedInputs();
        var (spec, dims) = file.InputSpecFor(options);
        var side = SideInputStore.Create(file, spec, options);
        OnnxModel model;
        try { model = new OnnxModel(file, spec, dims, options.Output, options.FlattenOutput, side) { Layout = options.Layout }; }
        catch
        {
            side.Dispose();
            throw;
        }
        try
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            model.Forward(zeros(1, spec.Channels, spec.Height, spec.Width));
            if (model._batchIsOne) model._batchIsOne = !model.RunsBatched(spec);
            return model;
        }
        catch (Exception e) when (e is not LoupeException and not OutOfMemoryException)
        {
            model.Dispose();
            throw new LoupeException($"{file.Source}: the test forward on zeros failed: {e.Message.Split('\n')[0]}", e);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Whether a larger batch runs as rows of one, in step (<see cref="ForwardImages"/>): a graph that takes one
    /// unbatched image, or one exported for a batch of one whose batched run does not give its rows' results.</summary>
    public bool RowByRow => _unbatched || _batchIsOne;

    /// <summary>Whether the graph takes one C×H×W image without a batch dimension (torchvision's detectors as exported).</summary>
    public bool Unbatched => _unbatched;

    /// <summary>The model file (for messages).</summary>
    public string Source => _source;

    /// <summary>For a graph exported for a batch of one: whether it runs a batch of two as it runs each row (a CNN
    /// whose Flatten and Gemm take any batch does; a ViT whose reshapes have the 1 written in does not — it fails or
    /// mixes the rows). Tested at load on two different seeded inputs; graphs with If or Loop stay row by row.</summary>
    bool RunsBatched(InputSpec spec)
    {
        if (_plan.Any(n => n.OpType is "If" or "Loop")) return false;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = rand(2, spec.Channels, spec.Height, spec.Width, generator: new Generator(20261206)) * 2 - 1;
        Tensor rows;
        try { rows = Forward(x); }
        catch (LoupeException) { return false; }   // two rows are over the memory budget: rows of one, each within it
        _batchIsOne = false;
        try
        {
            var batched = Forward(x);
            if (!batched.shape.SequenceEqual(rows.shape)) return false;
            double scale = Math.Max(1e-6, rows.abs().max().item<float>());
            return (batched - rows).abs().max().item<float>() <= 1e-4 * scale;
        }
        catch (Exception e) when (e is not OutOfMemoryException) { return false; }
        finally { _batchIsOne = true; }
    }

    static LayerGeometry? GeometryOf(OnnxNode n)
    {
        if (n.OpType is not ("Conv" or "MaxPool" or "AveragePool")) return null;
        var k = n.Ints("kernel_shape");
        if (k is null || k.Length != 2) return null;
        var s = n.Ints("strides") ?? [1, 1];
        var d = n.Ints("dilations") ?? [1, 1];
        var p = n.String("auto_pad", "NOTSET") is "NOTSET" or "" ? n.Ints("pads") ?? [0, 0, 0, 0] : [0, 0, 0, 0];
        return new LayerGeometry(k.Select(v => (int)v).ToArray(), s.Select(v => (int)v).ToArray(), p.Take(2).Select(v => (int)v).ToArray(), d.Select(v => (int)v).ToArray());
    }

    /// <inheritdoc/>
    public ModelCapabilities Capabilities => ModelCapabilities.Forward | ModelCapabilities.LayerActivations | ModelCapabilities.Gradients | ModelCapabilities.Parameters
        | ModelCapabilities.Interventions | ModelCapabilities.ReluOverride | ModelCapabilities.Graph;
    /// <inheritdoc/>
    public InputSpec DefaultInput { get; }
    /// <inheritdoc/>
    public IReadOnlyList<string>? DefaultLabels => null;
    /// <inheritdoc/>
    public IReadOnlyList<LayerInfo> Layers { get; }
    /// <inheritdoc/>
    public IReadOnlyList<string> ParameterNames => _parameters.Keys.ToList();
    /// <summary>Memory layout of 4-D image batches (<see cref="OnnxLayout"/>).</summary>
    public OnnxLayout Layout { get; init; } = OnnxLayout.Auto;

    /// <summary>Channels-last strides for the input when <see cref="Layout"/> asks for them (the same values, N×C×H×W
    /// shape; permute → contiguous → permute, as the torchvision backend): convolutions, pools and batch norms then
    /// keep that layout. Differentiable; gradients come back in the input's layout.</summary>
    Tensor Laid(Tensor x) =>
        x.dim() == 4 && x.shape[1] > 1 && !Loupe.Abstractions.Toolkit.TorchNative.Configure() && x.is_floating_point() && Layout switch
        {
            OnnxLayout.Always => true,
            OnnxLayout.Never => false,
            _ => x.shape[0] >= 2,
        } ? x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2) : x;

    /// <summary>Number of nodes evaluated per forward (the rest were folded at load).</summary>
    public int RuntimeNodeCount => _plan.Count;

    static Tensor[] Run(OnnxNode n, Tensor?[] inputs)
    {
        try { return n.Run(n, inputs); }
        catch (LoupeException) { throw; }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            var shapes = string.Join(", ", inputs.Select(t => t is null ? "-" : "(" + string.Join("×", t.shape) + ")"));
            throw n.Error($"failed on inputs {shapes}: {e.Message.Split('\n')[0]}");
        }
    }

    /// <inheritdoc/>
    public Tensor Forward(Tensor input)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        OnnxFile.CheckInput(input, _inputDims, _source);
        Refold();
        LayerCapture[] captures;
        Intervention[] interventions;
        ReluRule? relu;
        double beta;
        lock (_gate) (captures, interventions, relu, beta) = (_captures.ToArray(), _interventions.ToArray(), _reluRule, _reluBeta);
        using var scope = NewDisposeScope();
        _heldPeak = 0;
        var x = input;   // the graph input is a value too: a layer's input may be it
        foreach (var iv in interventions) if (iv.Value == _inputName) x = iv.Transform(x);
        foreach (var c in captures) x = c.OnForward(_inputName, x);
        if (_unbatched || _batchIsOne && x.shape[0] > 1) return scope.MoveToOuter(ForwardImages(x, captures, interventions, relu, beta, scope));
        x = Laid(x);
        var env = new Dictionary<string, Tensor>(_constants, StringComparer.Ordinal) { [_inputName] = x };
        foreach (var name in _side.Names)
        {
            var v = _side.ValueFor(name, x.shape[0]);
            foreach (var iv in interventions) if (iv.Value == name) v = iv.Transform(v);
            foreach (var c in captures) v = c.OnForward(name, v);
            env[name] = v;
        }
        var plan = PlanFor(captures, interventions, relu);
        var release = Releaser.For(this, plan, scope, env, captures, interventions);
        for (int i = 0; i < plan.Count; i++)
        {
            var n = plan[i];
            var outs = Step(n, env, relu, beta);
            for (int k = 0; k < n.Outputs.Length && k < outs.Length; k++)
            {
                var name = n.Outputs[k];
                if (name.Length == 0) continue;
                var o = outs[k];
                foreach (var iv in interventions) if (iv.Value == name) o = iv.Transform(o);
                foreach (var c in captures) o = c.OnForward(name, o);
                env[name] = o;
                release?.Stored(o);
            }
            release?.After(i, env);
        }
        release?.Finish();
        var y = env[_outputName];
        if (y.dim() == 0 || y.numel() == 0) throw new LoupeException($"{_source}: output '{_outputName}' is empty ({string.Join("×", y.shape)}); expected N×K scores");
        y = _flattenOutput && y.dim() > 2 ? y.reshape(y.shape[0], -1) : y.alias();
        return scope.MoveToOuter(y);
    }

    /// <summary>One node's outputs over the values computed so far, under the ReLU rule of the forward.</summary>
    Tensor[] Step(OnnxNode n, Dictionary<string, Tensor> env, ReluRule? relu, double beta)
    {
        var inputs = new Tensor?[n.Inputs.Length];
        for (int i = 0; i < inputs.Length; i++) inputs[i] = n.Inputs[i].Length > 0 ? env[n.Inputs[i]] : null;
        var outs = relu == ReluRule.Rescale && Rescaled(n, inputs) is { } r ? [r] : n.Branches is not null || n.Body is not null ? Evaluate(n, env) : Run(n, inputs);
        if (relu is { } rule && rule != ReluRule.Rescale && n.OpType == "Relu") outs = [OverriddenRelu(rule, beta, inputs[0]!, outs[0])];
        return outs;
    }

    /// <inheritdoc/>
    public ILayerCapture Capture(IReadOnlyCollection<string> layers, bool forGradients)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _captures.Add(new LayerCapture(this, OpenCaptures<LayerCapture>.Resolve(layers, _layerToValue), forGradients));
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _captures.CloseAll();
        foreach (var t in _constants.Values) t.Dispose();
        foreach (var t in _fusedConstants) t.Dispose();
        foreach (var t in _parameterViews) t.Dispose();
        foreach (var t in _branchTensors) t.Dispose();
        _constants.Clear();
        _fusedConstants.Clear();
        _parameterViews.Clear();
        _parameters.Clear();
        _side.Dispose();
    }

    /// <summary>Keeps the outputs of the captured values. TorchSharp has no backward hooks, so for gradients the
    /// output is replaced by a leaf that requires grad (when nothing upstream does): the backward pass then stops at
    /// the layer instead of running down to the input. Same rules as <c>TorchModel</c>'s forward hooks.</summary>
    sealed class LayerCapture : ILayerCapture
    {
        readonly OnnxModel _model;
        readonly ILookup<string, string> _byValue;   // value name → requested layer names
        readonly bool _forGradients;
        readonly CaptureSlots _slots = new();
        readonly object _gate = new();
        bool _disposed;

        public LayerCapture(OnnxModel model, List<(string Layer, string Value)> layers, bool forGradients)
        {
            _model = model;
            _byValue = layers.ToLookup(l => l.Value, l => l.Layer);
            _forGradients = forGradients;
        }

        public Tensor OnForward(string value, Tensor output)
        {
            if (_disposed || !_byValue.Contains(value)) return output;
            foreach (var name in _byValue[value])
                if (_slots.Keep(name, output, _forGradients) is { } replacement) output = replacement;
            return output;
        }

        /// <summary>True when this capture keeps <paramref name="value"/>.</summary>
        public bool Keeps(string value) => !_disposed && _byValue.Contains(value);

        /// <summary>True when this capture keeps one of <paramref name="values"/>.</summary>
        public bool Reads(HashSet<string> values) => !_disposed && _byValue.Any(g => values.Contains(g.Key));

        public Tensor this[string layer] => _slots[layer];

        public bool TryGet(string layer, out Tensor activation) => _slots.TryGet(layer, out activation);

        public void Dispose()
        {
            _model._captures.Remove(this);
            lock (_gate)
            {
                _disposed = true;
                _slots.Dispose();
            }
        }
    }
}
