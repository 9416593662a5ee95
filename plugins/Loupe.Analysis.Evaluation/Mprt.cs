using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Variant of <c>mprt</c>.</summary>
public enum MprtVariant
{
    /// <summary>Smooth MPRT: maps averaged over noisy copies of the input before they are compared.</summary>
    Smooth,
    /// <summary>Efficient MPRT: the rise in the maps' histogram entropy when the whole model is randomised.</summary>
    Efficient,
}

/// <summary>Options of <c>mprt</c>.</summary>
public sealed record MprtOptions : MetricOptions
{
    /// <summary>Variant.</summary>
    [Description("smooth (sMPRT: Spearman of noise-averaged |maps|, intact vs randomised model; lower is better) or efficient (eMPRT: entropy of the randomised model's map over the intact one's; higher is better)")]
    public MprtVariant Variant { get; init; } = MprtVariant.Smooth;
    /// <summary>Noisy copies.</summary>
    [Range(1, 100_000), Description("smooth: noisy copies averaged per map (Quantus nr_samples: 50)")]
    public int Samples { get; init; } = 50;
    /// <summary>Noise magnitude.</summary>
    [Range(0.0, 1000.0), Description("smooth: noise σ as a fraction of the input's value range max − min (Quantus noise_magnitude: 0.1)")]
    public double NoiseMagnitude { get; init; } = 0.1;
    /// <summary>Histogram bins.</summary>
    [Range(2, 100_000), Description("efficient: bins of the histogram of map values whose entropy is the map's complexity (Quantus n_bins: 100)")]
    public int Bins { get; init; } = 100;
    /// <summary>Copies per call.</summary>
    [Range(1, 100_000), Description("smooth: noisy copies per call of the method (default: within the memory budget)")]
    public int? MicroBatch { get; init; }
}

/// <summary><c>mprt</c> variants of Hedström et al. (2023, "Sanity checks revisited"; Quantus SmoothMPRT and
/// EfficientMPRT), beside the cascading <c>sanity-randomisation</c>. Every module's parameters are randomised as
/// there (seeded from the step seed and the module; restored after each batch, also on errors), all of them at once,
/// and the method runs again for the classes chosen on the intact model.
/// <list type="bullet">
/// <item><c>smooth</c>: each map is the mean over <c>samples</c> copies x + N(0, σ²), σ = noise_magnitude × (max x − min x),
/// noise seeded per input and shared by both models; the score is the Spearman ρ of the two |maps| (Quantus reports
/// the ρ of every layer of the cascade; this is its end point). Lower is better.</item>
/// <item><c>efficient</c>: H(randomised) / H(intact), H the entropy (natural log) of the <c>bins</c>-bin histogram of
/// the |map|'s values over their range. Higher is better: a map that depends on the model becomes noisier.</item>
/// </list></summary>
public sealed class Mprt : QualityMetric<MprtOptions>
{
    /// <inheritdoc/>
    public override string Id => "mprt";
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Parameters);
    /// <inheritdoc/>
    protected override bool HigherIsBetterWith(MprtOptions options) => options.Variant == MprtVariant.Efficient;

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(MprtOptions options, AnalysisValidationContext context)
    {
        if (context.Model.ParameterNames.Count == 0) yield return "the model exposes no parameters to randomise";
    }

    /// <summary>Entropy (natural log) of the <paramref name="bins"/>-bin histogram of each row's values over its range.</summary>
    public static double HistogramEntropy(Tensor row, int bins)
    {
        using var scope = NewDisposeScope();
        var v = row.to(ScalarType.Float64);
        double lo = v.min().item<double>(), hi = v.max().item<double>();
        if (hi <= lo) return 0;
        var idx = ((v - lo) / (hi - lo) * bins).floor().clamp(0, bins - 1).to(ScalarType.Int64);
        var counts = zeros(bins, dtype: ScalarType.Float64).index_add_(0, idx, ones_like(v), 1);
        var p = counts / counts.sum();
        return -(p * where(p > 0, p.log(), zeros_like(p))).sum().item<double>();
    }

    /// <summary>|map| (N×D) of the method: as given, or averaged over the noisy copies.</summary>
    Tensor Maps(MprtOptions o, MetricBatch b, Tensor? noise)
    {
        using var scope = NewDisposeScope();
        if (noise is null) return scope.MoveToOuter(LinkedMaps(o, b.Context, b.X, null, b.Selection).Map.detach().to(ScalarType.Float64).reshape(b.N, -1).abs());
        long n = b.N, s = noise.shape[0];
        long chunk = Math.Max(1, Explain.CopiesPerForward(b.Context, b.X, o.MicroBatch, gradients: true) / n);
        Tensor? sum = null;
        for (long s0 = 0; s0 < s; s0 += chunk)
        {
            long k = Math.Min(chunk, s - s0);
            var xs = (b.X.unsqueeze(0) + noise.narrow(0, s0, k)).reshape(k * n, b.X.shape[1], b.X.shape[2], b.X.shape[3]);
            var sel = b.Selection.Rows(Enumerable.Range(0, (int)k).SelectMany(_ => Enumerable.Range(0, (int)n)).ToArray());
            var m = LinkedMaps(o, b.Context, xs, null, sel).Map.detach().to(ScalarType.Float64).reshape(k, n, -1).sum([0]);
            sum = sum is null ? m : sum + m;
        }
        return scope.MoveToOuter((sum! / s).abs());
    }

    /// <inheritdoc/>
    protected override double[] Score(MprtOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        var ctx = b.Context;
        Tensor? noise = null;
        if (o.Variant == MprtVariant.Smooth)
        {
            var x = b.X;
            var sigma = (x.amax([1, 2, 3]) - x.amin([1, 2, 3])) * (float)o.NoiseMagnitude;               // per input
            noise = stack(Enumerable.Range(0, o.Samples).Select(_ => InputSeeds.Randn(b.Generators, [1, .. x.shape.Skip(1)]).squeeze(0)).ToArray())
                * sigma.view(1, -1, 1, 1, 1);                                                           // samples×N×C×H×W
        }
        var intact = noise is null ? b.Map.detach().to(ScalarType.Float64).reshape(b.N, -1).abs() : Maps(o, b, noise);
        var modules = SanityRandomisation.ExecutionOrder(ctx, SanityRandomisation.Modules(ctx.Model));
        var saved = new List<(Tensor Live, Tensor Copy)>();
        Tensor randomised;
        try
        {
            for (int g = 0; g < modules.Count; g++) SanityRandomisation.Randomise(ctx, modules[g].Parameters, g, saved);
            randomised = Maps(o, b, noise);
        }
        finally
        {
            SanityRandomisation.Restore(saved);
        }
        return Enumerable.Range(0, (int)b.N).Select(i => o.Variant == MprtVariant.Smooth
            ? Evaluation.Maps.Spearman(intact[i].to(ScalarType.Float32).contiguous().ToArray<float>(), randomised[i].to(ScalarType.Float32).contiguous().ToArray<float>())
            : HistogramEntropy(randomised[i], o.Bins) / Math.Max(HistogramEntropy(intact[i], o.Bins), 1e-12)).ToArray();
    }
}
