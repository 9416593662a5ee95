using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Options of the metrics that compare each input's explanation with the other inputs' (Quantus defaults:
/// abs and normalise_by_max on).</summary>
public sealed record DatasetMetricOptions : MetricOptions
{
    /// <summary>Absolute values.</summary>
    [Description("take |·| of the channel-summed map (after normalise, as Quantus) (Quantus default: true)")]
    public bool Abs { get; init; } = true;
    /// <summary>Normalise.</summary>
    [Description("rescale the run's maps first, all together as Quantus rescales its batch: true (Quantus normalise_by_max: one max |a| over every map; the default), false, or " + Normalisations.Functions)]
    public Normalisation Normalise { get; init; } = Normalisation.Default;
    /// <summary>Distance threshold.</summary>
    [Range(0.0, 1.0), Description("sufficiency: two explanations agree when their distance, divided by the largest distance between any two, is ≤ threshold (Quantus: 0.6)")]
    public double Threshold { get; init; } = 0.6;
    /// <summary>Distance between two explanations.</summary>
    [Description("sufficiency: the distance between two explanations (Quantus distance_func, a scipy cdist metric): seuclidean (the default: each pixel over its standard deviation across the run, pixels that never vary left out), euclidean, sqeuclidean, cityblock, chebyshev, cosine, correlation, braycurtis, canberra, jensenshannon (non-negative maps), minkowski (scipy's default p = 2, the only one Quantus's call can give: euclidean), hamming (the share of values that differ)")]
    public Distance Distance { get; init; }
    /// <summary>Top n.</summary>
    [Range(1, int.MaxValue), Description("consistency: the n of top-n and top-n-sign (Quantus: 5)")]
    public int TopN { get; init; } = 5;
    /// <summary>Discretisation.</summary>
    [Description("consistency: what two explanations must share to agree (Quantus discretise_func): top-n (the default: the set of positions of their n most relevant pixels), top-n-sign (Quantus's default: the signs of the first n values in raster order), sign (the signs of all values), floating-points (all values rounded to 2 decimals), rank (the order of all values, ties in pixel order)")]
    public Discretisation Discretise { get; init; }
    /// <summary>Quantus's batch scope.</summary>
    [Range(1, int.MaxValue), Description("compare each input only with the inputs of its own group of this many, in dataset order, as Quantus compares within each batch of its batch_size (64 by default): its distances, their normalisation, seuclidean's variances and the agreeing inputs are per batch; the maps are still normalised over the whole run, as Quantus normalises the a_batch it is given (default: one group, the whole run)")]
    public int? QuantusBatchSize { get; init; }
    /// <summary>What a feature is.</summary>
    [Description("pixels (the default: one value per pixel, a per-channel map summed over its channels) or values (every value of the map as the evaluated step gives it — a per-channel map's C·H·W values, as Quantus compares the a_batch it is given)")]
    public FeatureUnit Features { get; init; }
}

/// <summary>The distances of <c>sufficiency</c> (scipy's cdist names).</summary>
public enum Distance
{
    /// <summary>Standardised Euclidean: each pixel over its standard deviation across the run (pixels that never vary
    /// left out; scipy would give NaN).</summary>
    Seuclidean,
    /// <summary>‖u − v‖₂.</summary>
    Euclidean,
    /// <summary>‖u − v‖₂².</summary>
    Sqeuclidean,
    /// <summary>‖u − v‖₁.</summary>
    Cityblock,
    /// <summary>‖u − v‖∞.</summary>
    Chebyshev,
    /// <summary>1 − u·v / (‖u‖‖v‖).</summary>
    Cosine,
    /// <summary>The cosine distance of the centred vectors.</summary>
    Correlation,
    /// <summary>Bray–Curtis: Σ|u − v| / Σ|u + v|.</summary>
    Braycurtis,
    /// <summary>Canberra: Σ |u − v| / (|u| + |v|), a term whose both values are 0 counting 0.</summary>
    Canberra,
    /// <summary>Jensen–Shannon: √(½ KL(p‖m) + ½ KL(q‖m)), p = u/Σu, q = v/Σv, m = (p + q)/2, natural logarithm
    /// (non-negative maps: abs).</summary>
    Jensenshannon,
    /// <summary>scipy's minkowski with its default p = 2 (Quantus passes no p): ‖u − v‖₂.</summary>
    Minkowski,
    /// <summary>Hamming: the share of values where u ≠ v.</summary>
    Hamming,
}

/// <summary>The discretisations of <c>consistency</c> (Quantus's discretise_func).</summary>
public enum Discretisation
{
    /// <summary>The set of positions of the n most relevant pixels.</summary>
    TopN,
    /// <summary>Quantus's <c>top_n_sign</c>: the signs of the first n values of the flattened map.</summary>
    TopNSign,
    /// <summary>Quantus's <c>sign</c>: the signs of all values.</summary>
    Sign,
    /// <summary>Quantus's <c>floating_points</c>: all values rounded to 2 decimals.</summary>
    FloatingPoints,
    /// <summary>Quantus's <c>rank</c>: the order of the values, largest first (ties in pixel order).</summary>
    Rank,
}

/// <summary>Base of the metrics of Dasgupta et al. (2022) whose per-input value depends on every input of the run:
/// the maps and predicted classes of all inputs are gathered (batching does not change the numbers), then scored
/// together. They compare inputs across the whole dataset, so they do not run on shards.</summary>
[ReadsMetric, ReadsOptions(nameof(DatasetMetricOptions.Abs), nameof(DatasetMetricOptions.Normalise), nameof(DatasetMetricOptions.QuantusBatchSize), nameof(DatasetMetricOptions.Features))]
public abstract class DatasetMetric : MetricAnalysis<DatasetMetricOptions>
{
    /// <summary>The component id.</summary>
    public abstract string Id { get; }
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward) { HandlesSideInputs = true };   // the batch's own forward only
    /// <inheritdoc/>
    public override IReadOnlyList<string> MetricNames => [Id.Replace('-', '_') + "_mean", Id.Replace('-', '_') + "_std"];

    /// <summary>One score per input from all features (N×D, float64) and predicted classes.</summary>
    protected abstract double[] Score(DatasetMetricOptions o, Tensor a, long[] predicted);

    /// <inheritdoc/>
    protected override string? ComparesPredictedClass(DatasetMetricOptions options) => "";

    /// <inheritdoc/>
    protected override void Evaluate(DatasetMetricOptions o, IAnalysisContext ctx, MetricWriter writer)
    {
        var ids = new List<string>();
        var labels = new List<string>();
        var features = new List<Tensor>();
        var predicted = new List<long>();
        using var scope = NewDisposeScope();
        foreach (var batch in ctx.Batches())
        {
            ctx.Cancellation.ThrowIfCancellationRequested();
            using var inner = NewDisposeScope();
            var result = LinkedMaps(o, ctx, batch);
            var (_, logits, _) = Explain.Scores(ctx, batch.Input, result.Selection, 0);
            predicted.AddRange(Maps.TopClass(logits, Id).ToArray<long>());
            var mb = new MetricBatch(ctx, batch, result.Map, result.Selection, [], null);
            features.Add(inner.MoveToOuter(o.Features == FeatureUnit.Values ? mb.MapValues(false, Normalisation.None) : mb.Features(false, Normalisation.None)));
            ids.AddRange(batch.Ids);
            labels.AddRange(result.Selection.Labels);
        }
        var values = ids.Count == 0 ? [] : Grouped(o, Together(cat(features, 0), o.Normalise.Resolve(), o.Abs), predicted.ToArray());
        QualityMetric<DatasetMetricOptions>.WriteScores(ctx, writer, Id, o, true, ids, labels, values);
    }

    /// <summary><see cref="Score"/> of each group of <c>quantus_batch_size</c> consecutive inputs on its own (all inputs
    /// when unset).</summary>
    double[] Grouped(DatasetMetricOptions o, Tensor a, long[] predicted)
    {
        int n = predicted.Length, group = Math.Min(n, o.QuantusBatchSize ?? n);
        var values = new List<double>(n);
        for (int start = 0; start < n; start += group)
        {
            using var scope = NewDisposeScope();
            int count = Math.Min(group, n - start);
            values.AddRange(Score(o, a.narrow(0, start, count), predicted[start..(start + count)]));
        }
        return [.. values];
    }

    /// <summary>The run's maps (N×D) normalised together, as one array: Quantus normalises the whole batch it is
    /// given (normalise_by_max: one max |a| over every map), and these metrics see the run as one batch; then |·|.</summary>
    static Tensor Together(Tensor a, Normalisation normalise, bool abs)
    {
        using var scope = NewDisposeScope();
        var n = Normalisations.Rows(a.reshape(1, -1), normalise).view_as(a);
        return scope.MoveToOuter(abs ? n.abs() : n);
    }

    /// <summary>Per input i: among the other inputs j whose explanation agrees with i's (<paramref name="agree"/>, N×N
    /// bool), the share predicted as the same class as i; 0 when none agrees (Quantus).</summary>
    protected static double[] SameClassShare(Tensor agree, long[] predicted)
    {
        using var scope = NewDisposeScope();
        long n = predicted.Length;
        var p = tensor(predicted);
        var others = agree & eye(n, dtype: ScalarType.Bool).logical_not();
        var same = others & (p.unsqueeze(0) == p.unsqueeze(1));
        var count = others.sum(1).to(ScalarType.Float64);
        return where(count > 0, same.sum(1).to(ScalarType.Float64) / count.clamp_min(1), zeros_like(count)).ToArray<double>();
    }
}

/// <summary><c>sufficiency</c> (Dasgupta et al. 2022; Quantus Sufficiency): two explanations agree when their
/// distance (by default the standardised Euclidean: each pixel scaled by its variance over the run's maps; pixels that
/// never vary are left out), divided by the largest distance between any two maps (Quantus's normalise_func on the
/// distance matrix: <c>second-moment</c> divides by its root mean square instead), is at most <c>threshold</c>; the score is the share
/// of the other inputs with an agreeing explanation that the model assigns to the same class. Higher is better.</summary>
[ReadsOptions(nameof(DatasetMetricOptions.Threshold), nameof(DatasetMetricOptions.Distance))]
public sealed class Sufficiency : DatasetMetric
{
    /// <inheritdoc/>
    public override string Id => "sufficiency";

    /// <inheritdoc/>
    protected override double[] Score(DatasetMetricOptions o, Tensor a, long[] predicted)
    {
        using var scope = NewDisposeScope();
        var d = Distances(a, o.Distance);
        // Quantus normalises the distance matrix (all of it) with normalise_func, whether or not the maps are.
        var function = o.Normalise.Resolve() is var f and not Normalisation.None ? f : Normalisation.Max;
        var dn = Normalisations.Rows(d.reshape(1, -1), function).view_as(d);
        return SameClassShare(dn <= o.Threshold, predicted);
    }

    /// <summary>The N×N distances between the rows of <paramref name="a"/> (scipy's cdist of a with itself).</summary>
    public static Tensor Distances(Tensor a, Distance distance)
    {
        using var scope = NewDisposeScope();
        Tensor Cosine(Tensor u)
        {
            var unit = u / u.norm(1, keepdim: true);
            return 1 - unit.MatMul(unit.T);
        }
        var d = distance switch
        {
            Distance.Seuclidean => Standardised(a),
            Distance.Euclidean or Distance.Minkowski => cdist(a, a),
            Distance.Hamming => Pairwise(a, (u, v) => (u != v).to(ScalarType.Float64).mean([1])),
            Distance.Sqeuclidean => cdist(a, a).square(),
            Distance.Cityblock => cdist(a, a, p: 1),
            Distance.Chebyshev => Pairwise(a, (u, v) => (u - v).abs().amax([1])),
            Distance.Cosine => Cosine(a),
            Distance.Correlation => Cosine(a - a.mean([1], keepdim: true)),
            Distance.Braycurtis => Pairwise(a, (u, v) => (u - v).abs().sum(1) / (u + v).abs().sum(1)),
            Distance.Canberra => Pairwise(a, (u, v) =>
            {
                var den = u.abs() + v.abs();
                return where(den > 0, (u - v).abs() / where(den > 0, den, ones_like(den)), zeros_like(den)).sum(1);
            }),
            Distance.Jensenshannon => Pairwise(a / a.sum(1, keepdim: true), (p, q) =>
            {
                var m = (p + q) / 2;
                Tensor Kl(Tensor x) => where(x > 0, x * (x / where(m > 0, m, ones_like(m))).log(), zeros_like(x)).sum(1);
                return ((Kl(p) + Kl(q)) / 2).clamp_min(0).sqrt();
            }),
            _ => throw new ArgumentOutOfRangeException(nameof(distance), distance, null),
        };
        return scope.MoveToOuter(d);
    }

    /// <summary>f(u, v) for every pair of rows, row by row (u: one row, 1×D, against v: all N×D; f reduces over dim 1):
    /// N×D in memory at a time, not N×N×D.</summary>
    static Tensor Pairwise(Tensor a, Func<Tensor, Tensor, Tensor> f)
    {
        using var scope = NewDisposeScope();
        var rows = new Tensor[a.shape[0]];
        for (long i = 0; i < rows.Length; i++) rows[i] = f(a[i].unsqueeze(0), a);
        return scope.MoveToOuter(stack(rows));
    }

    static Tensor Standardised(Tensor a)
    {
        var v = a.shape[0] > 1 ? a.var(0, unbiased: true) : zeros(a.shape[1], dtype: ScalarType.Float64);
        var cols = (v > 0).nonzero().squeeze(1);
        var z = a.index_select(1, cols) / v.index_select(0, cols).sqrt();
        return cdist(z, z);
    }
}

/// <summary><c>consistency</c> (Dasgupta et al. 2022; Quantus Consistency): explanations are discretised (by default)
/// to the set of positions of their <c>top_n</c> most relevant pixels (Quantus's default discretisation,
/// <c>discretise: top-n-sign</c>, keeps the signs of the first n values of the flattened map, whatever their relevance;
/// Loupe follows the paper's idea of an explanation as its most relevant features; <c>sign</c>, <c>floating-points</c>
/// and <c>rank</c> are Quantus's others); the score is the share of the other inputs with the same discretised explanation that
/// the model assigns to the same class (0 when none has it). Higher is better.</summary>
[ReadsOptions(nameof(DatasetMetricOptions.TopN), nameof(DatasetMetricOptions.Discretise))]
public sealed class Consistency : DatasetMetric
{
    /// <inheritdoc/>
    public override string Id => "consistency";

    /// <inheritdoc/>
    protected override double[] Score(DatasetMetricOptions o, Tensor a, long[] predicted)
    {
        using var scope = NewDisposeScope();
        long n = a.shape[0];
        int k = (int)Math.Min(o.TopN, a.shape[1]);
        var label = o.Discretise switch
        {
            Discretisation.TopN => a.sort(1, descending: true, stable: true).Indices.narrow(1, 0, k).sort(1).Values,   // the set, sorted
            Discretisation.TopNSign => a.narrow(1, 0, k).sign(),
            Discretisation.Sign => a.sign(),
            Discretisation.FloatingPoints => a.round(2),
            Discretisation.Rank => a.sort(1, descending: true, stable: true).Indices,
            _ => throw new ArgumentOutOfRangeException(nameof(o), o.Discretise, null),
        };
        var same = (label.unsqueeze(1) == label.unsqueeze(0)).all(2);                                     // N×N
        return SameClassShare(same, predicted);
    }
}
