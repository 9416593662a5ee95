using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Options of the localisation metrics. The mask: a folder of masks or a boxes file keyed by input id when
/// given, else the data source's object masks when it has them (e.g. <c>fashion-placement</c>), else display pixels
/// brighter than <c>threshold</c>.</summary>
public sealed record LocalisationOptions : NormalisedMetricOptions
{
    /// <summary>Object threshold.</summary>
    [Range(0.0, 1.0), Description("object mask when the data source has none: display pixel (max over channels) > threshold")]
    public double Threshold { get; init; } = 0.1;
    /// <summary>Absolute values.</summary>
    [Description("take |·| of the channel-summed map (after normalise, as Quantus) (default: Quantus's per metric: true for attribution-localisation, false otherwise)")]
    public bool? Abs { get; init; }
    /// <summary>Normalise.</summary>
    [Description("rescale each map first: true (Quantus normalise_by_max; the default), false, or " + Normalisations.Functions + " (with abs: false, ranks, the AUC and the pointing game's maximum do not change under any of them; with abs: true negative can reorder them, as in Quantus; relevance-mass-accuracy and attribution-localisation change under negative)")]
    public Normalisation Normalise { get; init; } = Normalisation.Default;
    /// <summary>k.</summary>
    [Range(1, int.MaxValue), Description("top-k-intersection: number of top features (Quantus: 1000; must be < the pixels per image)")]
    public int K { get; init; } = 1000;
    /// <summary>Weighted.</summary>
    [Description("attribution-localisation: multiply by the mask's share of the image, |mask| / (H·W) (Kohlbrenner et al.'s weighted variant, Quantus 0.5; Quantus 0.6's batched code divides by (N−2)·C·H·W instead)")]
    public bool Weighted { get; init; }
    /// <summary>Positive attribution only.</summary>
    [Description("attribution-localisation: only the positive attribution counts (Kohlbrenner et al.; Quantus positive_attributions, whose default is false: with abs false the signed ratio Σ_mask a / Σ a, NaN when it exceeds 1)")]
    public bool PositiveOnly { get; init; } = true;
    /// <summary>Concept influence.</summary>
    [Description("top-k-intersection: divide the score by the mask's share of the image (Quantus concept_influence)")]
    public bool ConceptInfluence { get; init; }
    /// <summary>Masks folder.</summary>
    [FilePath(Directory = true), Description(ObjectMasks.MasksDescription)]
    public string? Masks { get; init; }
    /// <summary>Boxes file.</summary>
    [FilePath, Description(ObjectMasks.BoxesDescription)]
    public string? Boxes { get; init; }
}

/// <summary>Base of the localisation metrics: a function of the map and the object mask (no forward pass).
/// Inputs whose mask is empty score NaN and are left out of the mean.</summary>
[ReadsMetric, ReadsNormaliseOver, ReadsOptions(nameof(LocalisationOptions.Threshold), nameof(LocalisationOptions.Abs), nameof(LocalisationOptions.Normalise), nameof(LocalisationOptions.Masks), nameof(LocalisationOptions.Boxes))]
public abstract class LocalisationMetric : QualityMetric<LocalisationOptions>
{
    /// <inheritdoc/>
    protected override bool HoldsSideInputs => true;

    /// <summary>Quantus's default of <c>abs</c>.</summary>
    protected virtual bool DefaultAbs => false;
    /// <inheritdoc/>
    public override bool HigherIsBetter => true;

    /// <inheritdoc/>
    protected sealed override double[] Score(LocalisationOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        return Of(b.Features(o.Abs ?? DefaultAbs, o.Normalise.Resolve()), b.Mask(o.Threshold, o.Masks, o.Boxes), o);
    }

    /// <summary>The score of N×D features against an N×D mask.</summary>
    protected abstract double[] Of(Tensor a, Tensor s, LocalisationOptions o);
}

/// <summary><c>attribution-localisation</c> (Kohlbrenner et al. 2020): share of the positive attribution inside the mask.</summary>
[ReadsOptions(nameof(LocalisationOptions.Weighted), nameof(LocalisationOptions.PositiveOnly))]
public sealed class AttributionLocalisation : LocalisationMetric
{
    /// <inheritdoc/>
    public override string Id => "attribution-localisation";
    /// <inheritdoc/>
    protected override bool DefaultAbs => true;
    /// <inheritdoc/>
    protected override double[] Of(Tensor a, Tensor s, LocalisationOptions o) => QualityFormulas.AttributionLocalisation(a, s, o.Weighted, o.PositiveOnly).ToArray<double>();
}

/// <summary><c>top-k-intersection</c> (Theiner et al. 2021): share of the k top features inside the mask.</summary>
[ReadsOptions(nameof(LocalisationOptions.K), nameof(LocalisationOptions.ConceptInfluence))]
public sealed class TopKIntersection : LocalisationMetric
{
    /// <inheritdoc/>
    public override string Id => "top-k-intersection";
    /// <inheritdoc/>
    protected override double[] Of(Tensor a, Tensor s, LocalisationOptions o) => KError(o, a.shape[1]) is { } error
        ? throw new LoupeException("top-k-intersection: " + error)
        : QualityFormulas.TopKIntersection(a, s, o.K, o.ConceptInfluence).ToArray<double>();

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(LocalisationOptions o, AnalysisValidationContext context)
    {
        foreach (var e in base.ValidateMetric(o, context)) yield return e;
        if (context.Input is { } i && KError(o, (long)i.Height * i.Width) is { } error) yield return error;
    }

    /// <summary>Null when <c>k</c> is below an input's <paramref name="pixels"/> (Quantus asserts it too).</summary>
    static string? KError(LocalisationOptions o, long pixels) => o.K < pixels ? null
        : $"option 'k' = {o.K} is not smaller than the {pixels} pixels of an input (Quantus's default k = 1000 needs inputs of more than 1000 pixels)";
}

/// <summary><c>relevance-rank-accuracy</c> (Arras et al. 2022): share of the |mask| top features inside the mask.</summary>
public sealed class RelevanceRankAccuracy : LocalisationMetric
{
    /// <inheritdoc/>
    public override string Id => "relevance-rank-accuracy";
    /// <inheritdoc/>
    protected override double[] Of(Tensor a, Tensor s, LocalisationOptions o) => QualityFormulas.RelevanceRankAccuracy(a, s).ToArray<double>();
}

/// <summary><c>relevance-mass-accuracy</c> (Arras et al. 2022): share of the attribution mass inside the mask,
/// Σ_mask a / Σ a on the signed map normalised by its max |·| (Quantus's defaults: abs false, normalise_by_max; on a
/// signed map whose sum is near zero the ratio is unbounded, as in Quantus; set <c>abs: true</c> for |·|).</summary>
public sealed class RelevanceMassAccuracy : LocalisationMetric
{
    /// <inheritdoc/>
    public override string Id => "relevance-mass-accuracy";
    /// <inheritdoc/>
    protected override double[] Of(Tensor a, Tensor s, LocalisationOptions o) => QualityFormulas.RelevanceMassAccuracy(a, s).ToArray<double>();
}

/// <summary><c>auc</c> (Fawcett 2006): ROC AUC of the map as a detector of the mask's pixels.</summary>
public sealed class LocalisationAuc : LocalisationMetric
{
    /// <inheritdoc/>
    public override string Id => "auc";
    /// <inheritdoc/>
    protected override double[] Of(Tensor a, Tensor s, LocalisationOptions o) => QualityFormulas.RocAuc(a, s);
}
