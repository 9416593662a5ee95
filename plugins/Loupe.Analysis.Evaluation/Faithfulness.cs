using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Base of the faithfulness metrics: the map ranks pixels (per-channel maps summed over channels), perturbed
/// copies are scored in batches under the memory budget, and a published formula reduces the outputs.</summary>
// softmax: every metric takes it, as every Quantus metric's call does (road's argmax does not depend on it).
[ReadsMetric, ReadsNormaliseOver, ReadsOptions(nameof(FaithfulnessOptions.Abs), nameof(FaithfulnessOptions.Normalise), nameof(FaithfulnessOptions.MicroBatch), nameof(FaithfulnessOptions.Softmax))]
public abstract class FaithfulnessMetric : QualityMetric<FaithfulnessOptions>
{
    /// <summary>For fills drawn afresh in every perturbation (uniform, uniform-input, gaussian-noise, uniform-noise:
    /// Quantus draws them in each call of its perturbation function), the replacement values of the next
    /// <c>k</c> copies of every input, N×k×C×H×W: one draw per copy and input from the input's generator, in copy order
    /// (the same whatever the chunking); null for the other fills (one baseline per input).</summary>
    public static Func<long, Tensor>? FreshFills(FaithfulnessOptions o, MetricBatch b, Fill? fillKind)
    {
        if (!(fillKind is Fill.Uniform or Fill.UniformInput || NoiseFill.Adds(fillKind))) return null;
        var x = b.X;
        long c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var noise = o.NoiseOf();
        float lo = (float)o.UniformLow, span = (float)(o.UniformHigh - o.UniformLow);
        Tensor Draw(Generator g) => NoiseFill.Adds(fillKind) ? noise.Draw(fillKind!.Value, [c, h, w], g) : rand([c, h, w], generator: g);
        return k =>
        {
            var draws = stack(b.Generators.Select(g => stack(Enumerable.Range(0, (int)k).Select(_ => Draw(g)).ToArray())).ToArray());   // N×k×C×H×W
            if (NoiseFill.Adds(fillKind)) return x.unsqueeze(1) + draws.to(x.dtype);
            // U[low, high) pixels (uniform) are normalised; uniform-input draws are model-input values already.
            var u = draws.view(b.N * k, c, h, w) * span + lo;
            return (fillKind == Fill.Uniform ? b.Context.Input.Normalize(u) : u).view(b.N, k, c, h, w).to(x.dtype);
        };
    }

    /// <inheritdoc/>
    protected override bool HoldsSideInputs => true;

    /// <summary>Quantus's default of <c>abs</c>.</summary>
    protected virtual bool DefaultAbs => false;
    /// <summary>Quantus's default of <c>softmax</c>.</summary>
    protected virtual bool DefaultSoftmax => true;
    /// <summary>The metric's default baseline: Quantus's, unless docs/evaluation.md says it differs.</summary>
    protected virtual Fill DefaultFill => Fill.Min;
    /// <summary>The default fill with these options (<see cref="DefaultFill"/> unless a convention changes it).</summary>
    protected virtual Fill DefaultFillWith(FaithfulnessOptions o) => DefaultFill;
    /// <summary>The softmax with these options (the option, else <see cref="DefaultSoftmax"/>).</summary>
    protected virtual bool SoftmaxOf(FaithfulnessOptions o) => o.Softmax ?? DefaultSoftmax;
    /// <summary>How each map is rescaled before it is scored (the option, else Quantus's normalise_by_max).</summary>
    protected virtual Normalisation NormalisationOf(FaithfulnessOptions o) => o.Normalise.Resolve(true);
    /// <summary>Whether the metric replaces features by a baseline (ROAD imputes them instead).</summary>
    protected virtual bool UsesBaseline => true;
    /// <inheritdoc/>
    protected override int? MicroBatch(FaithfulnessOptions options) => options.MicroBatch;

    /// <inheritdoc/>
    protected sealed override double[] Score(FaithfulnessOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        var a = o.Features == FeatureUnit.Values ? b.ValueFeatures(o.Abs ?? DefaultAbs, NormalisationOf(o))
            : SumsBlocksOverChannels && b.Map.dim() == 4 && b.Map.shape[1] > 1 ? ChannelSummedValues(b, o.Abs ?? DefaultAbs, NormalisationOf(o))
            : b.Features(o.Abs ?? DefaultAbs, NormalisationOf(o));
        return Of(o, b, a, UsesBaseline ? o.BaselineOf(b, DefaultFillWith(o)) : b.X, SoftmaxOf(o)).ToArray<double>();
    }

    /// <summary>Whether the metric ranks regions whose sums Quantus takes over every channel value of a per-channel
    /// map (<c>region-perturbation</c>, <c>selectivity</c>): then a pixel's feature is Σ_c of its normalised (and,
    /// under <c>abs</c>, absolute) channel values, not the normalised channel sum — the same ranking for signed maps
    /// and scale-only normalisations, another under <c>abs</c> or <c>normalise: negative</c>.</summary>
    protected virtual bool SumsBlocksOverChannels => false;

    /// <summary>N×(H·W): each pixel's Σ_c of the map's values normalised over all C·H·W of them, then |·| under
    /// <paramref name="abs"/> (Quantus's order).</summary>
    static Tensor ChannelSummedValues(MetricBatch b, bool abs, Normalisation normalise)
    {
        using var scope = NewDisposeScope();
        long c = b.X.shape[1];
        return scope.MoveToOuter(b.ValueFeatures(abs, normalise).view(b.N, c, -1).sum(1));
    }

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(FaithfulnessOptions o, AnalysisValidationContext context)
    {
        if (o.Runs < MinRuns)
            yield return $"option 'runs' must be at least {MinRuns} for {Id} (a correlation over the runs)";
        if (UsesBaseline)
            foreach (var e in o.FillOptionErrors(DefaultFillWith(o))) yield return e;
    }

    /// <summary>The fewest <c>runs</c> the metric takes.</summary>
    protected virtual int MinRuns => 1;

    /// <summary>The features a row has: pixels, or channel values under <c>features: values</c>.</summary>
    protected static long FeatureCount(FaithfulnessOptions o, MetricBatch b) => o.Features == FeatureUnit.Values ? b.D * b.X.shape[1] : b.D;

    /// <summary>The fill of a metric that perturbs steps one call each: <paramref name="baseline"/>, or with
    /// <c>uniform-step</c> one value per step (<see cref="MetricBatch.PerStep"/>).</summary>
    protected Tensor PerStep(FaithfulnessOptions o, MetricBatch b, Tensor baseline, Tensor step, long steps) =>
        b.PerStep(o.FillOf(DefaultFillWith(o)), baseline, step, steps, o.UniformLow, o.UniformHigh);

    /// <summary>The fill of a metric that perturbs steps cumulatively: as <see cref="PerStep"/>, but
    /// <c>running-mean</c> gives each step the mean of the array as perturbed so far
    /// (<see cref="MetricBatch.RunningMean"/>; <paramref name="patch"/> &gt; 0: of the edge-padded array).</summary>
    protected Tensor CumulativeFill(FaithfulnessOptions o, MetricBatch b, Tensor baseline, Tensor step, long steps, long patch = 0) =>
        o.FillOf(DefaultFillWith(o)) == Fill.RunningMean ? b.RunningMean(step, steps, patch) : PerStep(o, b, baseline, step, steps);

    /// <summary>The patch of the padded array the region metrics perturb (grid windows), 0 for the image itself.</summary>
    protected static long GridPatch(FaithfulnessOptions o) => o.Windows == RegionWindows.Grid || o.Order == RegionOrder.Random ? o.Patch : 0;

    /// <summary>The scores (N) from the N×D features and the baseline.</summary>
    protected abstract Tensor Of(FaithfulnessOptions o, MetricBatch b, Tensor a, Tensor baseline, bool softmax);

    /// <summary>Outputs after perturbing steps cumulatively: copy j has every feature with step ≤ j
    /// taken from <paramref name="to"/>, the rest from <paramref name="from"/>. N×steps.</summary>
    protected static Tensor Cumulative(MetricBatch b, Tensor step, long steps, Tensor from, Tensor to, bool softmax) =>
        b.Outputs(steps, (k0, k) => b.Replace(step.unsqueeze(1) <= arange(k0, k0 + k).view(1, k, 1), to, from), softmax);

    /// <summary>Outputs after perturbing each step alone: copy j has the features of step j from the baseline. N×steps.</summary>
    protected static Tensor Single(MetricBatch b, Tensor step, long steps, Tensor baseline, bool softmax) =>
        b.Outputs(steps, (k0, k) => b.Replace(step.unsqueeze(1) == arange(k0, k0 + k).view(1, k, 1), baseline), softmax);

    /// <summary>Σ of <paramref name="a"/> over the features of each step: N×steps.</summary>
    protected static Tensor StepSums(Tensor a, Tensor step, long steps) =>
        zeros(a.shape[0], steps, dtype: ScalarType.Float64).scatter_add_(1, step, a);

    /// <summary>The step of each pixel (N×D) and the number of steps: pixels ranked by <paramref name="a"/>
    /// (<paramref name="descending"/>: most relevant first), <c>features_in_step</c> per step.</summary>
    protected static Tensor PixelSteps(FaithfulnessOptions o, MetricBatch b, Tensor a, bool descending, out long steps) =>
        QualityFormulas.Steps(a, descending, o.FeaturesInStep, 1, b.X.shape[2], b.X.shape[3], out steps);

    /// <summary>The step of each pixel (N×D) when <c>patch</c> × <c>patch</c> regions (<c>windows</c>: sliding or grid)
    /// are perturbed one by one, at most <paramref name="limit"/> of them, and each row's number of regions.</summary>
    protected static Tensor RegionSteps(FaithfulnessOptions o, MetricBatch b, Tensor a, bool descending, long limit, out long[] counts)
    {
        long h = b.X.shape[2], w = b.X.shape[3];
        if (o.Windows == RegionWindows.Sliding) return QualityFormulas.SlidingSteps(a, descending, o.Patch, h, w, limit, out counts);
        var step = QualityFormulas.Steps(a, descending, 1, o.Patch, h, w, out long steps);
        counts = Enumerable.Repeat(Math.Min(steps, limit), (int)b.N).ToArray();
        return step;
    }

    /// <summary>The most regions <see cref="RegionSteps"/> can find on this batch's images: the grid's blocks, or as
    /// many disjoint patch × patch windows as fit in the (H+p−1)×(W+p−1) area the sliding windows cover.</summary>
    protected static long RegionBound(FaithfulnessOptions o, MetricBatch b)
    {
        long h = b.X.shape[2], w = b.X.shape[3], p = o.Patch;
        if (o.Windows == RegionWindows.Grid) return ((h + p - 1) / p) * ((w + p - 1) / p);   // the padded image's blocks
        long across = h + p - 1, down = w + p - 1;
        return Math.Min(across * (down / p) / p, down * (across / p) / p);
    }

    /// <summary>The y title of a curve of model outputs.</summary>
    protected static string OutputTitle(bool softmax) => softmax ? "probability of the explained class" : "score of the explained class (logit)";

    /// <summary>One score per row from the first <paramref name="lengths"/>[i] points of row i's curve (N×T) by
    /// <paramref name="reduce"/> (a formula on N×T curves); the whole curves at once when every length is T.</summary>
    protected static Tensor RowPrefixes(Tensor curves, long[] lengths, Func<Tensor, Tensor> reduce)
    {
        if (lengths.All(l => l == curves.shape[1])) return reduce(curves);
        using var scope = NewDisposeScope();
        var rows = lengths.Select((l, i) => reduce(curves[i].narrow(0, 0, l).unsqueeze(0))).ToArray();
        return scope.MoveToOuter(cat(rows));
    }
}

/// <summary><c>faithfulness-correlation</c> (Bhatt et al. 2020): Pearson correlation, over <c>runs</c> random pixel
/// subsets (seeded per input), between the subset's attribution sum and the output drop f(x) − f(x with the subset
/// replaced). Quantus defaults: logits, signed map, baseline min, 100 runs of 224 pixels. Higher is better.</summary>
[ReadsBaseline, ReadsOptions(nameof(FaithfulnessOptions.Runs), nameof(FaithfulnessOptions.SubsetSize), nameof(FaithfulnessOptions.Similarity), nameof(FaithfulnessOptions.Features))]
public sealed class FaithfulnessCorrelation : FaithfulnessMetric
{
    /// <inheritdoc/>
    public override string Id => "faithfulness-correlation";
    /// <inheritdoc/>
    protected override int MinRuns => 2;
    /// <inheritdoc/>
    public override bool HigherIsBetter => true;
    /// <inheritdoc/>
    protected override bool DefaultSoftmax => false;

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(FaithfulnessOptions o, AnalysisValidationContext context)
    {
        foreach (var e in base.ValidateMetric(o, context)) yield return e;
        if (context.Input is { } i && SubsetError(o, (o.Features == FeatureUnit.Values ? i.Channels : 1) * (long)i.Height * i.Width) is { } error) yield return error;
    }

    /// <summary>Null when <c>subset_size</c> is below the <paramref name="features"/> of an input (Quantus asserts it too).</summary>
    static string? SubsetError(FaithfulnessOptions o, long features) => o.SubsetSize < features ? null
        : $"option 'subset_size' = {o.SubsetSize} is not smaller than the {features} {(o.Features == FeatureUnit.Values ? "channel values" : "pixels")} of an input";

    /// <inheritdoc/>
    protected override Tensor Of(FaithfulnessOptions o, MetricBatch b, Tensor a, Tensor baseline, bool softmax)
    {
        if (SubsetError(o, a.shape[1]) is { } error) throw new LoupeException("faithfulness-correlation: " + error);
        return Correlation(o, b, a, baseline, softmax, o.Runs, o.SubsetSize, b.Clean(softmax));
    }

    /// <summary>Pearson, per input, over <paramref name="runs"/> random subsets of <paramref name="size"/> pixels (drawn
    /// per input id: the first <paramref name="size"/> of a permutation from the input's generator), of the subset's
    /// attribution sum and the output drop f(x) − f(x with the subset replaced). Subsets are kept as indices
    /// (N×runs×size); a chunk's masks are built only when its copies are.</summary>
    public static Tensor Correlation(FaithfulnessOptions o, MetricBatch b, Tensor a, Tensor baseline, bool softmax, int runs, int size, Tensor fx)
    {
        using var scope = NewDisposeScope();
        long d = a.shape[1];   // pixels, or channel values
        var idx = stack(b.Generators.Select(g => stack(Enumerable.Range(0, runs).Select(_ => randperm(d, generator: g).narrow(0, 0, size)).ToArray())).ToArray());
        // uniform-step: one value per subset (Quantus draws one per perturbation call), after the subsets; uniform and
        // noise fills: a fresh draw per subset, as Quantus's perturbation function draws in each call.
        var values = o.FillOf(Fill.Min) == Fill.UniformStep ? b.Scalars(runs, o.UniformLow, o.UniformHigh) : null;
        var fresh = FreshFills(o, b, o.FillOf(Fill.Min));
        var f = b.Outputs(runs, (k0, k) =>
        {
            var m = zeros(b.N, k, d).scatter_(2, idx.narrow(1, k0, k), ones(b.N, k, size));
            return values is not null ? b.ReplaceWith(m, values.narrow(1, k0, k)) : b.Replace(m, fresh is not null ? fresh(k) : baseline);
        }, softmax);
        var sums = a.gather(1, idx.view(b.N, -1)).view(b.N, runs, size).sum(2);
        return scope.MoveToOuter(QualityFormulas.CorrelationRows(o.Similarity ?? Similarity.Pearson, sums, fx.unsqueeze(1) - f));
    }
}

/// <summary><c>faithfulness-estimate</c> (Alvarez-Melis &amp; Jaakkola 2018): Pearson correlation between each step's
/// attribution sum and the output drop when that step's pixels alone are replaced (pixels in decreasing order,
/// <c>features_in_step</c> per step). Quantus defaults: logits, signed map, baseline min. Higher is better.</summary>
[ReadsBaseline, ReadsOptions(nameof(FaithfulnessOptions.FeaturesInStep), nameof(FaithfulnessOptions.Similarity), nameof(FaithfulnessOptions.Features))]
public sealed class FaithfulnessEstimate : FaithfulnessMetric
{
    /// <inheritdoc/>
    public override string Id => "faithfulness-estimate";
    /// <inheritdoc/>
    public override bool HigherIsBetter => true;
    /// <inheritdoc/>
    protected override bool DefaultSoftmax => false;

    /// <inheritdoc/>
    protected override Tensor Of(FaithfulnessOptions o, MetricBatch b, Tensor a, Tensor baseline, bool softmax)
    {
        var step = PixelSteps(o, b, a, true, out var steps);
        var drop = b.Clean(softmax).unsqueeze(1) - Single(b, step, steps, PerStep(o, b, baseline, step, steps), softmax);
        return QualityFormulas.CorrelationRows(o.Similarity ?? Similarity.Pearson, StepSums(a, step, steps), drop);
    }
}

/// <summary><c>monotonicity</c> (Arya et al. 2019): starting from the baseline, pixels are put back in increasing order
/// of attribution (<c>features_in_step</c> per step); 1 when the class probability never decreases, else 0 (the mean
/// is the share of monotonic inputs). Quantus defaults: softmax, |map|, baseline min. Higher is better.</summary>
[ReadsBaseline, ReadsOptions(nameof(FaithfulnessOptions.FeaturesInStep), nameof(FaithfulnessOptions.Features))]
public sealed class Monotonicity : FaithfulnessMetric
{
    /// <inheritdoc/>
    public override string Id => "monotonicity";
    /// <inheritdoc/>
    public override bool HigherIsBetter => true;
    /// <inheritdoc/>
    protected override bool DefaultAbs => true;

    /// <inheritdoc/>
    protected override Tensor Of(FaithfulnessOptions o, MetricBatch b, Tensor a, Tensor baseline, bool softmax)
    {
        var step = PixelSteps(o, b, a, false, out var steps);
        return QualityFormulas.NonDecreasing(Cumulative(b, step, steps, baseline, b.X, softmax));
    }
}

/// <summary><c>monotonicity-correlation</c> (Nguyen &amp; Rodríguez Martínez 2020; Quantus MonotonicityCorrelation):
/// pixels in increasing order of |a|, <c>features_in_step</c> per step; each step's pixels alone are replaced
/// <c>runs</c> times (Quantus nr_samples: 100; with the default baseline, Quantus's batched "uniform", each copy draws
/// one U[0, 1) value in the model's input space for all the pixels it replaces, seeded per input: <c>uniform-step</c>;
/// until 2026-12-05 the default drew U[0, 1) per pixel in display space, <c>uniform</c>); the step's variance E[(f(x') − f(x))²] / f(x)² (1/f(x)² only when |f(x)| ≥ <c>eps</c>, Quantus: 1e-5) is Spearman-correlated
/// with the step's attribution sum. Softmax by default. Higher is better.</summary>
[ReadsBaseline, ReadsOptions(nameof(FaithfulnessOptions.FeaturesInStep), nameof(FaithfulnessOptions.Features), nameof(FaithfulnessOptions.Runs), nameof(FaithfulnessOptions.Eps), nameof(FaithfulnessOptions.Similarity))]
public sealed class MonotonicityCorrelation : FaithfulnessMetric
{
    /// <inheritdoc/>
    public override string Id => "monotonicity-correlation";
    /// <inheritdoc/>
    public override bool HigherIsBetter => true;
    /// <inheritdoc/>
    protected override bool DefaultAbs => true;
    /// <inheritdoc/>
    protected override Fill DefaultFill => Fill.UniformStep;

    /// <inheritdoc/>
    protected override Tensor Of(FaithfulnessOptions o, MetricBatch b, Tensor a, Tensor baseline, bool softmax)
    {
        var x = b.X;
        long h = x.shape[2], w = x.shape[3], runs = o.Runs;
        var step = PixelSteps(o, b, a, false, out var steps);
        var fillKind = o.FillOf(DefaultFillWith(o));
        var fresh = FreshFills(o, b, fillKind);
        // uniform-step: one value per copy (a step's sample: Quantus's one draw per perturbation call).
        var values = fillKind == Fill.UniformStep ? b.Scalars(steps * runs, o.UniformLow, o.UniformHigh).to(x.dtype) : null;
        var f = b.Outputs(steps * runs, (k0, k) =>
        {
            var copySteps = arange(k0, k0 + k).div(runs, rounding_mode: RoundingMode.floor);            // step of each copy
            var m = (step.unsqueeze(1) == copySteps.view(1, k, 1)).to(ScalarType.Float32).view(b.N, k, step.shape[1] == b.D ? 1 : x.shape[1], h, w);
            var fill = fresh is not null ? fresh(k)
                : values is not null ? values.narrow(1, k0, k).view(b.N, k, 1, 1, 1) : baseline.unsqueeze(1);
            return x.unsqueeze(1) * (1 - m) + fill * m;
        }, softmax).view(b.N, steps, runs);
        var fx = b.Clean(softmax);
        var inv = where(fx.abs() >= o.Eps, 1 / (fx * fx), ones_like(fx));
        var variance = (f - fx.view(-1, 1, 1)).pow(2).mean([2]) * inv.unsqueeze(1);
        return QualityFormulas.CorrelationRows(o.Similarity ?? Similarity.Spearman, StepSums(a, step, steps), variance);
    }
}
