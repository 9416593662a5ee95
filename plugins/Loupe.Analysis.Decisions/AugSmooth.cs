using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Options of <c>aug-smooth</c>.</summary>
public sealed record AugSmoothOptions
{
    /// <summary>The wrapped attribution step.</summary>
    [Required, Description("the attribution step to smooth: { uses: grad-cam, with: { ... } }")]
    public StepReference? Inner { get; init; }
    /// <summary>Flips.</summary>
    [Description("also explain the horizontally flipped input (its map is flipped back), as pytorch-grad-cam's HorizontalFlip")]
    public bool Flip { get; init; } = true;
    /// <summary>Factors.</summary>
    [Description("the input (normalised) is multiplied by each factor, as pytorch-grad-cam's Multiply([0.9, 1, 1.1])")]
    public double[] Factors { get; init; } = [0.9, 1, 1.1];
}

/// <summary>Test-time augmentation smoothing (pytorch-grad-cam's <c>aug_smooth=True</c>, Jacob Gildenblat's ttach
/// recipe): the inner method explains every augmented copy — each factor, with and without a horizontal flip — the
/// maps are de-augmented (flipped back) and averaged. Unlike pytorch-grad-cam, which re-selects the top class on each
/// augmented copy when no target is given, the target is chosen once on the clean input (as <c>noise-tunnel</c>).</summary>
public sealed class AugSmooth : AttributionAnalysis<AugSmoothOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    /// <inheritdoc/>
    public override string ArtifactName => "aug-smooth";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(AugSmoothOptions options, AnalysisValidationContext context)
    {
        if (context.Referenced(options.Inner)?.Analysis is { } a && a is not IAttribution)
            yield return $"inner step '{options.Inner!.Uses}' is not an attribution method (it must produce one map per input, like grad-cam or saliency)";
        if (options.Factors.Length == 0) yield return "factors must list at least one factor";
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(AugSmoothOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var innerStep = ctx.Referenced(options.Inner!);
        var inner = (IAttribution)innerStep.Analysis;
        var x = input.Input;
        var (_, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        Tensor? sum = null;
        int count = 0;
        foreach (var flip in options.Flip ? new[] { false, true } : [false])
            foreach (var factor in options.Factors)
            {
                using var scope = NewDisposeScope();
                ctx.Cancellation.ThrowIfCancellationRequested();
                var augmented = (flip ? x.flip(3) : x) * (float)factor;
                var map = inner.Attribute(innerStep.Options, new AttributionInput(ctx, augmented, selection, input.Slot) { SourceIds = input.SourceIds }).Map;
                if (flip) map = map.flip(map.dim() - 1);
                sum = sum is null ? scope.MoveToOuter(map.clone()) : sum.add_(map);
                count++;
            }
        return new AttributionResult(sum! / count, selection);
    }
}
