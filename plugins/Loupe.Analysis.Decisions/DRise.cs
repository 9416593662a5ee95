using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Options of <c>d-rise</c>.</summary>
public sealed record DRiseOptions
{
    /// <summary>Number of random masks.</summary>
    [Range(1, 1_000_000), Description("number of random masks N (the paper: 5000)")]
    public int Masks { get; init; } = 1000;
    /// <summary>Grid size.</summary>
    [Range(1, 1024), Description("side s of the random binary grid (the paper: 16)")]
    public int Grid { get; init; } = 16;
    /// <summary>Keep probability.</summary>
    [Range(0.01, 0.99), Description("probability p that a grid cell is kept (the paper: 0.5)")]
    public double Probability { get; init; } = 0.5;
    /// <summary>Fill for removed pixels.</summary>
    [Description("what masked-out pixels become: zero (normalised), mean, blur or black (the paper multiplies pixels by the mask: black)")]
    public Fill Fill { get; init; } = Fill.Black;
    /// <summary>Constant fill.</summary>
    [Description(Perturbation.ConstantDescription + "'fill'")]
    public float[]? FillValue { get; init; }
    /// <summary>Copies per forward.</summary>
    [Range(1, 65536), Description("masked copies per forward pass (default: as many as fill ~64 MiB of activations, at least 8, within settings.memory_budget_mb)")]
    public int? MicroBatch { get; init; }
}

/// <summary>D-RISE (Petsiuk et al. 2021), RISE for object detectors: each random mask M_i (RISE's masks) is weighted by
/// the similarity of the masked image's detections to the target detection, w_i = max_j IoU(L_t, L_j) · cos(P_t, P_j)
/// · O_j, and the map is Σ_i w_i M_i / (N·p) (the paper's sum, scaled as RISE). The target must score detections
/// (<see cref="IDetectionSimilarity"/>: the <c>box</c> target). Seeded; forward passes only, so it works through NMS,
/// TopK and any other step a gradient cannot pass.</summary>
public sealed class DRise : AttributionAnalysis<DRiseOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations);
    /// <inheritdoc/>
    public override string ArtifactName => "d-rise";

    /// <inheritdoc/>
    public override AttributionResult Attribute(DRiseOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        if (ctx.Target is not IDetectionSimilarity similarity)
            throw new LoupeException($"d-rise explains a detection: its target must be a detection target such as {{ box: ... }}, not '{ctx.Target.Describe()}'");
        var x = input.Input;
        var (_, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        var fill = Perturbation.Baseline(x, options.Fill, 4, ctx.Input, options.FillValue);
        var map = Rise.WeightedMaskSum(ctx, x, options.Masks, options.Grid, options.Probability,
            keep => Perturbation.MaskedScores(ctx, x, fill, keep.shape[0], (p0, p) => 1 - keep.narrow(0, p0, p), selection, options.MicroBatch, score: similarity.Similarity));
        return new AttributionResult(map, selection);
    }
}
