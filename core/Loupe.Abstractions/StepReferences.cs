namespace Loupe.Abstractions;

/// <summary>An option value that names another step: <see cref="StepReference"/> (<c>inner: { uses, with }</c>, a step
/// described in place) or <see cref="StepLink"/> (<c>of: step-id</c>, another step of the pipeline). The option holds
/// only what the YAML says; the host resolves it when it plans the run, and a plugin reaches the resolved step with
/// <see cref="IAnalysisContext.Referenced"/> (at run time) or <see cref="AnalysisValidationContext.Referenced"/>.</summary>
public interface IStepReference
{
    /// <summary>How the option names the step, for messages (the inner component id, or the linked step id).</summary>
    string Name { get; }
}

/// <summary>An option that describes a step in place (<c>inner: { uses: saliency, with: {...} }</c>): the host resolves
/// the id, binds and checks its options, and keeps the result in the run's plan, never in this record.</summary>
public sealed record StepReference : IStepReference
{
    /// <summary>Component id of the inner analysis.</summary>
    public string Uses { get; init; } = "";
    /// <summary>The inner step's <c>with:</c> as written (host-owned, bound by the host).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public object? With { get; init; }
    /// <inheritdoc/>
    [System.Text.Json.Serialization.JsonIgnore]
    public string Name => Uses;
    /// <inheritdoc/>
    public override string ToString() => Uses;
}

/// <summary>An option that names another step of the same pipeline by id (<c>of: saliency</c>): the host checks the step
/// exists and keeps the link in the run's plan, so a metric can recompute that step's maps batch by batch.</summary>
public sealed record StepLink : IStepReference
{
    /// <summary>The referenced step id.</summary>
    public string Id { get; init; } = "";
    /// <inheritdoc/>
    [System.Text.Json.Serialization.JsonIgnore]
    public string Name => Id;
    /// <inheritdoc/>
    public override string ToString() => Id;
}

/// <summary>A step that an option of the running step names, as the host resolved it.</summary>
/// <param name="Id">The linked step's id, or for a step described in place, the naming step's id and the option
/// (<c>smooth/inner</c>).</param>
/// <param name="Uses">Component id.</param>
/// <param name="Analysis">The analysis (for a linked step, the very instance that runs that step).</param>
/// <param name="Options">Its bound options.</param>
public sealed record ReferencedStep(string Id, string Uses, IAnalysis Analysis, object Options);

/// <summary>The resolved references of one step: each <see cref="IStepReference"/> its options hold (in place references
/// nested in them, and those of the steps it links to, included) → the step. References are compared by value: equal
/// references name equal steps.</summary>
public sealed class StepReferences
{
    readonly Dictionary<IStepReference, ReferencedStep> _steps = [];

    /// <summary>No references.</summary>
    public static StepReferences None { get; } = new([]);

    /// <summary>A table of resolved references; the first of two equal references wins.</summary>
    public StepReferences(IEnumerable<KeyValuePair<IStepReference, ReferencedStep>> resolved)
    {
        foreach (var (reference, step) in resolved) _steps.TryAdd(reference, step);
    }

    /// <summary>The references and their steps.</summary>
    public IReadOnlyDictionary<IStepReference, ReferencedStep> All => _steps;

    /// <summary>The step <paramref name="reference"/> names, or null when it is null or was not resolved.</summary>
    public ReferencedStep? Find(IStepReference? reference) =>
        reference is not null && _steps.TryGetValue(reference, out var step) ? step : null;

    /// <summary>The step <paramref name="reference"/> names; throws a <see cref="LoupeException"/> naming it when the
    /// host did not resolve it (an option object the host did not bind).</summary>
    public ReferencedStep Of(IStepReference? reference) => Find(reference) ?? throw new LoupeException(reference is null
        ? "a required step reference is missing"
        : $"the step '{reference.Name}' named by an option was not resolved by the host (resolved: {(_steps.Count == 0 ? "none" : string.Join(", ", _steps.Keys.Select(k => k.Name)))})");
}
