using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary><c>sensitivity-n</c> (Ancona et al. 2018). <c>score: paper</c> (the default): for each subset size n
/// (<c>fractions</c> of the pixels), the Pearson correlation over <c>runs</c> random subsets of size n (seeded per
/// input) between the subset's attribution sum and the output drop when it is replaced; the score is the mean over n
/// (the per-n values are in the JSON as well); logits and baseline min by default. <c>score: quantus</c> (Quantus's
/// SensitivityN): the features ranked by the map, most relevant first, are replaced cumulatively,
/// <c>features_in_step</c> at a time; at step k the output drop f(x) − f(x with steps 1..k replaced) and the
/// attribution sum of step k's own features (Quantus sums the step, not all that was removed) are correlated across
/// the run's inputs (its first <c>quantus_batch_size</c>: Quantus scores its first batch) for each of the first
/// ⌊max_fraction·H·W / features_in_step⌋ steps; the score is the mean over the steps. Softmax by default there, and
/// the maps are rescaled over the run together as Quantus rescales its batch: max and second-moment are one positive
/// factor, which changes neither the ranks nor a correlation, so they are left out; negative is refused. Higher is
/// better.</summary>
[ReadsBaseline, ReadsOptions(nameof(FaithfulnessOptions.Score), nameof(FaithfulnessOptions.Fractions), nameof(FaithfulnessOptions.Runs), nameof(FaithfulnessOptions.MaxFraction), nameof(FaithfulnessOptions.FeaturesInStep), nameof(FaithfulnessOptions.QuantusBatchSize), nameof(FaithfulnessOptions.Similarity), nameof(FaithfulnessOptions.Features))]
public sealed class SensitivityN : FaithfulnessMetric
{
    /// <inheritdoc/>
    public override string Id => "sensitivity-n";
    /// <inheritdoc/>
    public override bool HigherIsBetter => true;
    /// <inheritdoc/>
    protected override bool DefaultSoftmax => false;

    static bool AcrossInputs(FaithfulnessOptions o) => o.Score == ScoreConvention.Quantus;

    /// <inheritdoc/>
    protected override bool SoftmaxOf(FaithfulnessOptions o) => o.Softmax ?? AcrossInputs(o);

    /// <inheritdoc/>
    protected override Normalisation NormalisationOf(FaithfulnessOptions o) =>
        AcrossInputs(o) ? Normalisation.None : base.NormalisationOf(o);

    /// <inheritdoc/>
    protected override string? Unshardable(FaithfulnessOptions o) => AcrossInputs(o)
        ? "with score: quantus it correlates each step across the inputs, so it needs the whole dataset at once" : null;

    /// <inheritdoc/>
    protected override int MinRuns => 2;

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(FaithfulnessOptions o, AnalysisValidationContext context)
    {
        foreach (var e in base.ValidateMetric(o, context)) yield return e;
        foreach (var e in OptionRules.OnlyWith(o, AcrossInputs(o), "score: quantus", nameof(o.MaxFraction), nameof(o.FeaturesInStep))) yield return e;
        foreach (var e in OptionRules.OnlyWith(o, !AcrossInputs(o), "score: paper (random subsets of each size)", nameof(o.Fractions), nameof(o.Runs))) yield return e;
        if (!AcrossInputs(o))
        {
            if (o.QuantusBatchSize is not null) yield return "option 'quantus_batch_size' applies to score: quantus";
            if (FractionsError(o) is { } fractions) yield return fractions;
            yield break;
        }
        if (o.QuantusBatchSize < 2) yield return "option 'quantus_batch_size' must be at least 2 for sensitivity-n (it correlates across the inputs)";
        if (o.MaxFraction <= 0) yield return "option 'max_fraction' must be above 0";
        else if (context.Input is { } input && StepsError(o, input.Height, input.Width) is { } steps) yield return steps;
        if (o.Normalise.Resolve(true) == Normalisation.Negative)
            yield return "option 'normalise': negative with score: quantus would rescale the run's maps by the run's own max and min together (Quantus's batch); give true, second-moment or false (equal scores: one positive factor)";
        if (context.InputCount is < 2 && (o.QuantusBatchSize ?? 2) >= 2)
            yield return $"score: quantus correlates across the inputs: the data has {context.InputCount}";
    }

    static string? FractionsError(FaithfulnessOptions o) =>
        o.Fractions.Length == 0 || o.Fractions.Any(f => f is <= 0 or >= 1 || double.IsNaN(f)) ? "option 'fractions' must list fractions in (0, 1)" : null;

    /// <summary>Null when <c>max_fraction</c> of an h×w input holds at least one step of <c>features_in_step</c>.</summary>
    static string? StepsError(FaithfulnessOptions o, long h, long w) => StepCount(o, h * w) >= 1 ? null
        : $"max_fraction {o.MaxFraction} of {h}×{w} pixels is less than one step of {o.FeaturesInStep} features";

    /// <inheritdoc/>
    protected override Tensor Of(FaithfulnessOptions o, MetricBatch b, Tensor a, Tensor baseline, bool softmax)
    {
        if (AcrossInputs(o)) return Ranked(o, b, a, baseline, softmax);
        if (FractionsError(o) is { } error) throw new LoupeException("sensitivity-n: " + error);
        var fx = b.Clean(softmax);
        var per = o.Fractions.Select(frac =>
        {
            long d = a.shape[1];
            int size = (int)Math.Clamp(Math.Round(frac * d), 1, d - 1);
            return FaithfulnessCorrelation.Correlation(o, b, a, baseline, softmax, o.Runs, size, fx);
        }).ToArray();
        var all = stack(per, 1);
        var finite = all.isnan().logical_not();
        return where(finite, all, zeros_like(all)).sum(1) / finite.sum(1).to(ScalarType.Float64);
    }

    /// <summary>Quantus's steps: records each input's step sums and output drops (N×2S) for <see cref="ScoreAcross"/>;
    /// the per-input values are NaN.</summary>
    Tensor Ranked(FaithfulnessOptions o, MetricBatch b, Tensor a, Tensor baseline, bool softmax)
    {
        var step = PixelSteps(o, b, a, true, out long all);
        long steps = Math.Min(all, StepCount(o, b.X.shape[2] * b.X.shape[3]));
        if (steps < 1) throw new LoupeException("sensitivity-n: " + StepsError(o, b.X.shape[2], b.X.shape[3]));
        var outputs = Cumulative(b, step, steps, b.X, CumulativeFill(o, b, baseline, step, steps), softmax);
        var drops = b.Clean(softmax).unsqueeze(1) - outputs;
        var sums = StepSums(a, step, all).narrow(1, 0, steps);
        b.RecordAcross(cat([sums, drops], 1));
        return full(b.N, double.NaN, dtype: ScalarType.Float64);
    }

    /// <summary>Quantus's <c>int(n_max_percentage · H·W // features_in_step)</c>, with Python's float floor division.</summary>
    public static long StepCount(FaithfulnessOptions o, long pixels)
    {
        double x = o.MaxFraction * pixels, y = o.FeaturesInStep;
        double mod = x % y, div = (x - mod) / y, floor = Math.Floor(div);
        return (long)(div - floor > 0.5 ? floor + 1 : floor);
    }

    /// <inheritdoc/>
    protected override void ScoreAcross(FaithfulnessOptions o, IAnalysisContext ctx, MetricWriter writer, IReadOnlyList<string> ids,
        IReadOnlyList<string> labels, IReadOnlyList<double[]> rows)
    {
        int n = Math.Min(rows.Count, o.QuantusBatchSize ?? rows.Count), steps = rows[0].Length / 2;
        if (n < 2) throw new LoupeException($"sensitivity-n: score: quantus correlates across the inputs: {n} input(s) given");
        double[] perStep;
        using (NewDisposeScope())
        {
            var m = tensor(rows.Take(n).SelectMany(r => r).ToArray()).view(n, 2, steps);
            perStep = QualityFormulas.CorrelationRows(o.Similarity ?? Similarity.Pearson, m.select(1, 1).T, m.select(1, 0).T).ToArray<double>();
        }
        var key = Id.Replace('-', '_');
        var features = Enumerable.Range(1, steps).Select(k => (double)k * o.FeaturesInStep).ToArray();
        ctx.Output.Raw(key, null, new NdArray(perStep.Select(v => (float)v).ToArray(), [steps]));
        ctx.Output.Json(key, new JsonObject
        {
            ["metric"] = Id, ["of"] = o.Of!.Id, ["higher_is_better"] = true, ["score"] = "quantus",
            ["note"] = "per step: the correlation across the inputs of the output drop after the first k steps and step k's attribution sum; the score is their mean",
            ["inputs"] = new JsonArray(ids.Take(n).Select((x, i) => (JsonNode?)new JsonObject { ["id"] = x, ["target"] = labels[i] }).ToArray()),
            ["features_removed"] = new JsonArray(features.Select(v => (JsonNode?)v).ToArray()),
            ["steps"] = new JsonArray(perStep.Select(v => double.IsFinite(v) ? (JsonNode?)v : null).ToArray()),
        });
        writer.Stat(key, perStep, true);
        var unit = o.Features == FeatureUnit.Values ? "channel values" : "pixels";
        ctx.Output.Figure(key + "_curve", null, () => Plots.Lines(features, [($"{(o.Similarity ?? Similarity.Pearson).ToString().ToLowerInvariant()} across {n} inputs", perStep)],
            $"{Id} (Quantus) of '{o.Of!.Id}'", $"{unit} removed (most relevant first)", "r(output drop, step's attribution)"));
    }
}
