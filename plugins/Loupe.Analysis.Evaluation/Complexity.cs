using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Options of the complexity metrics (Quantus defaults: abs and normalise on).</summary>
public sealed record ComplexityOptions : NormalisedMetricOptions
{
    /// <summary>Absolute values.</summary>
    [Description("take |·| of the (channel-summed) map, after normalise (Quantus default: true); false scores the signed values as Quantus does (sparseness' Gini formula on them, complexity NaN where a value is negative)")]
    public bool Abs { get; init; } = true;
    /// <summary>Normalise.</summary>
    [Description("rescale each map first: true (Quantus normalise_by_max; the default), false, or " + Normalisations.Functions)]
    public Normalisation Normalise { get; init; } = Normalisation.Default;
    /// <summary>Threshold.</summary>
    [Range(0.0, 1e6), Description("effective-complexity: a feature counts when its value (|a| under abs, the default) > eps (Quantus: 1e-5)")]
    public double Eps { get; init; } = 1e-5;
    /// <summary>MST-C's percentile.</summary>
    [Range(0.0, 99.999999), Description("mst-c: the percentile of |a| at or above which a pixel is a salient point (Quantus threshold: 80)")]
    public double Threshold { get; init; } = 80;
    /// <summary>MST-C's neighbours.</summary>
    [Range(1, 1_000_000), Description("mst-c: nearest neighbours per salient point in the graph whose minimum spanning tree measures cohesion (Quantus k: 20)")]
    public int K { get; init; } = 20;
    /// <summary>MST-C's growing k.</summary>
    [Description("mst-c: grow k until the neighbour graph is connected (Quantus auto_increase_k: false — a disconnected graph gives the spanning forest's length)")]
    public bool AutoIncreaseK { get; init; }
    /// <summary>MST-C's scaling.</summary>
    [Description("mst-c: multiply the score by the image diagonal and 100 (Quantus scale_score: true)")]
    public bool ScaleScore { get; init; } = true;
    /// <summary>What a feature is.</summary>
    [Description("pixels (the default: one value per pixel, a per-channel map summed over its channels) or values (every value of the map as the evaluated step gives it — a per-channel map's C·H·W values, as Quantus takes the a_batch it is given; an H×W map's H·W values)")]
    public FeatureUnit Features { get; init; }
}

/// <summary>Base of the complexity metrics: a function of the map alone (no forward pass).</summary>
[ReadsMetric, ReadsNormaliseOver, ReadsOptions(nameof(ComplexityOptions.Abs), nameof(ComplexityOptions.Normalise), nameof(ComplexityOptions.Features))]
public abstract class ComplexityMetric : QualityMetric<ComplexityOptions>
{
    /// <inheritdoc/>
    protected override bool HoldsSideInputs => true;

    /// <inheritdoc/>
    protected sealed override double[] Score(ComplexityOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        var a = o.Features == FeatureUnit.Values ? b.MapValues(o.Abs, o.Normalise.Resolve()) : b.Features(o.Abs, o.Normalise.Resolve());
        return Of(a, o, b).ToArray<double>();
    }

    /// <summary>The score of N×D features (of the batch <paramref name="b"/>).</summary>
    protected abstract Tensor Of(Tensor a, ComplexityOptions o, MetricBatch b);
}

/// <summary><c>sparseness</c> (Chalasani et al. 2020): Gini index of the map's values (|a| by default); one-hot → (D−1)/D, uniform → 0. Higher is better.</summary>
public sealed class Sparseness : ComplexityMetric
{
    /// <inheritdoc/>
    public override string Id => "sparseness";
    /// <inheritdoc/>
    public override bool HigherIsBetter => true;
    /// <inheritdoc/>
    protected override Tensor Of(Tensor a, ComplexityOptions o, MetricBatch b) => QualityFormulas.Gini(a);
}

/// <summary><c>complexity</c> (Bhatt et al. 2020): entropy of the fractional contributions a/Σ|a| (|a| by default). Lower is better.</summary>
public sealed class Complexity : ComplexityMetric
{
    /// <inheritdoc/>
    public override string Id => "complexity";
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;
    /// <inheritdoc/>
    protected override Tensor Of(Tensor a, ComplexityOptions o, MetricBatch b) => QualityFormulas.Entropy(a);
}

/// <summary><c>effective-complexity</c> (Nguyen &amp; Rodríguez Martínez 2020): features with a &gt; eps (|a| by default). Lower is better.</summary>
[ReadsOptions(nameof(ComplexityOptions.Eps))]
public sealed class EffectiveComplexity : ComplexityMetric
{
    /// <inheritdoc/>
    public override string Id => "effective-complexity";
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;
    /// <inheritdoc/>
    protected override Tensor Of(Tensor a, ComplexityOptions o, MetricBatch b) => QualityFormulas.EffectiveComplexity(a, o.Eps);
}
