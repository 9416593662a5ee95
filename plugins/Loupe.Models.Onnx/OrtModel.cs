using Google.Protobuf;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Tensor = TorchSharp.torch.Tensor;
using Onnx;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>An ONNX model run by ONNX Runtime: forward and layer activations, no gradients. Activations come from a
/// copy of the model that declares the captured values as extra graph outputs; one session is cached per set of
/// captured values. The graph's own outputs are values of any numeric type (read as float32: a detector's int64
/// labels); other values are offered as layers when they are float.
/// <para>A graph whose image input is one C×H×W image (torchvision's detectors as torchvision exports them) is run
/// image by image: each of its outputs gains a batch dimension, and outputs whose size differs between the images (a
/// detector's D detections) are padded with zeros to the batch's largest (a zero score and label, a zero box); a
/// captured value keeps its first dimension when it is 1 (the graph's own batch of one, as a backbone's features),
/// else gains one.</para></summary>
public sealed class OrtModel : IModel, IModelSideInputs
{
    SideInputStore _side = null!;
    const int MaxCachedSessions = 8;
    readonly ModelProto _model;
    readonly string _source, _inputName, _outputName;
    readonly long?[] _inputDims;
    readonly bool _flattenOutput, _batchIsOne, _unbatched;
    readonly HashSet<string> _graphOutputs;
    readonly SessionOptions _sessionOptions;
    readonly int _runTimeout;
    readonly long _perImage;   // the most bytes one image costs at one node (OrtGuard.Peak), 0 when none is inferred
    readonly Dictionary<string, string> _layerToValue = new(StringComparer.Ordinal);
    readonly Dictionary<string, InferenceSession> _sessions = new(StringComparer.Ordinal);
    readonly List<string> _sessionOrder = new();
    readonly object _gate = new();
    readonly OpenCaptures<LayerCapture> _captures;
    bool _disposed;

    OrtModel(OnnxFile file, OnnxOptions options)
    {
        _captures = new(_gate);
        OrtNative.EnsureResolver();
        _model = file.Model;
        _source = file.Source;
        _inputName = file.Input.Name;
        _outputName = options.Output ?? _model.Graph.Output[0].Name;
        _flattenOutput = options.FlattenOutput;
        (DefaultInput, _inputDims) = file.InputSpecFor(options);
        _unbatched = file.Unbatched;
        _batchIsOne = _unbatched || OnnxFile.Dims(file.Input)?[0] == 1;
        _graphOutputs = _model.Graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        // Every output shape that can be inferred from the declared input size is held to the memory budget before
        // ONNX Runtime sees the graph (it allocates, and constant-folds at session creation, whatever a node asks for).
        long[] one = [DefaultInput.Channels, DefaultInput.Height, DefaultInput.Width];
        OnnxContrib.CheckForOnnxRuntime(file, options.ContribOperators);
        _runTimeout = options.RunTimeoutS;
        _perImage = OrtGuard.Peak(file, _unbatched ? one : [1, .. one]);
        _sessionOptions = new SessionOptions
        {
            IntraOpNumThreads = options.Threads > 0 ? options.Threads : Math.Max(1, TorchSharp.torch.get_num_threads()),
            InterOpNumThreads = 1,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
        };
        // No spin-waiting after a run: Loupe's steps interleave ORT runs with libtorch work (masks, top-k, maps) on the
        // same cores, and ORT's spinning workers slowed that libtorch work ~2x on 2 cores (docs/benchmarks.md).
        _sessionOptions.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");

        // Layers: node outputs whose element type is float (propagated from initializers, Constant and Cast), so that
        // declaring them as float graph outputs is valid.
        // The graph's outputs are declared with their types already: any numeric one is a layer (read as float32).
        var types = ElementTypes(_model.Graph);
        var layers = new List<LayerInfo>();
        foreach (var n in _model.Graph.Node)
            foreach (var o in n.Output.Where(o => o.Length > 0 && (types.GetValueOrDefault(o) == TensorProto.Types.DataType.Float || _graphOutputs.Contains(o) && Numeric(_model.Graph.Output.First(v => v.Name == o)))))
                if (_layerToValue.TryAdd(o, o)) layers.Add(new LayerInfo(o, n.OpType));
        foreach (var g in _model.Graph.Node.Where(n => n.Name.Length > 0).GroupBy(n => n.Name).Where(g => g.Count() == 1))
        {
            var n = g.First();
            var first = n.Output.FirstOrDefault(o => o.Length > 0);
            if (first is not null && _layerToValue.ContainsKey(first) && _layerToValue.TryAdd(n.Name, first)) layers.Add(new LayerInfo(n.Name, n.OpType) { AliasOf = first });
        }
        // PyTorch module paths (layer4, features.7), as the onnx backend resolves them, where the module's output is a layer.
        foreach (var (path, value, op) in ModulePaths.Of(_model.Graph.Node.Select((n, i) => new OnnxNode(n, file.Opset, _source, i))))
            if (_layerToValue.ContainsKey(value) && _layerToValue.TryAdd(path, value)) layers.Add(new LayerInfo(path, $"module ({op}) = {value}") { AliasOf = value, IsModule = true });
        Layers = layers;
    }

    /// <summary>Creates the main session (so a model ONNX Runtime cannot run fails at load) and test-runs it on zeros.</summary>
    public static OrtModel Create(OnnxFile file, OnnxOptions options)
    {
        file.CheckUnbatchedInputs();
        var m = new OrtModel(file, options);
        try
        {
            m._side = SideInputStore.Create(file, m.DefaultInput, options);
            using var scope = NewDisposeScope();
            m.Forward(zeros(1, m.DefaultInput.Channels, m.DefaultInput.Height, m.DefaultInput.Width));
            return m;
        }
        catch
        {
            m.Dispose();
            throw;
        }
    }

    /// <summary>Whether a graph output is declared with an element type ONNX Runtime's results can be read as float32
    /// from (floating, integer or bool).</summary>
    static bool Numeric(ValueInfoProto v) => (TensorProto.Types.DataType)(v.Type?.TensorType?.ElemType ?? 0) is
        TensorProto.Types.DataType.Float or TensorProto.Types.DataType.Double or TensorProto.Types.DataType.Float16
        or TensorProto.Types.DataType.Int64 or TensorProto.Types.DataType.Int32 or TensorProto.Types.DataType.Int16
        or TensorProto.Types.DataType.Int8 or TensorProto.Types.DataType.Uint8 or TensorProto.Types.DataType.Uint16
        or TensorProto.Types.DataType.Uint32 or TensorProto.Types.DataType.Uint64 or TensorProto.Types.DataType.Bool;

    /// <summary>Element types of values, propagated through the graph (unknown ops: the type of their first input).</summary>
    static Dictionary<string, TensorProto.Types.DataType> ElementTypes(GraphProto g)
    {
        var t = new Dictionary<string, TensorProto.Types.DataType>(StringComparer.Ordinal);
        foreach (var i in g.Input) t[i.Name] = (TensorProto.Types.DataType)(i.Type?.TensorType?.ElemType ?? 1);
        foreach (var i in g.Initializer) t[i.Name] = (TensorProto.Types.DataType)i.DataType;
        foreach (var n in g.Node)
        {
            var first = n.Input.Count > 0 && t.TryGetValue(n.Input[0], out var ft) ? ft : TensorProto.Types.DataType.Float;
            var attr = n.Attribute.GroupBy(a => a.Name).ToDictionary(a => a.Key, a => a.First());   // (a file may repeat a name: found by tools/Loupe.Fuzz)
            TensorProto.Types.DataType type = n.OpType switch
            {
                "Shape" or "Size" or "ArgMax" or "ArgMin" or "NonZero" => TensorProto.Types.DataType.Int64,
                "Equal" or "Less" or "Greater" or "LessOrEqual" or "GreaterOrEqual" or "Not" or "And" or "Or" or "Xor" or "IsNaN" or "IsInf" => TensorProto.Types.DataType.Bool,
                "Cast" => (TensorProto.Types.DataType)(attr.TryGetValue("to", out var to) ? to.I : 1),
                "Constant" => attr.TryGetValue("value", out var v) && v.T is not null ? (TensorProto.Types.DataType)v.T.DataType
                    : attr.ContainsKey("value_int") || attr.ContainsKey("value_ints") ? TensorProto.Types.DataType.Int64 : TensorProto.Types.DataType.Float,
                "ConstantOfShape" => attr.TryGetValue("value", out var cv) && cv.T is not null ? (TensorProto.Types.DataType)cv.T.DataType : TensorProto.Types.DataType.Float,
                "Where" => n.Input.Count > 1 && t.TryGetValue(n.Input[1], out var wt) ? wt : TensorProto.Types.DataType.Float,
                _ => first,
            };
            for (int k = 0; k < n.Output.Count; k++)
                if (n.Output[k].Length > 0)
                    t[n.Output[k]] = n.OpType is "TopK" or "MaxPool" && k == 1 ? TensorProto.Types.DataType.Int64
                        : n.OpType == "Dropout" && k == 1 ? TensorProto.Types.DataType.Bool : type;
        }
        return t;
    }

    /// <inheritdoc/>
    public IReadOnlyList<ModelInput> Inputs => _side.Inputs;
    /// <inheritdoc/>
    public IReadOnlyDictionary<string, Tensor> Read(IReadOnlyList<string> ids) => _side.Read(ids);
    /// <inheritdoc/>
    public IReadOnlyDictionary<string, Tensor> Active => _side.Active;
    /// <inheritdoc/>
    public IDisposable Use(IReadOnlyDictionary<string, Tensor> values) => _side.Use(values);

    /// <inheritdoc/>
    public ModelCapabilities Capabilities => ModelCapabilities.Forward | ModelCapabilities.LayerActivations;
    /// <inheritdoc/>
    public InputSpec DefaultInput { get; }
    /// <inheritdoc/>
    public IReadOnlyList<string>? DefaultLabels => null;
    /// <inheritdoc/>
    public IReadOnlyList<LayerInfo> Layers { get; }
    /// <inheritdoc/>
    public Tensor? GetParameter(string name) => null;
    /// <inheritdoc/>
    public IReadOnlyList<string> ParameterNames => [];

    InferenceSession Session(IReadOnlyCollection<string> extraOutputs)
    {
        var key = string.Join("\n", extraOutputs.Order(StringComparer.Ordinal));
        lock (_gate)
        {
            if (_sessions.TryGetValue(key, out var s))
            {
                _sessionOrder.Remove(key);
                _sessionOrder.Add(key);
                return s;
            }
            var model = _model;
            var declared = _model.Graph.Output.Select(o => o.Name).ToHashSet();
            if (extraOutputs.Count > 0 || !declared.Contains(_outputName))
            {
                model = _model.Clone();
                foreach (var name in extraOutputs.Append(_outputName).Where(n => !declared.Contains(n)).Distinct())
                    model.Graph.Output.Add(new ValueInfoProto
                    {
                        Name = name,
                        Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float } },
                    });
            }
            try { s = new InferenceSession(model.ToByteArray(), _sessionOptions); }
            catch (OnnxRuntimeException e) { throw new LoupeException($"{_source}: ONNX Runtime cannot load the model: {e.Message}", e); }
            _sessions[key] = s;
            _sessionOrder.Add(key);
            if (_sessionOrder.Count > MaxCachedSessions)
            {
                var oldest = _sessionOrder[0];
                _sessionOrder.RemoveAt(0);
                _sessions.Remove(oldest, out var old);
                old?.Dispose();
            }
            return s;
        }
    }

    /// <summary>Runs ONNX Runtime on one batch, returning the named outputs as TorchSharp tensors.</summary>
    Dictionary<string, Tensor> RunOrt(InferenceSession session, Tensor x, IReadOnlyDictionary<string, Tensor> side, IReadOnlyList<string> outputs)
    {
        var dims = x.shape.Select(d => (int)d).ToArray();
        var dense = new DenseTensor<float>(x.ToArray<float>(), dims);
        var inputs = new List<NamedOnnxValue> { NamedOnnxValue.CreateFromTensor(_inputName, dense) };
        foreach (var (name, v) in side)
            inputs.Add(NamedOnnxValue.CreateFromTensor(name, new DenseTensor<float>(v.ToArray<float>(), v.shape.Select(d => (int)d).ToArray())));
        IDisposableReadOnlyCollection<DisposableNamedOnnxValue> results;
        // A run that does not end (a hostile Loop whose condition stays true: ONNX Runtime bounds nothing) is stopped
        // after run_timeout_s by ONNX Runtime's terminate flag, which every kernel loop polls.
        using var run = new RunOptions();
        var gate = new object();
        bool done = false, stopped = false;
        using var watchdog = _runTimeout > 0
            ? new Timer(_ => { lock (gate) if (!done) { stopped = true; run.Terminate = true; } }, null, TimeSpan.FromSeconds(_runTimeout), Timeout.InfiniteTimeSpan)
            : null;
        try { results = session.Run(inputs, outputs, run); }
        catch (OnnxRuntimeException e)
        {
            lock (gate) done = true;
            if (stopped) throw new LoupeException($"{_source}: ONNX Runtime's run took longer than {_runTimeout} s and was stopped (a Loop that does not end?); option run_timeout_s sets the limit", e);
            throw new LoupeException($"{_source}: ONNX Runtime failed on an input of shape ({string.Join("×", x.shape)}): {e.Message}", e);
        }
        lock (gate) done = true;
        using (results)
        {
            var map = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            foreach (var r in results) map[r.Name] = ToFloat(r);
            return map;
        }
    }

    /// <summary>One result as a float32 tensor, whatever its numeric element type.</summary>
    Tensor ToFloat(DisposableNamedOnnxValue r)
    {
        static Tensor Read<T>(DisposableNamedOnnxValue r, Func<T, float> convert)
        {
            var t = r.AsTensor<T>();
            var data = t is DenseTensor<T> d ? d.Buffer.Span : t.ToArray();
            var values = new float[data.Length];
            for (int i = 0; i < values.Length; i++) values[i] = convert(data[i]);
            return tensor(values, t.Dimensions.ToArray().Select(v => (long)v).ToArray());
        }
        if (r.ElementType == TensorElementType.Float)
        {
            // One block copy, from ONNX Runtime's buffer straight into the tensor (no managed array between: a large
            // output was held three times on its way out, found by tools/Loupe.Fuzz's onnx-runtime target).
            var t = r.AsTensor<float>();
            var shape = t.Dimensions.ToArray().Select(v => (long)v).ToArray();
            return t is DenseTensor<float> d ? TensorData.FromSpan<float>(d.Buffer.Span, shape) : TensorData.FromSpan<float>(t.ToArray(), shape);
        }
        return r.ElementType switch
        {
            TensorElementType.Double => Read<double>(r, v => (float)v),
            TensorElementType.Float16 => Read<Float16>(r, v => (float)v),
            TensorElementType.Int64 => Read<long>(r, v => v),
            TensorElementType.Int32 => Read<int>(r, v => v),
            TensorElementType.Int16 => Read<short>(r, v => v),
            TensorElementType.Int8 => Read<sbyte>(r, v => v),
            TensorElementType.UInt8 => Read<byte>(r, v => v),
            TensorElementType.UInt16 => Read<ushort>(r, v => v),
            TensorElementType.UInt32 => Read<uint>(r, v => v),
            TensorElementType.UInt64 => Read<ulong>(r, v => v),
            TensorElementType.Bool => Read<bool>(r, v => v ? 1f : 0f),
            var other => throw new LoupeException($"{_source}: output '{r.Name}' has element type {other}, which Loupe cannot read as numbers"),
        };
    }

    /// <inheritdoc/>
    public Tensor Forward(Tensor input)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        OnnxFile.CheckInput(input, _inputDims, _source);
        LayerCapture[] captures;
        lock (_gate) captures = _captures.ToArray();
        var values = captures.SelectMany(c => c.Values).Distinct().ToList();
        var session = Session(values);
        var outputs = values.Append(_outputName).Distinct().ToList();
        using var scope = NewDisposeScope();
        var x = input.detach().to(ScalarType.Float32).cpu().contiguous();
        Dictionary<string, Tensor> result;
        long n = x.shape[0];
        var side = _side.Names.ToDictionary(name => name, name => _side.ValueFor(name, n).detach().to(ScalarType.Float32).cpu().contiguous());
        if (_unbatched)
        {
            // One C×H×W image per run; each value batched (see the class comment), then padded to the batch's largest.
            var parts = Enumerable.Range(0, (int)n).Select(i => RunOrt(session, x[i].contiguous(), side, outputs)).ToList();   // no side inputs (Create)
            result = outputs.ToDictionary(o => o, o =>
            {
                var values = parts.Select(p => p[o]).ToList();
                return Padded.Batch(values, Padded.AddsBatch(values, _graphOutputs.Contains(o)), _source);
            });
        }
        else if (n > 1 && (_batchIsOne || _perImage > 0 && _perImage * n > OnnxNode.MaxOutputBytes))
        {
            // The model fixes batch 1, or a node's output for the whole batch would be over the memory budget (found by
            // tools/Loupe.Fuzz: ONNX Runtime's Tile, at 290 MB per image, grew the process by 2.4 GB for two): runs
            // of as many rows as the budget holds, one row when the model fixes it.
            long rows = _batchIsOne ? 1 : Math.Max(1, OnnxNode.MaxOutputBytes / _perImage);
            var parts = new List<Dictionary<string, Tensor>>();
            for (long i = 0; i < n; i += rows)
            {
                long k = Math.Min(rows, n - i);
                parts.Add(RunOrt(session, x.narrow(0, i, k).contiguous(), side.ToDictionary(kv => kv.Key, kv => kv.Value.narrow(0, i, k).contiguous()), outputs));
            }
            result = outputs.ToDictionary(o => o, o => parts.Count == 1 ? parts[0][o] : cat(parts.Select(p => p[o]).ToArray(), 0));
        }
        else result = RunOrt(session, x, side, outputs);
        foreach (var c in captures) c.Keep(result);
        var y = result[_outputName];
        if (y.numel() == 0)   // (found by tools/Loupe.Fuzz: a Resize by a scale of 1e-38 to nothing; libtorch cannot flatten it)
            throw new LoupeException($"{_source}: the model's output '{_outputName}' is empty ({string.Join("×", y.shape)}) for an input of shape ({string.Join("×", x.shape)})");
        y = _flattenOutput && y.dim() > 2 ? y.reshape(y.shape[0], -1) : y.alias();
        return scope.MoveToOuter(y);
    }

    /// <inheritdoc/>
    public ILayerCapture Capture(IReadOnlyCollection<string> layers, bool forGradients)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (forGradients) throw new LoupeException("backend 'onnx-runtime' computes no gradients; use the 'onnx' backend for gradient techniques");
        return _captures.Add(new LayerCapture(this, OpenCaptures<LayerCapture>.Resolve(layers, _layerToValue)));
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _captures.CloseAll();
        lock (_gate)
        {
            foreach (var s in _sessions.Values) s.Dispose();
            _sessions.Clear();
        }
        _sessionOptions.Dispose();
        _side?.Dispose();
    }

    sealed class LayerCapture(OrtModel model, List<(string Layer, string Value)> layers) : ILayerCapture
    {
        readonly CaptureSlots _slots = new();

        public IEnumerable<string> Values => layers.Select(l => l.Value);

        public void Keep(Dictionary<string, Tensor> result)
        {
            foreach (var (layer, value) in layers) _slots.Put(layer, result[value].clone());
        }

        public Tensor this[string layer] => _slots[layer];

        public bool TryGet(string layer, out Tensor activation) => _slots.TryGet(layer, out activation);

        public void Dispose()
        {
            model._captures.Remove(this);
            _slots.Dispose();
        }
    }
}
