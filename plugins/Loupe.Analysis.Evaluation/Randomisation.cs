using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Options of <c>random-logit</c>.</summary>
public sealed record RandomLogitOptions : NormalisedMetricOptions
{
    /// <summary>Absolute values.</summary>
    [Description("take |·| of the channel-summed maps, after normalise, before comparing (Quantus default: false)")]
    public bool Abs { get; init; }
    /// <summary>Normalise.</summary>
    [Description("rescale both maps first, each on its own: true (Quantus normalise_by_max; the default), false, or " + Normalisations.Functions + " (spearman and kendall do not change under any of them; pearson does under negative; ssim min-max scales each map itself; flat-ssim depends on the maps' scale)")]
    public Normalisation Normalise { get; init; } = Normalisation.Default;
    /// <summary>Similarity.</summary>
    [Description("how the two maps are compared: ssim (the default: 7×7 windows over the maps, each min-max scaled), flat-ssim (Quantus's ssim: skimage's SSIM of the flattened maps, 7-value windows), spearman, pearson or kendall (τ-b)")]
    public MapSimilarity Similarity { get; init; } = MapSimilarity.Ssim;
    /// <summary>How the other class is drawn.</summary>
    [Description("how the other class is drawn: per-input (the default: from the input's own generator, seeded by the step seed and its id, so shards and batch sizes give the same classes) or quantus (as Quantus's RandomLogit: numpy's RandomState(quantus_seed).randint(0, K − 1, n) afresh for each of its batches of quantus_batch_size inputs in dataset order, the p-th value for the batch's p-th input, an index into the other classes in increasing order; K is the model's class count, which Quantus's num_classes must equal)")]
    public OtherClassDraw Draw { get; init; }
    /// <summary>Quantus's seed.</summary>
    [Range(0, uint.MaxValue), Description("draw: quantus — Quantus's seed (RandomLogit seed, default 42)")]
    public long QuantusSeed { get; init; } = 42;
    /// <summary>Quantus's batch size.</summary>
    [Range(1, int.MaxValue), Description("draw: quantus — the batch_size Quantus was called with (its default: 64): numpy is seeded again at each of its batches")]
    public int QuantusBatchSize { get; init; } = 64;
    /// <summary>What a map's values are.</summary>
    [Description("pixels (the default: the channel-summed maps) or values (every value of the maps as the method gives them, a per-channel map's channels apart, as Quantus compares the flattened maps; normalise and |·| per value; not with similarity: ssim, whose windows are 2-D)")]
    public FeatureUnit Features { get; init; }

    /// <summary>The maps' values as these options read them (N×features).</summary>
    internal Tensor Values(MetricBatch b) => Features == FeatureUnit.Values ? b.MapValues(Abs, Normalise.Resolve()) : b.Features(Abs, Normalise.Resolve());
}

/// <summary>How <c>random-logit</c> draws the other class.</summary>
public enum OtherClassDraw
{
    /// <summary>From the input's generator (step seed and input id).</summary>
    PerInput,
    /// <summary>As Quantus's RandomLogit draws it (numpy's legacy RandomState, per batch).</summary>
    Quantus,
}

/// <summary><c>random-logit</c> (Sixt et al. 2020; Quantus RandomLogit): the method is run again for a class drawn
/// uniformly among the other classes (seeded per input id; or as Quantus draws it: <c>draw: quantus</c>), and the score is the SSIM of the two maps (channel-summed,
/// each min-max normalised; 7×7 uniform window, as <c>sanity-randomisation</c>; or another <c>similarity</c>, such as
/// Quantus's 1-D <c>flat-ssim</c>). A map that does not depend on the
/// class scores 1. Needs a class target. Lower is better.</summary>
public sealed class RandomLogit : QualityMetric<RandomLogitOptions>
{
    /// <inheritdoc/>
    protected override string? ExplainsAgain(RandomLogitOptions options) => "another class";
    /// <inheritdoc/>
    protected override bool HoldsSideInputs => true;   // the other class's maps: one pass of the batch

    /// <inheritdoc/>
    public override string Id => "random-logit";
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(RandomLogitOptions o, AnalysisValidationContext context)
    {
        foreach (var e in OptionRules.OnlyWith(o, o.Draw == OtherClassDraw.Quantus, "draw: quantus", nameof(o.QuantusSeed), nameof(o.QuantusBatchSize))) yield return e;
        if (o.Features == FeatureUnit.Values && o.Similarity == MapSimilarity.Ssim)
            yield return "option 'features': values compares the flattened maps (as Quantus does); similarity: ssim needs 2-D maps — use flat-ssim (Quantus's ssim), spearman, pearson or kendall";
        if (context.OutputShape is { Length: not 2 } output) yield return NoOtherClass(output);
    }

    static string NoOtherClass(long[] output) =>
        $"it explains another class of a classifier's output (N×K); the model's output is N×{string.Join("×", output.Skip(1))}, whose target (a class over a region, a box) has no other class to explain the same way";

    /// <inheritdoc/>
    protected override double[] Score(RandomLogitOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        var ctx = b.Context;
        var classes = b.Selection.Classes ?? throw new LoupeException("random-logit: the target is not a class (use a class target such as top-1)");
        var (_, output, _) = Explain.Scores(ctx, b.X, b.Selection, 0);
        if (output.dim() != 2)
            throw new LoupeException($"random-logit: {NoOtherClass(output.shape)}");
        long k = output.shape[1];
        if (k < 2) throw new LoupeException("random-logit: the model has one output; there is no other class to compare with");
        var off = new long[b.N];
        for (int i = 0; i < b.N; i++)
        {
            long r = o.Draw == OtherClassDraw.Quantus ? QuantusDraw(o, b.Start + i, k)
                : randint(0, k - 1, [1], generator: b.Generators[i]).item<long>();   // one of the k − 1 other classes
            off[i] = r >= classes[i] ? r + 1 : r;
        }
        var labels = off.Select(c => c < ctx.Labels.Count ? $"class {c} ({ctx.Labels[(int)c]})" : $"class {c}").ToArray();
        var other = LinkedMaps(o, ctx, b.X, null, new TargetSelection(off, labels), b.Batch.Ids).Map;
        var a = o.Values(b);
        var bm = o.Values(new MetricBatch(ctx, b.Batch, other, b.Selection, b.Generators, null) { NormaliseGroup = b.NormaliseGroup });
        long h = b.X.shape[2], w = b.X.shape[3];
        return Enumerable.Range(0, (int)b.N).Select(i => MapSimilarities.Of(o.Similarity, a[i], bm[i], h, w)).ToArray();
    }

    /// <summary>Quantus's draw for the input at dataset row <paramref name="row"/>: its batch (of quantus_batch_size rows)
    /// seeds numpy afresh and draws one index per row, the row's at its place in the batch (numpy's draws are a prefix
    /// of any longer draw, so the batch's actual length does not matter).</summary>
    static long QuantusDraw(RandomLogitOptions o, long row, long k)
    {
        int place = (int)(row % o.QuantusBatchSize);
        return new NumpyRandomState((uint)o.QuantusSeed).RandInt(0, k - 1, place + 1)[place];
    }
}
