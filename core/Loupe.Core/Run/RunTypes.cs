using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Core;

/// <summary>Receives run events (the CLI draws progress from them).</summary>
public interface IRunObserver
{
    /// <summary>A step starts.</summary>
    void StepStarted(string stepId, string uses, int index, int count) { }
    /// <summary>Progress within a step, in [0,1].</summary>
    void StepProgress(string stepId, double fraction, string? message) { }
    /// <summary>A step ended.</summary>
    void StepFinished(string stepId, string status, TimeSpan duration, string? error) { }
    /// <summary>A warning.</summary>
    void Warning(string message) { }
}

/// <summary>How to run a pipeline.</summary>
public sealed record RunRequest(string PipelineFile)
{
    /// <summary>The pipeline's YAML text, when it is not read from <see cref="PipelineFile"/> (which then only names it in
    /// messages and gives the folder relative paths resolve against).</summary>
    public string? PipelineText { get; init; }
    /// <summary><c>--set key=value</c> overrides.</summary>
    public IReadOnlyList<string> Overrides { get; init; } = [];
    /// <summary>Explicit output folder (<c>--out</c>); must not exist or be empty.</summary>
    public string? OutDir { get; init; }
    /// <summary>Folders of built-in plugins.</summary>
    public IReadOnlyList<string> PluginDirectories { get; init; } = [PluginHost.DefaultPluginDirectory];
    /// <summary>Event receiver.</summary>
    public IRunObserver? Observer { get; init; }
    /// <summary>In-process registrars added after the plugin folders (for hosts that embed Loupe, and tests).</summary>
    public IReadOnlyList<IPluginRegistrar> Registrars { get; init; } = [];
    /// <summary><c>--shard i/n</c>: run only that part of the dataset (steps must be <see cref="IShardable"/>).</summary>
    public ShardRequest? Shard { get; init; }
}

/// <summary>Outcome of a run.</summary>
public sealed record RunResult(int ExitCode, string? OutDir, JsonObject? Manifest, IReadOnlyList<PipelineError> Errors);

/// <summary>A resolved, bound and validated step, ready to run: the run plan's entry for one step. <see cref="Options"/>
/// is exactly what the step's <c>with:</c> bound; the steps its options name are in <see cref="References"/>.</summary>
public sealed record PreparedStep(StepSpec Spec, ComponentDescriptor Descriptor, IAnalysis Analysis, object Options, ITarget Target)
{
    IReadOnlyList<PlannedReference> _references = [];

    /// <summary>The step's <c>display:</c> over <c>settings.display</c> (null when neither is given).</summary>
    public OverlayStyle? Display { get; init; }

    /// <summary>Every step this step's options name, resolved: its own in-place references (<c>inner:</c>, nested ones
    /// included) and links (<c>of:</c>), then those of the steps it links to (what their analyses ask for when this
    /// step runs them). Set once, when the run is planned.</summary>
    public IReadOnlyList<PlannedReference> References
    {
        get => _references;
        internal set
        {
            _references = value;
            Resolved = new StepReferences(value.Select(r => KeyValuePair.Create(r.Reference, r.Step)));
        }
    }

    /// <summary><see cref="References"/> as the SDK's table (what <see cref="IAnalysisContext.Referenced"/> and
    /// <see cref="AnalysisValidationContext.Referenced"/> read).</summary>
    public StepReferences Resolved { get; private set; } = StepReferences.None;

    /// <summary>The analysis's own checks of the step (with its resolved references), each message prefixed with the
    /// step's id and technique. A check that throws (a plugin's bug, a model part it did not expect) is one message
    /// naming the exception, not the end of the validation: the other steps' errors are still reported.</summary>
    public List<string> Check(AnalysisValidationContext context)
    {
        var messages = new List<string>();
        try
        {
            foreach (var message in Analysis.Validate(Options, context with { References = Resolved })) messages.Add(message);
        }
        catch (Exception e) when (e is not (OperationCanceledException or OutOfMemoryException))
        {
            messages.Add($"its checks failed: {(e is LoupeException ? "" : e.GetType().Name + ": ")}{e.Message}");
        }
        return messages.Select(m => $"step '{Spec.Id}' ({Spec.Uses}): {m}").ToList();
    }
}

/// <summary>One step reference resolved in the run's plan.</summary>
/// <param name="Reference">The option value, as bound (never changed).</param>
/// <param name="Step">The step it names: id, component, analysis and bound options.</param>
/// <param name="OptionPath">For the step's own references, the option's property path from the step's options
/// (<c>Of</c>, <c>Inner</c>, <c>Inner.Inner</c>); null for a reference of a linked step.</param>
/// <param name="Entry">For a link (<see cref="StepLink"/>), the plan entry of the linked step; null for a step
/// described in place.</param>
public sealed record PlannedReference(IStepReference Reference, ReferencedStep Step, string? OptionPath, PreparedStep? Entry);

/// <summary>A validated pipeline with its model and data opened. Dispose it.</summary>
public sealed class PreparedRun : IDisposable
{
    /// <summary>The parsed pipeline.</summary>
    public required PipelineSpec Spec { get; init; }
    /// <summary>The registry.</summary>
    public required ComponentRegistry Registry { get; init; }
    /// <summary>Classes recorded per input (<c>settings.top_k</c>).</summary>
    public int TopK { get; init; } = Predictions.DefaultTopK;
    /// <summary>The model (replaced by a fresh copy when a step that still uses it had to be abandoned).</summary>
    public required IModel Model { get; set; }
    /// <summary>False when the model belongs to an in-process host that keeps it over many runs.</summary>
    internal bool OwnsModel { get; init; } = true;
    /// <summary>False when the registry belongs to an in-process host.</summary>
    internal bool OwnsRegistry { get; set; } = true;
    /// <summary>Loads a fresh copy of the model.</summary>
    internal Func<IModel>? Reload { get; init; }
    /// <summary>True once a step's thread was abandoned: what it may still use is never disposed.</summary>
    internal bool Abandoned { get; set; }
    /// <summary>Model options.</summary>
    public required object ModelOptions { get; init; }
    /// <summary>Effective input spec.</summary>
    public required InputSpec Input { get; init; }
    /// <summary>Labels.</summary>
    public required IReadOnlyList<string> Labels { get; init; }
    /// <summary>Model files.</summary>
    public required IReadOnlyList<string> ModelFiles { get; init; }
    /// <summary>Data source (null if none).</summary>
    public IDataSource? Data { get; init; }
    /// <summary>Data options.</summary>
    public object? DataOptions { get; init; }
    /// <summary>The rows this run reads under <c>--shard</c> (null: all).</summary>
    public ShardInfo? Shard { get; init; }
    /// <summary>Steps.</summary>
    public required IReadOnlyList<PreparedStep> Steps { get; init; }
    /// <summary>When the first model forward (the validation probe) finished: the end of the cold start.</summary>
    public DateTimeOffset? FirstForwardAt { get; init; }
    /// <summary>Warnings found while preparing.</summary>
    public required List<string> Warnings { get; init; }
    /// <summary>Values shared by the steps of this run (<see cref="IAnalysisContext.RunCache"/>).</summary>
    public System.Collections.Concurrent.ConcurrentDictionary<string, object> Cache { get; } = new();
    LayerPasses? _passes;
    /// <summary>The run's shared dataset passes.</summary>
    internal LayerPasses LayerPasses => _passes ??= new(this);
    /// <inheritdoc/>
    public void Dispose()
    {
        // An abandoned step may still run on the old model and the data source: freeing their native memory under it
        // could crash the process, so they are left to the process's end.
        if (Abandoned) return;
        _passes?.Dispose();
        Data?.Dispose();
        if (OwnsModel) Model.Dispose();
        if (OwnsRegistry) Registry.Dispose();
    }
}
