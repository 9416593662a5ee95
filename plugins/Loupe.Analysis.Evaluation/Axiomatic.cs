using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Options of the axiomatic metrics.</summary>
public sealed record AxiomaticOptions : PerturbOptions
{
    /// <summary>Threshold.</summary>
    [Range(0.0, 1e6), Description("non-sensitivity: |a| < eps is a zero attribution and |Δf| < eps no change (Quantus: 1e-5)")]
    public double Eps { get; init; } = 1e-5;
}

/// <summary><c>completeness</c> (Sundararajan et al. 2017): attributions should sum to f(x) − f(x̄), x̄ the baseline
/// (Quantus: min, logits). The score is the relative gap |Σa − (f(x) − f(x̄))| / |f(x) − f(x̄)| of the map as given
/// (signed, summed over all its values, not normalised), so 0 is complete. Quantus returns the bool Σa == Δf (exact
/// float equality, after its default normalise_by_max, which rarely holds); the gap keeps the information. Lower is
/// better.</summary>
public sealed class Completeness : QualityMetric<AxiomaticOptions>
{
    /// <inheritdoc/>
    public override string Id => "completeness";
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;

    /// <inheritdoc/>
    protected override double[] Score(AxiomaticOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        bool softmax = o.Softmax ?? false;
        var sum = b.Map.detach().to(ScalarType.Float64).reshape(b.N, -1).sum(1);
        var baseline = b.Baseline(o.Baseline ?? Fill.Min);
        var delta = b.Clean(softmax) - b.Outputs(1, (_, _) => baseline.unsqueeze(1), softmax).squeeze(1);
        return ((sum - delta).abs() / delta.abs().clamp_min(1e-12)).ToArray<double>();
    }
}

/// <summary><c>non-sensitivity</c> (Nguyen &amp; Rodríguez Martínez 2020): each pixel is replaced alone (Quantus
/// features_in_step = 1; baseline min, softmax); the score counts the pixels where "zero attribution" (|a| &lt; eps
/// after normalise_by_max) and "no effect" (|Δf| &lt; eps) disagree. One forward per pixel. Lower is better.</summary>
public sealed class NonSensitivity : QualityMetric<AxiomaticOptions>
{
    /// <inheritdoc/>
    public override string Id => "non-sensitivity";
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;
    /// <inheritdoc/>
    protected override int? MicroBatch(AxiomaticOptions options) => options.MicroBatch;

    /// <inheritdoc/>
    protected override double[] Score(AxiomaticOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        bool softmax = o.Softmax ?? true;
        var a = b.Features(abs: true, normalise: true);
        var baseline = b.Baseline(o.Baseline ?? Fill.Min);
        var f = b.Outputs(b.D, (k0, k) => b.Replace((arange(b.D).view(1, 1, -1) == arange(k0, k0 + k).view(1, k, 1)).expand(b.N, k, b.D), baseline), softmax);
        var noEffect = (b.Clean(softmax).unsqueeze(1) - f).abs() < o.Eps;
        var zero = a < o.Eps;
        return (noEffect ^ zero).sum(1).to(ScalarType.Float64).ToArray<double>();
    }
}
