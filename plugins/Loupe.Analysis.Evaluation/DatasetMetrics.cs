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
    [Description("take |·| of the channel-summed map first (Quantus default: true)")]
    public bool Abs { get; init; } = true;
    /// <summary>Normalise.</summary>
    [Description("rescale each map first: true (Quantus normalise_by_max; the default), false, or max (normalise_by_max), negative (normalise_by_negative: positives over the max, negatives over |min|), second-moment (normalise_by_average_second_moment_estimate: over √(mean a²))")]
    public Normalisation Normalise { get; init; } = Normalisation.Default;
    /// <summary>Distance threshold.</summary>
    [Range(0.0, 1.0), Description("sufficiency: two explanations agree when their distance, divided by the largest distance between any two, is ≤ threshold (Quantus: 0.6)")]
    public double Threshold { get; init; } = 0.6;
    /// <summary>Top n.</summary>
    [Range(1, int.MaxValue), Description("consistency: an explanation is discretised to its n most relevant pixels (the set of their positions)")]
    public int TopN { get; init; } = 5;
}

/// <summary>Base of the metrics of Dasgupta et al. (2022) whose per-input value depends on every input of the run:
/// the maps and predicted classes of all inputs are gathered (batching does not change the numbers), then scored
/// together. They compare inputs across the whole dataset, so they do not run on shards.</summary>
public abstract class DatasetMetric : MetricAnalysis<DatasetMetricOptions>
{
    /// <summary>The component id.</summary>
    public abstract string Id { get; }
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    /// <inheritdoc/>
    public override IReadOnlyList<string> MetricNames => [Id.Replace('-', '_') + "_mean", Id.Replace('-', '_') + "_std"];

    /// <summary>One score per input from all features (N×D, float64) and predicted classes.</summary>
    protected abstract double[] Score(DatasetMetricOptions o, Tensor a, long[] predicted);

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
            var result = LinkedMaps(o, ctx, batch.Input, batch.Ids);
            var (_, logits, _) = Explain.Scores(ctx, batch.Input, result.Selection, 0);
            predicted.AddRange(logits.argmax(1).ToArray<long>());
            var mb = new MetricBatch(ctx, batch, result.Map, result.Selection, [], null);
            features.Add(inner.MoveToOuter(mb.Features(o.Abs, o.Normalise.Resolve())));
            ids.AddRange(batch.Ids);
            labels.AddRange(result.Selection.Labels);
        }
        var values = ids.Count == 0 ? [] : Score(o, cat(features, 0), predicted.ToArray());
        QualityMetric<DatasetMetricOptions>.WriteScores(ctx, writer, Id, o, true, ids, labels, values);
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
/// standardised Euclidean distance (each pixel scaled by its variance over the run's maps; pixels that never vary are
/// left out), divided by the largest distance between any two maps, is at most <c>threshold</c>; the score is the share
/// of the other inputs with an agreeing explanation that the model assigns to the same class. Higher is better.</summary>
public sealed class Sufficiency : DatasetMetric
{
    /// <inheritdoc/>
    public override string Id => "sufficiency";

    /// <inheritdoc/>
    protected override double[] Score(DatasetMetricOptions o, Tensor a, long[] predicted)
    {
        using var scope = NewDisposeScope();
        var v = a.shape[0] > 1 ? a.var(0, unbiased: true) : zeros(a.shape[1], dtype: ScalarType.Float64);
        var keep = v > 0;
        var cols = keep.nonzero().squeeze(1);
        var z = a.index_select(1, cols) / v.index_select(0, cols).sqrt();
        var d = cdist(z, z);
        var max = d.max();
        var dn = max.item<double>() > 0 ? d / max : d;
        return SameClassShare(dn <= o.Threshold, predicted);
    }
}

/// <summary><c>consistency</c> (Dasgupta et al. 2022; Quantus Consistency): explanations are discretised to the set
/// of positions of their <c>top_n</c> most relevant pixels (Quantus's default discretisation keeps the signs of the
/// first n values of the flattened map, whatever their relevance; Loupe follows the paper's idea of an explanation as
/// its most relevant features); the score is the share of the other inputs with the same discretised explanation that
/// the model assigns to the same class (0 when none has it). Higher is better.</summary>
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
        var top = a.sort(1, descending: true, stable: true).Indices.narrow(1, 0, k).sort(1).Values;   // the set, sorted
        var same = (top.unsqueeze(1) == top.unsqueeze(0)).all(2);                                     // N×N
        return SameClassShare(same, predicted);
    }
}
