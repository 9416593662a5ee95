using static TorchSharp.torch;

namespace Loupe.Abstractions;

/// <summary>What an analysis needs from the run; the validator checks it before anything runs.</summary>
/// <param name="Capabilities">Model capabilities the analysis uses.</param>
/// <param name="UsesTarget">True when the analysis explains a target (a <c>target:</c> is then allowed).</param>
/// <param name="UsesData">True when the analysis reads the data source.</param>
public sealed record AnalysisRequirements(ModelCapabilities Capabilities, bool UsesTarget = true, bool UsesData = true)
{
    /// <summary>True when the analysis handles models with side inputs (<see cref="IModelSideInputs"/>): it holds each
    /// row's side inputs fixed on the copies it forwards (<see cref="SideInputs.ForRows"/>) and may attribute to them.
    /// The validator refuses the other analyses on such models.</summary>
    public bool HandlesSideInputs { get; init; }
}

/// <summary>Plain-data array result (float32, C-order) — what crosses the plugin boundary, never a live tensor.</summary>
public sealed record NdArray(float[] Data, long[] Shape)
{
    /// <summary>Copies a tensor (any device/dtype) to a float32 array.</summary>
    public static NdArray FromTensor(Tensor t)
    {
        using var c = t.detach().to(ScalarType.Float32).cpu().contiguous();
        return new NdArray(c.ToArray<float>(), c.shape.ToArray());
    }

    /// <summary>A tensor view of the data (owned by the caller).</summary>
    public Tensor ToTensor() => tensor(Data, Shape);
}

/// <summary>An RGB image, 8 bits per channel, row-major, interleaved.</summary>
public sealed record RgbImage(int Width, int Height, byte[] Pixels)
{
    /// <summary>Creates a blank image filled with one grey value.</summary>
    public static RgbImage Blank(int width, int height, byte value = 255)
    {
        var px = new byte[width * height * 3];
        Array.Fill(px, value);
        return new RgbImage(width, height, px);
    }
}

/// <summary>Where an analysis sends its results; the host persists them (atomically) and records them in the manifest.</summary>
public interface IArtifactSink
{
    /// <summary>Raw result as float32 <c>.npy</c>. <paramref name="inputId"/> is null for results about the whole step.</summary>
    void Raw(string name, string? inputId, NdArray array, string? target = null);
    /// <summary>Display image as PNG.</summary>
    void Display(string name, string? inputId, RgbImage image, string? target = null);
    /// <summary>Display image as PNG, with the value range its colours span (recorded in the manifest, e.g. "0 … 0.0123";
    /// figures that show the image, such as comparison.png, print it).</summary>
    void Display(string name, string? inputId, RgbImage image, string? target, string? range) => Display(name, inputId, image, target);
    /// <summary>A figure (a plot, a chart of the step's results) that <paramref name="draw"/> draws: a sink that keeps
    /// pictures draws it now (the default: <see cref="Display(string, string?, RgbImage, string?)"/> of the drawing);
    /// one that keeps them in memory may draw it the first time it is looked at (the library), and one that keeps only
    /// numbers never draws it. Drawing costs a few milliseconds a plot (tens the first time in a process), which on a
    /// small model outweighs the metric it shows. <paramref name="draw"/> must read only what it captured (no tensor
    /// that the step disposes).</summary>
    void Figure(string name, string? inputId, Func<RgbImage> draw, string? target = null) => Display(name, inputId, draw(), target);
    /// <summary>Structured data as JSON.</summary>
    void Json(string name, object value);
    /// <summary>A named scalar metric for the manifest.</summary>
    void Metric(string name, double value);
    /// <summary>Declares the direction of the metric series <paramref name="name"/> (its <c>name_mean</c>/<c>name_std</c>):
    /// shown in the metrics table, metrics.csv and the report. Optional; the default records nothing.</summary>
    void MetricDirection(string name, bool higherIsBetter) { }
}

/// <summary>A batch prepared for a model: normalised input plus pixels for display.</summary>
/// <param name="Ids">Input ids.</param>
/// <param name="Input">Normalised model input N×C×H×W.</param>
/// <param name="Pixels">Display pixels in [0,1], N×C×H×W.</param>
/// <param name="Labels">Ground truth when known.</param>
/// <param name="Masks">Object masks N×1×H×W from the data source, when it has them.</param>
public sealed record InputBatch(string[] Ids, Tensor Input, Tensor Pixels, long[]? Labels, Tensor? Masks = null);

/// <summary>Everything a running analysis may use. Seeds and devices come from here, never globals.</summary>
public interface IAnalysisContext
{
    /// <summary>Step id (also the output folder name).</summary>
    string StepId { get; }
    /// <summary>The model.</summary>
    IModel Model { get; }
    /// <summary>Effective preprocessing.</summary>
    InputSpec Input { get; }
    /// <summary>Class labels (possibly empty).</summary>
    IReadOnlyList<string> Labels { get; }
    /// <summary>The step's target (default top-1).</summary>
    ITarget Target { get; }
    /// <summary>Streams the data source as model-ready batches. Each batch is disposed when the enumeration moves on.</summary>
    IEnumerable<InputBatch> Batches();
    /// <summary>Number of inputs when known.</summary>
    long? InputCount { get; }
    /// <summary>Batch size of the run.</summary>
    int BatchSize { get; }
    /// <summary>Result sink.</summary>
    IArtifactSink Output { get; }
    /// <summary>Seed for this step (derived from the run seed and the step id).</summary>
    int Seed { get; }
    /// <summary>Cancellation of the run.</summary>
    CancellationToken Cancellation { get; }
    /// <summary>Reports progress in [0,1] with a short message.</summary>
    void Progress(double fraction, string? message = null);
    /// <summary>Records a warning in the manifest.</summary>
    void Warn(string message);
    /// <summary>Memory a step may use for batched copies (pipeline <c>settings.memory_budget_mb</c>, default 1 GiB:
    /// <see cref="Toolkit.Explain.DefaultMemoryBudgetBytes"/>);
    /// see <see cref="Explain.CopiesPerForward"/>.</summary>
    long MemoryBudgetBytes { get; }
    /// <summary>Values shared by all steps of one run (same model, same data), e.g. a layer's dataset features, so
    /// that steps reading the same thing do not each re-run the model. Store managed data, never live tensors.</summary>
    IDictionary<string, object> RunCache { get; }
    /// <summary>The part of the dataset this run reads under <c>--shard i/n</c> (null: the whole dataset). Only
    /// <see cref="IShardable"/> steps run on shards; row numbers they write should be dataset rows
    /// (<see cref="ShardInfo.FirstRow"/> + row within the shard).</summary>
    ShardInfo? Shard { get; }
    /// <summary>How the step's heatmaps are drawn: the step's <c>display:</c> over <c>settings.display</c> (null: the
    /// technique's default). Techniques apply it over their own default with <see cref="OverlayStyle.Over"/>.</summary>
    OverlayStyle? OverlayStyle { get; }

    /// <summary>Feeds a layer's activations over the whole dataset to the pass's consumer and returns it. In a host run the
    /// forward pass is shared: every consumer planned by any step (<see cref="IPlansLayerPasses"/>) that is not fed yet
    /// rides along — all layers captured in one forward — and a consumer whose <see cref="LayerPass.Key"/> was already
    /// fed is returned without touching the model. A context without a host runs one standalone pass
    /// (<see cref="Toolkit.Explain.StandaloneLayerPass"/>).</summary>
    ILayerConsumer RunLayerPass(LayerPass pass);

    /// <summary>The step an option of this step names (<c>of: step-id</c>, <c>inner: { uses, with }</c>), as the host
    /// resolved it when it planned the run: id, component, analysis (for <c>of:</c>, the instance that runs that step) and
    /// bound options. References nested in the step's options, and those of a step it links to, resolve here too (a
    /// metric of a noise-tunnel step runs that step's inner method with this context). Throws a
    /// <see cref="LoupeException"/> for a reference the host did not resolve.</summary>
    ReferencedStep Referenced(IStepReference reference);
}

/// <summary>Folds one layer's activations over the dataset, batch by batch, into a small state (a feature matrix, a
/// top-k, statistics). Consumers never keep the activation tensor: it is valid only during the call.</summary>
public interface ILayerConsumer
{
    /// <summary>One batch, in dataset order: the batch and the layer's activation for it (N×…).</summary>
    void Consume(InputBatch batch, Tensor activation);

    /// <summary>Called once before the first batch with the number of inputs the pass will read (null when the source
    /// does not know it), for consumers whose state depends on the dataset's size (e.g. a top quantile).</summary>
    void Begin(long? inputCount) { }
}

/// <summary>A step's need for a layer's activations over the dataset. Consumers with the same <paramref name="Key"/>
/// are one consumer, shared by all steps that ask for it, so the key must name everything the result depends on
/// (layer, options).</summary>
/// <param name="Layer">Layer to capture.</param>
/// <param name="Key">Identity of the folded result.</param>
/// <param name="Create">Makes an empty consumer.</param>
public sealed record LayerPass(string Layer, string Key, Func<ILayerConsumer> Create);

/// <summary>Implemented by analyses that read layer activations over the whole dataset. Before any step runs, the host
/// collects every step's passes; the first <see cref="IAnalysisContext.RunLayerPass"/> of the run then feeds all of them
/// in one forward pass over the data, so <c>embeddings</c>, <c>max-patches</c> and <c>activations</c> on one dataset do
/// not each re-run the model.</summary>
public interface IPlansLayerPasses
{
    /// <summary>The passes this step will ask for with these options (same keys as at run time).</summary>
    IEnumerable<LayerPass> PlanLayerPasses(object options);
}

/// <summary>What a validating analysis may check.</summary>
/// <param name="Layers">Layer names of the model.</param>
/// <param name="Capabilities">Capabilities of the model.</param>
/// <param name="Model">The loaded model, for checks that need more than its layer list.</param>
public sealed record AnalysisValidationContext(IReadOnlyList<LayerInfo> Layers, ModelCapabilities Capabilities, IModel Model)
{
    /// <summary>Number of inputs of the data source. The host validates twice: first with this null (before the data is
    /// opened), then — when the source knows its size — again with it set; checks that need it run only when it is set.</summary>
    public long? InputCount { get; init; }

    /// <summary>The model input the run feeds (the backend's default with the pipeline's <c>model.input</c> applied), for
    /// checks that depend on its size (e.g. a pixel count an option must stay below); null where the host could not
    /// resolve it (an invalid <c>model.input</c>: reported on its own).</summary>
    public InputSpec? Input { get; init; }

    /// <summary>The class labels the run names outputs with (<c>model.labels</c>, else the backend's), or null where the
    /// host has not read them.</summary>
    public IReadOnlyList<string>? Labels { get; init; }

    /// <summary>The model's output shape on one input (the batch dimension 1: N×K for a classifier, N×K×H×W for a
    /// segmentation map, ...), from the host's probe, or null where the host has not probed it (a check that needs it
    /// then leaves it to the run).</summary>
    public long[]? OutputShape { get; init; }

    /// <summary>The steps the validated step's options name, resolved by the host (see
    /// <see cref="IAnalysisContext.Referenced"/>).</summary>
    public StepReferences References { get; init; } = StepReferences.None;

    /// <summary>The step <paramref name="reference"/> names, or null when the option is not set or the host could not
    /// resolve it (an unknown id: the host reports that itself).</summary>
    public ReferencedStep? Referenced(IStepReference? reference) => References.Find(reference);
}

/// <summary>An analysis whose metric names are known before it runs (e.g. <c>auc_mean</c>): the host checks a step's
/// <c>expect:</c> lines against them at validation, with a did-you-mean, instead of failing after the run.</summary>
public interface IDeclaresMetrics
{
    /// <summary>Every scalar metric the step writes.</summary>
    IReadOnlyList<string> MetricNames { get; }

    /// <summary>The metric names with these <paramref name="options"/> on this <paramref name="model"/>, when they
    /// depend on them (e.g. one series per randomised layer, one per concept subfolder); default
    /// <see cref="MetricNames"/>. Null when these options make names known only once the step has run (the host then
    /// checks <c>expect:</c> after it).</summary>
    IReadOnlyList<string>? MetricNamesFor(object options, IModel model) => MetricNames;

    /// <summary>As <see cref="MetricNamesFor(object, IModel)"/>, for names that depend on more than the model (e.g. the
    /// run's class labels, <see cref="AnalysisValidationContext.Labels"/>): what the host calls.</summary>
    IReadOnlyList<string>? MetricNamesFor(object options, AnalysisValidationContext context) => MetricNamesFor(options, context.Model);
}

/// <summary>A technique. Derive from <see cref="Analysis{TOptions}"/>.</summary>
public interface IAnalysis : IHasOptions
{
    /// <summary>What the analysis needs.</summary>
    AnalysisRequirements Requirements { get; }
    /// <summary>Extra checks after binding (messages name the option); empty when valid.</summary>
    IEnumerable<string> Validate(object options, AnalysisValidationContext context);
    /// <summary>Runs the analysis; results go to <see cref="IAnalysisContext.Output"/>.</summary>
    void Run(object options, IAnalysisContext context);
}

/// <summary>Base class of analyses: one small class per technique.</summary>
public abstract class Analysis<TOptions> : IAnalysis, IHasOptions<TOptions> where TOptions : class, new()
{
    /// <inheritdoc/>
    public Type OptionsType => typeof(TOptions);
    /// <inheritdoc/>
    public abstract AnalysisRequirements Requirements { get; }
    /// <summary>Extra checks after binding.</summary>
    public virtual IEnumerable<string> Validate(TOptions options, AnalysisValidationContext context) => [];
    /// <summary>Runs the analysis.</summary>
    public abstract void Run(TOptions options, IAnalysisContext context);
    IEnumerable<string> IAnalysis.Validate(object options, AnalysisValidationContext context) => Validate((TOptions)options, context);
    void IAnalysis.Run(object options, IAnalysisContext context) => Run((TOptions)options, context);
}
