using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
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
    /// <summary>Min-max scaling of the maps.</summary>
    [Description("min-max scale each map first, as pytorch-grad-cam's scale_cam_image (x − min, / (1e-7 + max)): for methods whose maps are not CAMs in [0, 1] (default false: the map as the evaluated step gives it — Loupe's CAMs under convention: pytorch-grad-cam are pytorch-grad-cam's)")]
    public bool Scale { get; init; }
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
    protected override bool HoldsSideInputs => true;

    /// <inheritdoc/>
    protected override int? MicroBatch(TOptions options) => options.MicroBatch;

    /// <summary>Errors of a <c>percentiles</c> option: values in [0, 100], each once (one curve point and one series).</summary>
    protected static IEnumerable<string> PercentileErrors(double[] percentiles)
    {
        if (percentiles.Length == 0 || percentiles.Any(p => p is < 0 or > 100 || double.IsNaN(p))) yield return "option 'percentiles' must list values in [0, 100]";
        else if (percentiles.Distinct().Count() != percentiles.Length) yield return $"option 'percentiles' lists {percentiles.GroupBy(p => p).First(g => g.Count() > 1).Key} twice (each is one curve point and one series)";
    }

    /// <summary>The maps as the metric reads them: min-max scaled under <c>scale</c>; otherwise as given, with a warning
    /// (once) when they leave [0, 1], the range pytorch-grad-cam's metrics are written for.</summary>
    protected Tensor MapOf(TOptions o, MetricBatch b)
    {
        var map = b.Map.detach().to(ScalarType.Float32);
        if (o.Scale)
        {
            var flat = map.reshape(b.N, -1);
            var shifted = flat - flat.amin([1], keepdim: true);
            return (shifted / (1e-7f + shifted.amax([1], keepdim: true))).view(map.shape);
        }
        double lo = map.min().item<float>(), hi = map.max().item<float>();
        if (lo < 0 || hi > 1)
            b.Context.Warn($"{Id}: the maps of '{o.Of!.Id}' leave [0, 1] (seen {lo:G3} … {hi:G3}); pytorch-grad-cam's metrics are written for CAMs scaled to [0, 1] — give the method convention: pytorch-grad-cam, or this metric scale: true");
        return map;
    }

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
    protected static Tensor Cam(MetricBatch b, Tensor map)
    {
        long h = b.X.shape[2], w = b.X.shape[3];
        var m = map;
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
        var change = Changes(b, (b.X * Cam(b, MapOf(o, b))).unsqueeze(1), o.Softmax).squeeze(1);
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
        foreach (var e in base.ValidateMetric(o, context).Concat(PercentileErrors(o.Percentiles))) yield return e;
    }

    /// <inheritdoc/>
    protected override IReadOnlyList<string>? CurvePoints(RoadConfidenceOptions o) =>
        [.. o.Percentiles.Select(p => "p" + p.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture).Replace('.', '_'))];

    /// <inheritdoc/>
    protected override double[] Score(RoadConfidenceOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        var orders = o.Order == RoadConfidenceOrder.Combined ? new[] { false, true } : [o.Order == RoadConfidenceOrder.Lerf];
        var changes = RoadChanges(b, CamPixels(b, MapOf(o, b)), o.Percentiles, orders, o.Noise, o.Softmax);                 // N×orders×P, float32
        var curve = o.Order == RoadConfidenceOrder.Combined ? (changes[.., 1] - changes[.., 0]) / 2 : changes[.., 0];
        b.RecordCurves(curve.to(ScalarType.Float64), null, new(o.Percentiles, o.Order switch
        {
            RoadConfidenceOrder.Morf => "percentile p of the map (pixels at or above it imputed)",
            RoadConfidenceOrder.Lerf => "percentile p of 1 − map (pixels at or above it imputed)",
            _ => "percentile p (LeRF − MoRF) / 2",
        }, "change of the target's score", [.. CurvePoints(o)!]));
        return Averaged(changes, o.Order == RoadConfidenceOrder.Combined).to(ScalarType.Float64).ToArray<double>();
    }

    /// <summary>pytorch-grad-cam's averages over the percentiles (np.mean of the float32 changes): of the one order
    /// given, or ROADCombined's (LeRF − MoRF) / 2 of [MoRF, LeRF] (<paramref name="combined"/>). N.</summary>
    internal static Tensor Averaged(Tensor changes, bool combined)
    {
        var mean = changes.mean([2]);
        return combined ? (mean[.., 1] - mean[.., 0]) / 2 : mean[.., 0];
    }

    /// <summary>The map as one float32 value per pixel at the input's resolution, N × H·W (a per-channel map's signed
    /// channel sum: pytorch-grad-cam's CAMs are one value per pixel).</summary>
    internal static Tensor CamPixels(MetricBatch b, Tensor map)
    {
        long h = b.X.shape[2], w = b.X.shape[3];
        return Maps.Reduce(map.dim() == 4 ? map.sum(1) : map, h, w).reshape(b.N, h * w);
    }

    /// <summary>f(imputed) − f(x) (float32) for every order (false: MoRF, true: LeRF) and percentile: N × orders × P.
    /// The pixels at or above each percentile (of 1 − map under LeRF) are imputed, + N(0, σ²) drawn per input.</summary>
    internal static Tensor RoadChanges(MetricBatch b, Tensor cam, double[] percentiles, bool[] orders, double sigma, bool softmax)
    {
        using var scope = NewDisposeScope();
        long n = b.N, c = b.X.shape[1], h = b.X.shape[2], w = b.X.shape[3], p = percentiles.Length, k = orders.Length * p;
        // The removed pixels of every (order, percentile) of each input, input-major: N × (orders·P) × 1 × H × W.
        var removed = stack(orders.Select(lerf => Removed(lerf ? 1f - cam : cam, percentiles)).ToArray(), 1).view(n, k, 1, h, w);
        var copies = b.X.unsqueeze(1).expand(n, k, c, h, w).reshape(n * k, c, h, w);
        var imputed = LinearImputation.Solve(copies, removed.reshape(n * k, 1, h, w)).to(b.X.dtype).view(n, k, c, h, w);
        if (sigma > 0)
        {
            // One draw per input from its generator (the same numbers in any batch or shard), on the imputed values only.
            var noise = stack(Enumerable.Range(0, (int)n).Select(i => randn([k, c, h, w], generator: b.Generators[i])).ToArray());
            imputed = imputed + noise * (float)sigma * removed.to(imputed.dtype);
        }
        return scope.MoveToOuter(Changes(b, imputed, softmax).view(n, orders.Length, p));
    }

    /// <summary>N × P × H·W: the pixels of each row of <paramref name="v"/> (N × H·W, float32) not below its p-th
    /// percentile, as pytorch-grad-cam's RemoveMostRelevantFirst keeps <c>mask &lt; np.percentile(mask, p)</c>.</summary>
    static Tensor Removed(Tensor v, double[] percentiles)
    {
        long n = v.shape[0], d = v.shape[1];
        var sorted = v.to(ScalarType.Float64).sort(1).Values.ToArray<double>();
        var thresholds = new float[n * percentiles.Length];
        for (int i = 0; i < n; i++)
        {
            var row = sorted.AsSpan((int)(i * d), (int)d);
            bool nan = double.IsNaN(row[^1]);   // sorted last; numpy's percentile of a row with NaN is NaN
            for (int j = 0; j < percentiles.Length; j++)
                thresholds[i * percentiles.Length + j] = nan ? float.NaN : (float)Percentile(row, percentiles[j]);
        }
        // The comparison is made in float32 (torch compares its float32 map with numpy's float64 threshold as a
        // scalar), and negated as the library keeps mask < threshold: a NaN value or threshold removes the pixel.
        return (v.unsqueeze(1) < tensor(thresholds).view(n, percentiles.Length, 1)).logical_not();
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

/// <summary>What <c>arcc</c> reports.</summary>
public enum ArccPart
{
    /// <summary>The harmonic mean of coherency, 1 − complexity and ROAD.</summary>
    Arcc,
    /// <summary>(ρ + 1) / 2 of the map and the map of the input multiplied by it.</summary>
    Coherency,
    /// <summary>The L1 norm of the map over its pixels.</summary>
    Complexity,
    /// <summary>ROADCombined over the percentiles, × 2 and clipped to [0, 1].</summary>
    Road,
}

/// <summary>Options of <c>arcc</c>.</summary>
public sealed record ArccOptions : ConfidenceOptions
{
    /// <summary>Part.</summary>
    [Description("arcc (the default: 3 / (1/(coherency + 1e-8) + 1/(1 − complexity + 1e-8) + 1/(road + 1e-8)), pytorch-grad-cam's ARCC; higher is better), or one of its parts as pytorch-grad-cam's classes compute them: coherency (Coherency: (Pearson ρ of the map and the evaluated method's map of x ⊙ map, + 1) / 2; higher is better), complexity (Complexity: Σ|map| / pixels; lower is better) or road (ROADCombined × 2, clipped to [0, 1]; higher is better)")]
    public ArccPart Part { get; init; }
    /// <summary>ROAD percentiles.</summary>
    [Description("the percentiles of ARCC's ROADCombined (pytorch-grad-cam's road_percentiles: 20, 40, 60, 80)")]
    public double[] Percentiles { get; init; } = [20, 40, 60, 80];
    /// <summary>Noise σ.</summary>
    [Range(0.0, 1000.0), Description("σ of the Gaussian noise added to each imputed value of the ROAD part, normalised units, seeded per input (pytorch-grad-cam's NoisyLinearImputer: 0.01)")]
    public double Noise { get; init; } = 0.01;
}

/// <summary><c>arcc</c>: pytorch-grad-cam's ARCC — the harmonic mean of a map's coherency (the method's map of the input
/// multiplied by the map correlates with the map: (ρ + 1) / 2, Pearson with n − 1 and a 1e-8 guard), its simplicity
/// (1 − Σ|map| / pixels; the map in [0, 1] as pytorch-grad-cam's CAMs) and its ROADCombined (× 2, clipped to [0, 1]).
/// Coherency re-runs the evaluated method on x ⊙ map for the same classes (batched, as every metric's re-evaluations).</summary>
public sealed class Arcc : ConfidenceMetric<ArccOptions>
{
    /// <inheritdoc/>
    protected override string? ExplainsAgain(ArccOptions options) => "the inputs multiplied by their maps (coherency)";

    /// <inheritdoc/>
    public override string Id => "arcc";
    /// <inheritdoc/>
    public override bool HigherIsBetter => true;
    /// <inheritdoc/>
    protected override bool HigherIsBetterWith(ArccOptions options) => options.Part != ArccPart.Complexity;

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(ArccOptions o, AnalysisValidationContext context)
    {
        foreach (var e in base.ValidateMetric(o, context).Concat(PercentileErrors(o.Percentiles))) yield return e;
    }

    /// <inheritdoc/>
    protected override double[] Score(ArccOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        var cam = RoadConfidence.CamPixels(b, MapOf(o, b));                                                                    // N×HW
        var complexity = cam.abs().to(ScalarType.Float64).mean([1]);
        Tensor Coherency()
        {
            long h = b.X.shape[2], w = b.X.shape[3];
            var mixed = LinkedMaps(o, b.Context, b.X * cam.view(b.N, 1, h, w), null, b.Selection, b.Batch.Ids).Map;
            var again = Maps.Reduce(mixed.dim() == 4 ? mixed.detach().to(ScalarType.Float32).sum(1) : mixed, h, w).reshape(b.N, h * w);
            return (Pearson(again.to(ScalarType.Float64), cam.to(ScalarType.Float64)) + 1) / 2;
        }
        Tensor Road() => RoadConfidence.Averaged(RoadConfidence.RoadChanges(b, cam, o.Percentiles, [false, true], o.Noise, o.Softmax), true)
            .to(ScalarType.Float64).mul(2).clamp(0, 1);
        var score = o.Part switch
        {
            ArccPart.Complexity => complexity,
            ArccPart.Coherency => Coherency(),
            ArccPart.Road => Road(),
            _ => 3 / (1 / (Coherency() + 1e-8) + 1 / (1 - complexity + 1e-8) + 1 / (Road() + 1e-8)),
        };
        return score.ToArray<double>();
    }

    /// <summary>Pearson's ρ per row with n − 1 in the covariance and deviations and 1e-8 added to their product, as
    /// pytorch-grad-cam's batch_pearson_coherency.</summary>
    static Tensor Pearson(Tensor a, Tensor b)
    {
        long d = a.shape[1];
        var ac = a - a.mean([1], keepdim: true);
        var bc = b - b.mean([1], keepdim: true);
        var cov = (ac * bc).sum(1) / (d - 1);
        var sa = ((ac * ac).sum(1) / (d - 1)).sqrt();
        var sb = ((bc * bc).sum(1) / (d - 1)).sqrt();
        return cov / (sa * sb + 1e-8);
    }
}
