using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>What <c>confidence-change</c> reports (pytorch-grad-cam's three classes of it).</summary>
public enum ConfidenceMode
{
    /// <summary>CamMultImageConfidenceChange: f(x ⊙ map) − f(x).</summary>
    Change,
    /// <summary>DropInConfidence: max(f(x) − f(x ⊙ map), 0).</summary>
    Drop,
    /// <summary>IncreaseInConfidence: 1 where f(x ⊙ map) &gt; f(x), else 0.</summary>
    Increase,
}

/// <summary>Which pixels <c>road-confidence</c> removes (pytorch-grad-cam's ROAD classes).</summary>
public enum RoadConfidenceOrder
{
    /// <summary>ROADMostRelevantFirst(Average): the pixels at or above the map's p-th percentile.</summary>
    Morf,
    /// <summary>ROADLeastRelevantFirst(Average): the pixels at or above the p-th percentile of 1 − map.</summary>
    Lerf,
    /// <summary>ROADCombined: (LeRF − MoRF) / 2 of the averages over the percentiles.</summary>
    Combined,
}

/// <summary>Options shared by pytorch-grad-cam's confidence metrics.</summary>
public abstract record ConfidenceOptions : MetricOptions
{
    /// <summary>Score.</summary>
    [Description("score f with the class probability (pytorch-grad-cam's ClassifierOutputSoftmaxTarget) instead of the target's score (ClassifierOutputTarget: the logit; the default)")]
    public bool Softmax { get; init; }
    /// <summary>Copies per forward.</summary>
    [Range(1, 65536), Description("perturbed copies per forward pass (default: as many as fill ~64 MiB of activations, at least 8, within settings.memory_budget_mb)")]
    public int? MicroBatch { get; init; }
}

/// <summary>Options of <c>confidence-change</c>.</summary>
public sealed record ConfidenceChangeOptions : ConfidenceOptions
{
    /// <summary>Mode.</summary>
    [Description("change (CamMultImageConfidenceChange: f(x ⊙ map) − f(x); the default; higher is better), drop (DropInConfidence: max(f(x) − f(x ⊙ map), 0); lower is better) or increase (IncreaseInConfidence: 1 where f(x ⊙ map) > f(x), else 0; higher is better)")]
    public ConfidenceMode Mode { get; init; }
}

/// <summary>Options of <c>road-confidence</c>.</summary>
public sealed record RoadConfidenceOptions : ConfidenceOptions
{
    /// <summary>Percentiles.</summary>
    [Description("percentiles p of the map (numpy's linear percentile) at which pixels are removed, one curve point each (pytorch-grad-cam's ROAD*Average: 10, 20, ..., 90; a single ROADMostRelevantFirst(p) is one value)")]
    public double[] Percentiles { get; init; } = [10, 20, 30, 40, 50, 60, 70, 80, 90];
    /// <summary>Order.</summary>
    [Description("morf (ROADMostRelevantFirst: the pixels whose map value is at or above its p-th percentile are imputed; lower is better), lerf (ROADLeastRelevantFirst: those at or above the p-th percentile of 1 − map; higher is better) or combined (ROADCombined: (LeRF − MoRF) / 2; higher is better)")]
    public RoadConfidenceOrder Order { get; init; }
    /// <summary>Noise σ.</summary>
    [Range(0.0, 1000.0), Description("σ of the Gaussian noise added to each imputed value, normalised units, seeded per input (pytorch-grad-cam's NoisyLinearImputer: 0.01)")]
    public double Noise { get; init; } = 0.01;
}

/// <summary>Base of pytorch-grad-cam's confidence metrics: f of perturbed copies against f(x), per input.</summary>
public abstract class ConfidenceMetric<TOptions> : QualityMetric<TOptions> where TOptions : ConfidenceOptions, new()
{
    /// <inheritdoc/>
    protected override int? MicroBatch(TOptions options) => options.MicroBatch;

    /// <summary>f(copy) − f(x) for k copies of each input (N×k×C×H×W), in float32 as pytorch-grad-cam subtracts its
    /// float32 score arrays: N×k.</summary>
    protected static Tensor Changes(MetricBatch b, Tensor copies, bool softmax)
    {
        using var scope = NewDisposeScope();
        long k = copies.shape[1];
        var after = b.Outputs(k, (k0, kk) => copies.narrow(1, k0, kk), softmax).to(ScalarType.Float32);
        var before = b.Clean(softmax).to(ScalarType.Float32);
        return scope.MoveToOuter(after - before.unsqueeze(1));
    }

    /// <summary>The map as the perturbation reads it: N×1×H×W for an H×W map (resized to the input when its resolution
    /// differs), a per-channel map as given (pytorch-grad-cam multiplies the input by the CAM it is handed).</summary>
    protected static Tensor Cam(MetricBatch b)
    {
        long h = b.X.shape[2], w = b.X.shape[3];
        var m = b.Map.detach().to(ScalarType.Float32);
        if (m.dim() == 4 && m.shape[2] == h && m.shape[3] == w && (m.shape[1] == 1 || m.shape[1] == b.X.shape[1])) return m;
        if (m.dim() == 4) throw new LoupeException($"the linked step's per-channel maps ({string.Join("×", m.shape)}) do not match the input ({string.Join("×", b.X.shape.Skip(1))})");
        return Maps.Reduce(m, h, w).unsqueeze(1);
    }
}

/// <summary><c>confidence-change</c>: pytorch-grad-cam's CamMultImageConfidenceChange — the input multiplied by the map
/// (pytorch-grad-cam's CAMs are scaled to [0, 1]; under <c>convention: pytorch-grad-cam</c> Loupe's are the same),
/// scored, minus the input's score; <c>mode: drop</c> (DropInConfidence) and <c>increase</c> (IncreaseInConfidence).</summary>
public sealed class ConfidenceChange : ConfidenceMetric<ConfidenceChangeOptions>
{
    /// <inheritdoc/>
    public override string Id => "confidence-change";
    /// <inheritdoc/>
    public override bool HigherIsBetter => true;
    /// <inheritdoc/>
    protected override bool HigherIsBetterWith(ConfidenceChangeOptions options) => options.Mode != ConfidenceMode.Drop;

    /// <inheritdoc/>
    protected override double[] Score(ConfidenceChangeOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        var change = Changes(b, (b.X * Cam(b)).unsqueeze(1), o.Softmax).squeeze(1);
        var score = o.Mode switch
        {
            ConfidenceMode.Drop => (-change).clamp_min(0),
            ConfidenceMode.Increase => (change > 0).to(ScalarType.Float32),
            _ => change,
        };
        return score.to(ScalarType.Float64).ToArray<double>();
    }
}

/// <summary><c>road-confidence</c>: ROAD as pytorch-grad-cam scores it (its ROADMostRelevantFirst, ROADLeastRelevantFirst,
/// their averages over percentiles and ROADCombined): at each percentile p, the pixels whose map value is at or above
/// the map's p-th percentile (numpy's linear interpolation; LeRF: of 1 − map) are imputed by noisy linear imputation
/// (Rong et al. 2022, the same solver as <c>road</c>), and the score is f(imputed) − f(x), averaged over the
/// percentiles. Unlike <c>road</c> (Quantus: whether the class is still predicted, ⌊D·p/100⌋ pixels by rank), ties at
/// the threshold are all removed — a CAM that is 0 on more than p % of the image loses every pixel at p.</summary>
public sealed class RoadConfidence : ConfidenceMetric<RoadConfidenceOptions>
{
    /// <inheritdoc/>
    public override string Id => "road-confidence";
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;
    /// <inheritdoc/>
    protected override bool HigherIsBetterWith(RoadConfidenceOptions options) => options.Order != RoadConfidenceOrder.Morf;

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(RoadConfidenceOptions o, AnalysisValidationContext context)
    {
        foreach (var e in base.ValidateMetric(o, context)) yield return e;
        if (o.Percentiles.Length == 0 || o.Percentiles.Any(p => p is < 0 or > 100 || double.IsNaN(p))) yield return "option 'percentiles' must list values in [0, 100]";
        else if (o.Percentiles.Distinct().Count() != o.Percentiles.Length) yield return $"option 'percentiles' lists {o.Percentiles.GroupBy(p => p).First(g => g.Count() > 1).Key} twice (each is one curve point and one series)";
    }

    /// <inheritdoc/>
    protected override IReadOnlyList<string>? CurvePoints(RoadConfidenceOptions o) =>
        [.. o.Percentiles.Select(p => "p" + p.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture).Replace('.', '_'))];

    /// <inheritdoc/>
    protected override double[] Score(RoadConfidenceOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        long n = b.N, c = b.X.shape[1], h = b.X.shape[2], w = b.X.shape[3], p = o.Percentiles.Length;
        var cam = Maps.Reduce(b.Map.dim() == 4 ? b.Map.detach().to(ScalarType.Float32).sum(1) : b.Map, h, w).reshape(n, h * w);
        var orders = o.Order == RoadConfidenceOrder.Combined ? new[] { false, true } : [o.Order == RoadConfidenceOrder.Lerf];
        // The removed pixels of every (order, percentile) of each input, input-major: N × (orders·P) × H·W.
        var removed = stack(orders.Select(lerf => Removed(lerf ? 1f - cam : cam, o.Percentiles)).ToArray(), 1).view(n, orders.Length * p, 1, h, w);
        long k = orders.Length * p;
        var copies = b.X.unsqueeze(1).expand(n, k, c, h, w).reshape(n * k, c, h, w);
        var unknown = removed.reshape(n * k, 1, h, w);
        var imputed = LinearImputation.Solve(copies, unknown).to(b.X.dtype).view(n, k, c, h, w);
        if (o.Noise > 0)
        {
            // One draw per input from its generator (the same numbers in any batch or shard), on the imputed values only.
            var noise = stack(Enumerable.Range(0, (int)n).Select(i => randn([k, c, h, w], generator: b.Generators[i])).ToArray());
            imputed = imputed + noise * (float)o.Noise * removed.to(imputed.dtype);
        }
        var changes = Changes(b, imputed, o.Softmax).view(n, orders.Length, p);                       // float32
        var curve = o.Order == RoadConfidenceOrder.Combined ? (changes[.., 1] - changes[.., 0]) / 2 : changes[.., 0];
        b.RecordCurves(curve.to(ScalarType.Float64), null, new(o.Percentiles, o.Order switch
        {
            RoadConfidenceOrder.Morf => "percentile p of the map (pixels at or above it imputed)",
            RoadConfidenceOrder.Lerf => "percentile p of 1 − map (pixels at or above it imputed)",
            _ => "percentile p (LeRF − MoRF) / 2",
        }, "change of the target's score", [.. CurvePoints(o)!]));
        // pytorch-grad-cam: np.mean over the percentiles of the float32 changes; ROADCombined halves LeRF − MoRF.
        var mean = changes.mean([2]);
        var score = o.Order == RoadConfidenceOrder.Combined ? (mean[.., 1] - mean[.., 0]) / 2 : mean[.., 0];
        return score.to(ScalarType.Float64).ToArray<double>();
    }

    /// <summary>N × P × H·W: the pixels of each row of <paramref name="v"/> (N × H·W, float32) not below its p-th
    /// percentile, as pytorch-grad-cam's RemoveMostRelevantFirst keeps <c>mask &lt; np.percentile(mask, p)</c>.</summary>
    static Tensor Removed(Tensor v, double[] percentiles)
    {
        long n = v.shape[0], d = v.shape[1];
        var sorted = v.to(ScalarType.Float64).sort(1).Values.contiguous().data<double>().ToArray();
        var thresholds = new float[n * percentiles.Length];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < percentiles.Length; j++)
                thresholds[i * percentiles.Length + j] = (float)Percentile(sorted.AsSpan((int)(i * d), (int)d), percentiles[j]);
        // The comparison is made in float32: torch compares its float32 map with numpy's float64 threshold as a scalar.
        return v.unsqueeze(1) >= tensor(thresholds).view(n, percentiles.Length, 1);
    }

    /// <summary>numpy's percentile with linear interpolation (its default) of sorted values: position p/100·(n − 1),
    /// interpolated as numpy's _lerp (from the upper value when the fraction is at least ½).</summary>
    public static double Percentile(ReadOnlySpan<double> sorted, double p)
    {
        double index = p / 100 * (sorted.Length - 1);
        int lo = (int)Math.Floor(index), hi = Math.Min(lo + 1, sorted.Length - 1);
        double t = index - lo, a = sorted[lo], bValue = sorted[hi], diff = bValue - a;
        return t >= 0.5 ? bValue - diff * (1 - t) : a + diff * t;
    }
}
