using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Core;
using static TorchSharp.torch;

namespace Loupe;

/// <summary>A model loaded in-process with the plugins that explain it: the library's entry point.
/// <code>
/// using var model = LoupeModel.Load("torchvision", new { architecture = "resnet18", weights = "r18.safetensors" });
/// var cam = model.Explain("grad-cam", "cat.png", new { layer = "layer4" });
/// File.WriteAllBytes("cam.png", cam.Overlay().ToPng());
/// </code>
/// Every call goes through the host a pipeline file goes through (the same binder, validation, targets, memory budget and
/// data source), so a map from here equals the map <c>loupe run</c> writes for the same step. Calls on one model are
/// serialised (a model runs one thing at a time); use one <see cref="LoupeModel"/> per thread for parallel work.</summary>
public sealed partial class LoupeModel : IDisposable
{
    /// <summary>Name the generated pipelines carry in error messages (relative paths resolve against its folder).</summary>
    public const string VirtualFileName = "loupe-library.yaml";
    static readonly JsonSerializerOptions Snake = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    readonly PreparedRun _loaded; // a run without steps: the registry, the model, its input spec and labels
    readonly string _header;      // version, name, seed, model and settings sections of every generated pipeline
    readonly LoupeSettings _settings;
    readonly string _file;
    readonly object _gate = new();
    bool _disposed;

    LoupeModel(PreparedRun loaded, string header, LoupeSettings settings, string file)
    {
        _loaded = loaded; _header = header; _settings = settings; _file = file;
    }

    /// <summary>Loads a model through the backend plugin <paramref name="backend"/> (e.g. <c>torchvision</c>, <c>onnx</c>,
    /// <c>onnx-runtime</c>) with its options (an anonymous object or dictionary, keys as in YAML: <c>weights</c>,
    /// <c>num_classes</c> or <c>NumClasses</c>). Throws <see cref="LoupeValidationException"/> with every problem found.</summary>
    public static LoupeModel Load(string backend, object? options = null, LoupeSettings? settings = null)
    {
        settings ??= new LoupeSettings();
        var baseDir = Path.GetFullPath(settings.BaseDirectory ?? Environment.CurrentDirectory);
        var file = Path.Combine(baseDir, VirtualFileName);
        var h = new StringBuilder("version: 1\nname: library\n");
        h.Append("seed: ").Append(settings.Seed).Append('\n');
        h.Append("model:\n  uses: ").Append(Json(backend)).Append('\n');
        if (options is not null) h.Append("  with: ").Append(Json(options)).Append('\n');
        if (settings.Labels is { } labels) h.Append("  labels: ").Append(Json(Path.GetFullPath(Path.Combine(baseDir, labels)))).Append('\n');
        if (settings.Input is { } input) h.Append("  input: ").Append(Json(input)).Append('\n');
        var s = new JsonObject();
        if (settings.Threads > 0) s["threads"] = settings.Threads;
        if (settings.MemoryBudgetMb is { } mb) s["memory_budget_mb"] = mb;
        if (settings.BatchSize is { } bs) s["batch_size"] = bs;
        if (s.Count > 0) h.Append("settings: ").Append(s.ToJsonString()).Append('\n');
        return Open(h.ToString(), file, settings, null);
    }

    /// <summary>Loads the model of a pipeline file as <c>loupe run</c> would (its <c>model</c>, <c>plugins</c>, <c>seed</c> and
    /// <c>settings</c>); its <c>data</c> section is what <see cref="PipelineInputs"/> reads. Its steps are not run.</summary>
    public static LoupeModel FromPipeline(string pipelineFile, LoupeSettings? settings = null)
    {
        PipelineSpec spec;
        try { spec = PipelineParser.Parse(pipelineFile); }
        catch (PipelineException e) { throw new LoupeValidationException(e.Errors); }
        string Emit(Func<string, bool> keep)
        {
            var m = new YamlDotNet.RepresentationModel.YamlMappingNode();
            foreach (var (k, v) in spec.Root.Children)
                if (k is YamlDotNet.RepresentationModel.YamlScalarNode { Value: { } key } && keep(key)) m.Add(k, v);
            if (m.Children.Count == 0) return "";
            var w = new StringWriter();
            new YamlDotNet.RepresentationModel.YamlStream(new YamlDotNet.RepresentationModel.YamlDocument(m)).Save(w, assignAnchors: false);
            var text = w.ToString().TrimEnd();
            return (text.EndsWith("...") ? text[..^3].TrimEnd() : text) + "\n";
        }
        settings = (settings ?? new LoupeSettings()) with { BaseDirectory = spec.BaseDirectory };
        return Open(Emit(k => k is not ("steps" or "data" or "output")), spec.File, settings, spec.Data is null ? null : Emit(k => k == "data"));
    }

    static LoupeModel Open(string header, string file, LoupeSettings settings, string? pipelineData)
    {
        var spec = Parse(header, file, requireSteps: false);
        ComponentRegistry registry;
        try { registry = ComponentRegistry.Load(settings.PluginDirectories.Select(d => new PluginSource(d)).Concat(spec.Plugins), settings.Registrars); }
        catch (PluginPinException e) { throw new LoupeValidationException([new(file, e.Entry.Line, e.Entry.Column, e.Message)]); }
        catch (LoupeException e) when (e is not LoupeValidationException) { throw new LoupeValidationException([new(file, 0, 0, e.Message)]); }
        try { return new LoupeModel(PipelineRunner.PrepareWith(spec, registry, [], [], null), header, settings, file) { _pipelineData = pipelineData }; }
        catch (PipelineException e) { registry.Dispose(); throw new LoupeValidationException(e.Errors); }
        catch { registry.Dispose(); throw; }
    }

    string? _pipelineData;

    /// <summary>The first <paramref name="max"/> inputs of the pipeline's data source (<see cref="FromPipeline"/>): ids,
    /// model-ready input (1×C×H×W, normalised, for <see cref="Explain(string, NdArray, object?, object?, CancellationToken)"/>)
    /// and the picture.</summary>
    public IReadOnlyList<(string Id, NdArray Input, RgbImage Picture)> PipelineInputs(int max, CancellationToken cancellation = default) =>
        _pipelineData is null ? [] : ReadData(_pipelineData, max, cancellation);

    /// <summary>Images as the model sees them: decoded, resized and normalised by the <c>image-folder</c> source (as in
    /// <see cref="Explain(string, ImageInput, object?, object?, CancellationToken)"/>), with the resized picture.</summary>
    public IReadOnlyList<(string Id, NdArray Input, RgbImage Picture)> Preprocess(IReadOnlyList<ImageInput> images, CancellationToken cancellation = default)
    {
        using var folder = ImageFolder(images);
        return ReadData(folder.Data, int.MaxValue, cancellation);
    }

    List<(string Id, NdArray Input, RgbImage Picture)> ReadData(string dataSection, int max, CancellationToken cancellation)
    {
        var result = new List<(string, NdArray, RgbImage)>();
        if (max <= 0) return result;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            using var run = Prepare(_header + dataSection, requireSteps: false);
            foreach (var b in run.Data!.Read(run.Input, run.Spec.BatchSize, cancellation))
                using (b)
                using (NewDisposeScope())
                {
                    var x = run.Data.Preprocessed ? b.Pixels : run.Input.Normalize(b.Pixels);
                    var px = run.Data.Preprocessed ? run.Input.Denormalize(b.Pixels) : b.Pixels;
                    for (int i = 0; i < b.Ids.Length && result.Count < max; i++)
                        result.Add((b.Ids[i], NdArray.FromTensor(x[i..(i + 1)]), Display.Image(px[i])));
                    if (result.Count >= max) break;
                }
        }
        return result;
    }

    /// <summary>The model's layers (names as techniques take them in <c>layer:</c>).</summary>
    public IReadOnlyList<LayerInfo> Layers => _loaded.Model.Layers;
    /// <summary>The layers with their output shapes for one input (one probe forward), as <c>loupe layers</c> lists them.</summary>
    public IReadOnlyList<LayerRow> LayerShapes()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return Inspector.Layers(_loaded.Model, _loaded.Input);
        }
    }

    /// <summary>Preprocessing: channels, size, mean and std.</summary>
    public InputSpec Input => _loaded.Input;
    /// <summary>Class names (empty when the model has none and no labels file was given).</summary>
    public IReadOnlyList<string> Labels => _loaded.Labels;
    /// <summary>Warnings from loading (e.g. labels that do not match the outputs).</summary>
    public IReadOnlyList<string> Warnings => _loaded.Warnings;
    /// <summary>The loaded model, for code that drives it directly (forward passes, layer captures).</summary>
    public IModel Model => _loaded.Model;

    /// <summary>Every registered technique (analysis plugin) with its description and options.</summary>
    public IReadOnlyList<Technique> Techniques =>
        _loaded.Registry.Components.Where(c => c.Kind == ComponentKind.Analysis).OrderBy(c => c.Id, StringComparer.Ordinal)
            .Select(NewTechnique).ToList();

    /// <summary>A handle to one technique; an unknown id throws with the ids that come closest.</summary>
    public Technique Technique(string id) => NewTechnique(_loaded.Registry.Find(ComponentKind.Analysis, id)
        ?? throw new LoupeValidationException([new(_file, 0, 0, _loaded.Registry.Unknown(ComponentKind.Analysis, id))]));

    Technique NewTechnique(ComponentDescriptor d) => new(this, d, _loaded.Registry.Create<IAnalysis>(d.Id).Requirements);

    /// <summary>Explains one image. <paramref name="options"/> are the technique's <c>with:</c> (anonymous object or
    /// dictionary); <paramref name="target"/> is what a pipeline step's <c>target:</c> holds — an id (<c>"top-1"</c>)
    /// or a one-key object (<c>new { @class = "sneaker" }</c>); null explains the top-1 class.</summary>
    public Explanation Explain(string technique, ImageInput image, object? options = null, object? target = null, CancellationToken cancellation = default) =>
        Explain(technique, [image], options, target, cancellation);

    /// <summary>Explains several images in batches (ids must differ).</summary>
    public Explanation Explain(string technique, IReadOnlyList<ImageInput> images, object? options = null, object? target = null, CancellationToken cancellation = default)
    {
        using var folder = ImageFolder(images);
        return RunStep(technique, folder.Data, images.Select(i => i.Id).ToList(), options, target, cancellation);
    }

    /// <summary>Explains a batch that is already model input (N×C×H×W, normalised, as an <c>npy</c> data source reads it).
    /// Input ids are the row numbers <c>00000</c>, <c>00001</c>, ...</summary>
    public Explanation Explain(string technique, NdArray input, object? options = null, object? target = null, CancellationToken cancellation = default)
    {
        using var folder = NpyFolder(input);
        var ids = Enumerable.Range(0, (int)input.Shape[0]).Select(i => i.ToString("D5")).ToList();
        return RunStep(technique, folder.Data, ids, options, target, cancellation);
    }

    /// <summary>As <see cref="Explain(string, NdArray, object?, object?, CancellationToken)"/>, with each row's
    /// ground-truth class in <paramref name="labels"/> (the data's labels: <c>target: "label"</c> explains them, as
    /// Quantus's <c>y_batch</c> and Captum's <c>target=labels</c>; predictions record them).</summary>
    public Explanation Explain(string technique, NdArray input, IReadOnlyList<long> labels, object? options = null, object? target = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(labels);
        using var folder = NpyFolder(input, labels);
        var ids = Enumerable.Range(0, (int)input.Shape[0]).Select(i => i.ToString("D5")).ToList();
        return RunStep(technique, folder.Data, ids, options, target, cancellation);
    }

    /// <summary>As <see cref="Explain(string, NdArray, object?, object?, CancellationToken)"/>, reporting the technique's
    /// progress (a fraction in [0,1] and an optional message, as <c>loupe run</c> draws it) to <paramref name="progress"/>.
    /// Cancelling <paramref name="cancellation"/> stops the computation (<see cref="OperationCanceledException"/>); the
    /// model stays usable.</summary>
    public Explanation Explain(string technique, NdArray input, object? options, object? target, IProgress<ExplainProgress> progress, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(progress);
        using var folder = NpyFolder(input);
        var ids = Enumerable.Range(0, (int)input.Shape[0]).Select(i => i.ToString("D5")).ToList();
        return RunStep(technique, folder.Data, ids, options, target, cancellation, new ProgressObserver(progress));
    }

    sealed class ProgressObserver(IProgress<ExplainProgress> progress) : IRunObserver
    {
        public void StepProgress(string stepId, double fraction, string? message) => progress.Report(new ExplainProgress(fraction, message));
    }

    /// <summary>The <paramref name="k"/> largest outputs of one image with softmax probabilities.</summary>
    public IReadOnlyList<Prediction> Predict(ImageInput image, int k = 5) => Predict([image], k)[0];

    /// <summary>The <paramref name="k"/> largest outputs of each image with softmax probabilities (over the output row).</summary>
    public IReadOnlyList<IReadOnlyList<Prediction>> Predict(IReadOnlyList<ImageInput> images, int k = 5, CancellationToken cancellation = default)
    {
        using var folder = ImageFolder(images);
        return Predict(folder.Data, k, cancellation);
    }

    /// <summary>The <paramref name="k"/> largest outputs of each row of a preprocessed N×C×H×W batch.</summary>
    public IReadOnlyList<IReadOnlyList<Prediction>> Predict(NdArray input, int k = 5, CancellationToken cancellation = default)
    {
        using var folder = NpyFolder(input);
        return Predict(folder.Data, k, cancellation);
    }

    IReadOnlyList<IReadOnlyList<Prediction>> Predict(string dataSection, int k, CancellationToken cancellation)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        var result = new List<IReadOnlyList<Prediction>>();
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            using var run = Prepare(_header + dataSection, requireSteps: false);
            // The host's batches: normalised input and, for a model with side inputs, the batch's side inputs active.
            foreach (var b in AnalysisContext.Read(run, run.Spec.BatchSize, cancellation))
                using (var scope = NewDisposeScope())
                using (no_grad())
                {
                    var y = run.Model.Forward(b.Input);
                    if (y.dim() != 2) throw new LoupeException($"Predict needs an N×K output; this model gives ({string.Join("×", y.shape)})");
                    var n = Math.Min(k, (int)y.shape[1]);
                    var (top, idx) = y.softmax(1).topk(n, 1);
                    var logits = y.gather(1, idx);
                    for (int r = 0; r < b.Ids.Length; r++)
                        result.Add(Enumerable.Range(0, n).Select(j =>
                        {
                            var c = (int)idx[r, j].item<long>();
                            return new Prediction(c, c < run.Labels.Count ? run.Labels[c] : $"class {c}", top[r, j].item<float>(), logits[r, j].item<float>());
                        }).ToList());
                }
        }
        return result;
    }

    internal Explanation RunStep(string technique, string dataSection, IReadOnlyList<string> ids, object? options, object? target, CancellationToken cancellation, IRunObserver? observer = null)
    {
        var step = new StringBuilder("steps:\n  - id: ").Append(System.Text.RegularExpressions.Regex.IsMatch(technique, "^[A-Za-z0-9][A-Za-z0-9_.-]*$") ? technique : "explain")
            .Append("\n    uses: ").Append(Json(technique)).Append('\n');
        if (options is not null) step.Append("    with: ").Append(Json(options)).Append('\n');
        if (target is not null) step.Append("    target: ").Append(Json(target)).Append('\n');
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            using var run = Prepare(_header + dataSection + step, requireSteps: true);
            return RunPrepared(run, run.Steps[0], technique, ids, observer, cancellation);
        }
    }

    /// <summary>Runs one prepared step of <paramref name="run"/> on a step worker, as a pipeline run does (same thread
    /// settings, same numbers); its result, or the step's error as a <see cref="LoupeException"/> naming
    /// <paramref name="technique"/>.</summary>
    static Explanation RunPrepared(PreparedRun run, PreparedStep prepared, string technique, IReadOnlyList<string> ids, IRunObserver? observer, CancellationToken cancellation)
    {
        var sink = new MemorySink();
        var warnings = new List<string>();
        using var stepCancellation = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        var context = new AnalysisContext(run, prepared, sink, stepCancellation.Token, observer, warnings);
        var outcome = StepThread.Run(() => PipelineRunner.RunStepBody(run, prepared, context), stepCancellation, null, cancellation);
        if (outcome.Status == "cancelled") throw new OperationCanceledException(outcome.Error, cancellation);
        if (outcome.Status != "succeeded") throw new LoupeException($"{technique}: {outcome.Error}", outcome.Exception);
        return new Explanation(technique, ids, sink.Artifacts, sink.Metrics, [.. run.Warnings, .. warnings]);
    }

    PreparedRun Prepare(string text, bool requireSteps)
    {
        var spec = Parse(text, _file, requireSteps);
        PreparedRun run;
        try { run = PipelineRunner.PrepareWith(spec, _loaded.Registry, [], [], null, preloaded: _loaded.Model); }
        catch (PipelineException e) { throw new LoupeValidationException(e.Errors); }
        run.OwnsRegistry = false;
        return run;
    }

    static PipelineSpec Parse(string text, string file, bool requireSteps)
    {
        try { return PipelineParser.ParseText(text, file, null, requireSteps); }
        catch (PipelineException e) { throw new LoupeValidationException(e.Errors); }
    }

    TempInputs ImageFolder(IReadOnlyList<ImageInput> images)
    {
        if (images.Count == 0) throw new ArgumentException("no images to explain", nameof(images));
        var dup = images.GroupBy(i => i.Id).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new ArgumentException($"two inputs have the id '{dup.Key}'; give them distinct ids", nameof(images));
        var t = new TempInputs();
        foreach (var i in images) i.WriteTo(t.Folder);
        var with = _settings.ImageOptions is null ? new JsonObject() : JsonSerializer.SerializeToNode(_settings.ImageOptions, Snake) as JsonObject
            ?? throw new ArgumentException("LoupeSettings.ImageOptions must be an object");
        with["path"] = t.Folder;
        t.Data = "data:\n  uses: image-folder\n  with: " + with.ToJsonString() + "\n";
        return t;
    }

    static TempInputs NpyFolder(NdArray input, IReadOnlyList<long>? labels = null, NdArray? masks = null)
    {
        if (input.Shape.Length != 4) throw new ArgumentException($"expected N×C×H×W model input, got shape ({string.Join(",", input.Shape)})", nameof(input));
        if (labels is not null && labels.Count != input.Shape[0])
            throw new ArgumentException($"{labels.Count} labels for {input.Shape[0]} inputs", nameof(labels));
        // One mask per input at the input's size (the npy source's masks: N×H×W or N×1×H×W).
        long n = input.Shape[0], h = input.Shape[2], w = input.Shape[3];
        if (masks is not null && !(masks.Shape.SequenceEqual([n, h, w]) || masks.Shape.SequenceEqual([n, 1, h, w])))
            throw new ArgumentException($"expected one mask per input ({n}×{h}×{w} or {n}×1×{h}×{w}), got shape ({string.Join(",", masks.Shape)})", nameof(masks));
        var t = new TempInputs();
        var path = Path.Combine(t.Folder, "input.npy");
        File.WriteAllBytes(path, Npy.Encode(input));
        var with = new JsonObject { ["path"] = path };
        if (labels is not null)
        {
            var file = Path.Combine(t.Folder, "labels.npy");
            File.WriteAllBytes(file, Npy.EncodeInt64(labels));
            with["labels"] = file;
        }
        if (masks is not null)
        {
            var file = Path.Combine(t.Folder, "masks.npy");
            File.WriteAllBytes(file, Npy.Encode(masks));
            with["masks"] = file;
        }
        t.Data = "data:\n  uses: npy\n  with: " + with.ToJsonString() + "\n";
        return t;
    }

    /// <summary>JSON is YAML's flow syntax: values become exactly what a user would have typed (strings quoted).</summary>
    static string Json(object value) => JsonSerializer.Serialize(value, value.GetType(), Snake);

    /// <inheritdoc/>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            _loaded.Dispose();
        }
    }

    sealed class TempInputs : IDisposable
    {
        public string Folder { get; } = Directory.CreateTempSubdirectory("loupe-inputs-").FullName;
        public string Data { get; set; } = "";
        public void Dispose()
        {
            try { Directory.Delete(Folder, recursive: true); } catch (IOException) { /* best effort */ } catch (UnauthorizedAccessException) { }
        }
    }
}
