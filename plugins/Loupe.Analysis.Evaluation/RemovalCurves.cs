using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Base of the removal-curve metrics: units (pixels or patches) replaced cumulatively by the baseline in
/// decreasing order of attribution; the score is the area under the probability curve, normalised by its length
/// (Quantus returns the curve, or its trapezoid with dx = 1 = this × (steps − 1)). Lower is better.</summary>
[ReadsBaseline, ReadsOptions(nameof(FaithfulnessOptions.Score))]
public abstract class RemovalCurveMetric : FaithfulnessMetric
{
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;

    /// <summary>The step of each pixel, most relevant first, and each row's number of steps.</summary>
    protected abstract Tensor Steps(FaithfulnessOptions o, MetricBatch b, Tensor a, out long[] counts);

    /// <summary>The patch the array is padded to before it is perturbed (0: not padded).</summary>
    protected virtual long Padding(FaithfulnessOptions o) => 0;

    /// <summary>The curve's points (as many as any row can have).</summary>
    protected abstract CurveAxis Axis(FaithfulnessOptions o, MetricBatch b, bool softmax);

    /// <inheritdoc/>
    protected sealed override Tensor Of(FaithfulnessOptions o, MetricBatch b, Tensor a, Tensor baseline, bool softmax)
    {
        var step = Steps(o, b, a, out var counts);
        var curve = Cumulative(b, step, counts.Max(), b.X, CumulativeFill(o, b, baseline, step, counts.Max(), Padding(o)), softmax);
        b.RecordCurves(curve, counts, Axis(o, b, softmax));
        return RowPrefixes(curve, counts, o.Score == ScoreConvention.Quantus ? QualityFormulas.Trapezoid : QualityFormulas.MeanTrapezoid);
    }
}

/// <summary><c>pixel-flipping</c> (Bach et al. 2015): pixels removed most relevant first, <c>features_in_step</c> per step.</summary>
[ReadsOptions(nameof(FaithfulnessOptions.FeaturesInStep), nameof(FaithfulnessOptions.Features))]
public sealed class PixelFlipping : RemovalCurveMetric
{
    /// <inheritdoc/>
    public override string Id => "pixel-flipping";
    /// <inheritdoc/>
    protected override Tensor Steps(FaithfulnessOptions o, MetricBatch b, Tensor a, out long[] counts)
    {
        var step = PixelSteps(o, b, a, true, out long steps);
        counts = Enumerable.Repeat(steps, (int)b.N).ToArray();
        return step;
    }

    /// <inheritdoc/>
    protected override CurveAxis Axis(FaithfulnessOptions o, MetricBatch b, bool softmax) =>
        new([.. Enumerable.Range(1, (int)((FeatureCount(o, b) + o.FeaturesInStep - 1) / o.FeaturesInStep)).Select(k => Math.Min(1.0, (double)k * o.FeaturesInStep / FeatureCount(o, b)))],
            $"share of the {(o.Features == FeatureUnit.Values ? "channel values" : "pixels")} removed (most relevant first)", OutputTitle(softmax));
}

/// <summary><c>selectivity</c> (Montavon et al. 2018): patch × patch regions removed most relevant first, every region
/// that <c>windows</c> yields (grid: Quantus 0.6's blocks; sliding: Quantus 0.5's windows, whose number differs between
/// inputs).</summary>
[ReadsOptions(nameof(FaithfulnessOptions.Patch), nameof(FaithfulnessOptions.Windows))]
public sealed class Selectivity : RemovalCurveMetric
{
    /// <inheritdoc/>
    public override string Id => "selectivity";
    /// <inheritdoc/>
    protected override bool SumsBlocksOverChannels => true;
    /// <inheritdoc/>
    protected override Tensor Steps(FaithfulnessOptions o, MetricBatch b, Tensor a, out long[] counts) => RegionSteps(o, b, a, true, long.MaxValue, out counts);

    /// <inheritdoc/>
    protected override long Padding(FaithfulnessOptions o) => GridPatch(o);

    /// <inheritdoc/>
    protected override CurveAxis Axis(FaithfulnessOptions o, MetricBatch b, bool softmax) =>
        new([.. Enumerable.Range(1, (int)RegionBound(o, b)).Select(k => (double)k)], $"{o.Patch}×{o.Patch} regions removed (most relevant first)", OutputTitle(softmax));
}

/// <summary><c>region-perturbation</c> (Samek et al. 2017): the first <c>regions</c> patch × patch regions in MoRF (or
/// LeRF) order are replaced cumulatively (Quantus default: the image minimum, its "black"); the score is AOPC, the
/// mean over k = 0..L of f(x) − f(x after k regions), or with <c>score: quantus</c> Quantus's get_auc_score of its
/// curve: numpy's trapz, dx = 1, of f(x) − f(x after k regions) for k = 1..L. MoRF: higher is better; LeRF: lower is
/// better (both scores: Quantus labels the metric lower-is-better whatever the order).</summary>
[ReadsBaseline, ReadsOptions(nameof(FaithfulnessOptions.Score), nameof(FaithfulnessOptions.Patch), nameof(FaithfulnessOptions.Regions), nameof(FaithfulnessOptions.Windows), nameof(FaithfulnessOptions.Order))]
public sealed class RegionPerturbation : FaithfulnessMetric
{
    /// <inheritdoc/>
    public override string Id => "region-perturbation";
    /// <inheritdoc/>
    protected override bool SumsBlocksOverChannels => true;
    /// <inheritdoc/>
    public override bool HigherIsBetter => true;
    /// <inheritdoc/>
    protected override bool HigherIsBetterWith(FaithfulnessOptions options) => options.Order != RegionOrder.Lerf;

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(FaithfulnessOptions o, AnalysisValidationContext context)
    {
        foreach (var e in base.ValidateMetric(o, context)) yield return e;
        if (o.Order == RegionOrder.Random && o.Windows == RegionWindows.Sliding)
            yield return "option 'order': random takes the grid's regions (windows: grid), as Quantus 0.6";
    }

    /// <inheritdoc/>
    protected override Tensor Of(FaithfulnessOptions o, MetricBatch b, Tensor a, Tensor baseline, bool softmax)
    {
        var step = o.Order == RegionOrder.Random ? RandomBlocks(o, b, out var counts) : RegionSteps(o, b, a, o.Order == RegionOrder.Morf, o.Regions, out counts);
        var curve = cat([b.Clean(softmax).unsqueeze(1), Cumulative(b, step, counts.Max(), b.X, CumulativeFill(o, b, baseline, step, counts.Max(), GridPatch(o)), softmax)], 1);
        long[] lengths = [.. counts.Select(l => l + 1)];
        long width = 1 + Math.Min(o.Regions, RegionBound(o, b));
        b.RecordCurves(curve, lengths, new([.. Enumerable.Range(0, (int)width).Select(k => (double)k)],
            $"{o.Patch}×{o.Patch} regions replaced ({(o.Order == RegionOrder.Random ? "in a random order" : o.Order == RegionOrder.Morf ? "most relevant first" : "least relevant first")})", OutputTitle(softmax)));
        return RowPrefixes(curve, lengths, o.Score == ScoreConvention.Quantus ? QualityFormulas.DropTrapezoid : QualityFormulas.Aopc);
    }

    /// <summary>The grid's blocks (as <c>windows: grid</c> cuts them) in a random order per input: block j of the
    /// raster order is perturbed at step perm[j], perm a permutation drawn from the input's generator.</summary>
    static Tensor RandomBlocks(FaithfulnessOptions o, MetricBatch b, out long[] counts)
    {
        long h = b.X.shape[2], w = b.X.shape[3];
        var block = tensor(Infidelity.BlockOfPixel(h, w, o.Patch));
        long blocks = block.max().item<long>() + 1;
        var step = stack(b.Generators.Select(g => randperm(blocks, generator: g).index_select(0, block)).ToArray());   // N×D
        counts = Enumerable.Repeat(Math.Min(blocks, o.Regions), (int)b.N).ToArray();
        return step;
    }
}
