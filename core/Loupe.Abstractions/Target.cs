using static TorchSharp.torch;

namespace Loupe.Abstractions;

/// <summary>What a target sees after a forward pass.</summary>
/// <param name="Output">Model output (N×classes logits).</param>
/// <param name="Layer">Captured activation of a layer listed in <see cref="ITarget.RequiredLayers"/>.</param>
public sealed record TargetInput(Tensor Output, Func<string, Tensor> Layer);

/// <summary>What a target decided to explain for each original input (e.g. the top-1 class), fixed on the
/// unperturbed forward so that perturbed copies are scored for the same class.</summary>
/// <param name="Classes">Class index per row, or null for targets that are not classes.</param>
/// <param name="Labels">Human description per row (e.g. <c>class 3 (dress)</c>).</param>
public sealed record TargetSelection(long[]? Classes, string[] Labels)
{
    /// <summary>Per row, what else the target decided on the unperturbed forward and needs to score copies of the row
    /// (e.g. a region mask, a detection's box); owned by the target, opaque to everyone else. Null when unused.</summary>
    public IReadOnlyList<object?>? State { get; init; }

    /// <summary>Per row, shapes that overlays of the row draw so that a reader sees what was explained (a mask's
    /// outline, a box); null when there are none.</summary>
    public IReadOnlyList<OverlayMark[]?>? Marks { get; init; }

    /// <summary>Whether the target's score is already its class's probability (a class target in softmax or sigmoid
    /// mode): a metric that takes the class probability reads the score instead of a softmax over the classes (which
    /// would be wrong for a multi-label head's sigmoids).</summary>
    public bool ScoresProbability { get; init; }

    /// <summary>Selection for a batch whose rows are copies of original rows <paramref name="rows"/>.</summary>
    public TargetSelection Rows(IReadOnlyList<int> rows) =>
        new(Classes is null ? null : rows.Select(r => Classes[r]).ToArray(), rows.Select(r => Labels[r]).ToArray())
        {
            State = State is null ? null : rows.Select(r => State[r]).ToArray(),
            Marks = Marks is null ? null : rows.Select(r => Marks[r]).ToArray(),
            ScoresProbability = ScoresProbability,
        };

    /// <summary>Selection for <paramref name="count"/> copies of original row <paramref name="row"/>.</summary>
    public TargetSelection Repeat(int row, int count) => Rows(Enumerable.Repeat(row, count).ToArray());
}

/// <summary>A shape drawn on an overlay, in input pixel coordinates: a box outline (<see cref="Box"/>) or the outline of
/// a region (<see cref="Mask"/>, row-major <see cref="MaskHeight"/>×<see cref="MaskWidth"/>, scaled to the image).</summary>
public sealed record OverlayMark
{
    /// <summary>x1, y1, x2, y2 in input pixels (x2, y2 exclusive), or null.</summary>
    public float[]? Box { get; init; }
    /// <summary>Region, true inside; or null.</summary>
    public bool[]? Mask { get; init; }
    /// <summary>Rows of <see cref="Mask"/>.</summary>
    public int MaskHeight { get; init; }
    /// <summary>Columns of <see cref="Mask"/>.</summary>
    public int MaskWidth { get; init; }
}

/// <summary>The scalar per input that an explanation explains (a class logit, a channel, ...).</summary>
public interface ITarget
{
    /// <summary>Layers whose activations <see cref="Scores"/> needs (captured by the analysis).</summary>
    IReadOnlyCollection<string> RequiredLayers { get; }
    /// <summary>Decides what to explain for each input, from the unperturbed forward pass.</summary>
    TargetSelection Select(TargetInput original);
    /// <summary>How many explanations per input (e.g. k for <c>top-k</c>); each is one slot of <see cref="Select(TargetInput, int)"/>.</summary>
    int Slots => 1;
    /// <summary>The selection of slot <paramref name="slot"/> (0-based, &lt; <see cref="Slots"/>).</summary>
    TargetSelection Select(TargetInput original, int slot) => Select(original);
    /// <summary>One differentiable score per row (shape N), for rows described by <paramref name="selection"/>.</summary>
    Tensor Scores(TargetInput input, TargetSelection selection);
    /// <summary>Short description, e.g. <c>top-1</c> or <c>class 3 (dress)</c>.</summary>
    string Describe();
}

/// <summary>A target that decides what to explain from the data rather than from the model's output — each input's
/// ground-truth label, as Quantus's <c>y_batch</c> and Captum's <c>target=labels</c> usually are. The host's attribution
/// runs (<see cref="AttributionAnalysis{TOptions}"/>) take this selection for every batch instead of letting the
/// technique select on its own forward pass; a technique that selects on its own output calls
/// <see cref="ITarget.Select(TargetInput)"/>, which such a target refuses with a clear error.</summary>
public interface IDataTarget
{
    /// <summary>The selection of slot <paramref name="slot"/> for the rows of <paramref name="batch"/>, from the data
    /// alone; throws <see cref="LoupeException"/> naming the input when the data does not say (e.g. no label).</summary>
    TargetSelection Select(InputBatch batch, int slot);
}

/// <summary>A target over a detector's outputs that can also say how similar an input's detections are to the one it
/// selected, as D-RISE weighs its random masks (Petsiuk et al. 2021): per row, the largest similarity over the
/// input's detections (box overlap × class agreement × objectness, in [0, 1]). Forward-only.</summary>
public interface IDetectionSimilarity
{
    /// <summary>One similarity per row (shape N), for rows described by <paramref name="selection"/>.</summary>
    Tensor Similarity(TargetInput input, TargetSelection selection);
}

/// <summary>What a target factory gets.</summary>
/// <param name="Labels">Class labels (may be empty).</param>
/// <param name="OutputSize">Number of model outputs (classes).</param>
/// <param name="Layers">Layer names of the model.</param>
public sealed record TargetContext(IReadOnlyList<string> Labels, long OutputSize, IReadOnlyList<string> Layers)
{
    /// <summary>The model (for targets that need a reference forward pass, e.g. embedding similarity).</summary>
    public IModel? Model { get; init; }
    /// <summary>The effective input spec.</summary>
    public InputSpec? Input { get; init; }
    /// <summary>A layer's output shape for one input of the pipeline's size (batch dimension 1), so that a target can
    /// check its indices when the pipeline is validated; null where the host does not probe layers or the model cannot
    /// give that one (the target then checks at run time).</summary>
    public Func<string, long[]?>? LayerShape { get; init; }
}

/// <summary>Creates targets from YAML. Derive from <see cref="TargetFactory{TOptions}"/>.</summary>
public interface ITargetFactory : IHasOptions
{
    /// <summary>Builds the target; throws <see cref="LoupeException"/> when options do not fit the model.</summary>
    ITarget Create(object options, TargetContext context);
}

/// <summary>Base class of target factories.</summary>
public abstract class TargetFactory<TOptions> : ITargetFactory, IHasOptions<TOptions> where TOptions : class, new()
{
    /// <inheritdoc/>
    public Type OptionsType => typeof(TOptions);
    /// <summary>Builds the target.</summary>
    public abstract ITarget Create(TOptions options, TargetContext context);
    ITarget ITargetFactory.Create(object options, TargetContext context) => Create((TOptions)options, context);
}

/// <summary>Base for targets that explain one class logit per input (pre-softmax).</summary>
public abstract class ClassTarget(IReadOnlyList<string> labels) : ITarget
{
    /// <inheritdoc/>
    public IReadOnlyCollection<string> RequiredLayers => [];
    /// <summary>Class index per input.</summary>
    protected abstract long[] Choose(Tensor output);
    /// <inheritdoc/>
    public TargetSelection Select(TargetInput original)
    {
        var classes = Choose(original.Output);
        return new TargetSelection(classes, classes.Select(Name).ToArray());
    }
    /// <inheritdoc/>
    public Tensor Scores(TargetInput input, TargetSelection selection)
    {
        using var scope = NewDisposeScope();
        var idx = tensor(selection.Classes!, dtype: ScalarType.Int64).unsqueeze(1);
        return scope.MoveToOuter(input.Output.gather(1, idx).squeeze(1));
    }
    /// <summary>"class 3 (dress)".</summary>
    protected string Name(long c) => c < labels.Count ? $"class {c} ({labels[(int)c]})" : $"class {c}";
    /// <inheritdoc/>
    public abstract string Describe();
}
