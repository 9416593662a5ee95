using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using System.Globalization;
using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Options every metric has: the attribution step it evaluates and optional expectations.</summary>
public abstract record MetricOptions
{
    /// <summary>The evaluated step.</summary>
    [Required, Description("id of the attribution step to evaluate (e.g. of: saliency); without a target of its own this step explains that step's")]
    public StepLink? Of { get; init; }
    /// <summary>Assertions on this step's metrics.</summary>
    [Description("assertions checked after all outputs are written, e.g. [\"auc_mean < 0.2\"]; a failed one fails the step")]
    public string[] Expect { get; init; } = [];
}

/// <summary>Options of the metrics that rescale maps (<c>normalise</c>), with the scope of that rescaling.</summary>
public abstract record NormalisedMetricOptions : MetricOptions
{
    /// <summary>Which maps one normalisation covers.</summary>
    [Description("which maps 'normalise' rescales together: map (each on its own, the default: a score does not depend on the other inputs) or batch (the maps of each batch of the run — settings.batch_size or the step's batch_size — together, by one max |a| or second moment; perturbed maps over the batch's maps of the same perturbation): Quantus called once per batch of your data, which normalises the a_batch of a call and the maps it explains together — its numbers for the scale-dependent metrics (effective-complexity, non-sensitivity, local-lipschitz, continuity, random-logit, infidelity or completeness with normalise) with the same batches")]
    public NormaliseScope NormaliseOver { get; init; }

    /// <summary>Rows normalised together for a batch of <paramref name="n"/> maps.</summary>
    public long Together(long n) => NormaliseOver == NormaliseScope.Batch ? n : 1;
}

/// <summary>Options whose fill may be a constant (<c>baseline: 0.5</c> or one value per channel), checked against the
/// model's channels at validation.</summary>
public interface IConstantFill
{
    /// <summary>The constant, in the model's input space; null: the named fill.</summary>
    float[]? BaselineValue { get; }
}

/// <summary>One row of a metric step's <c>summary</c>; <see cref="HigherIsBetter"/> is the direction when the step
/// declares it (null: not declared).</summary>
public sealed record SummaryRow(string Step, string Of, string Metric, double Mean, double Std, int Count, bool? HigherIsBetter = null);

/// <summary>Base of the faithfulness metrics: checks <c>of:</c> and <c>expect:</c>, collects metrics, writes the
/// summary and checks the expectations after everything is written.</summary>
public abstract class MetricAnalysis<TOptions> : Analysis<TOptions>, IDeclaresMetrics where TOptions : MetricOptions, new()
{
    /// <summary>Names of the scalar metrics this step writes (what <c>expect:</c> may name).</summary>
    public abstract IReadOnlyList<string> MetricNames { get; }

    /// <summary>The metric names <c>expect:</c> may name with these options on this model (default:
    /// <see cref="MetricNames"/>; e.g. one series per randomised layer of <c>mprt</c>).</summary>
    protected virtual IReadOnlyList<string> MetricNamesWith(TOptions options, IModel model) => MetricNames;

    /// <inheritdoc/>
    public IReadOnlyList<string> MetricNamesFor(object options, IModel model) => MetricNamesWith((TOptions)options, model);

    /// <summary>Metric-specific checks.</summary>
    protected virtual IEnumerable<string> ValidateMetric(TOptions options, AnalysisValidationContext context) => [];

    /// <summary>What the metric explains again besides the evaluated step's maps of the inputs (e.g. "noisy copies of
    /// the inputs"), or null: a step of fixed maps (<see cref="IFixedMaps"/>) cannot be evaluated then.</summary>
    protected virtual string? ExplainsAgain(TOptions options) => null;

    /// <summary>Computes and writes the metric.</summary>
    protected abstract void Evaluate(TOptions options, IAnalysisContext ctx, MetricWriter writer);

    /// <summary>Where these options make the metric compare each input's predicted (top-1) class: what to set to do
    /// without it (empty when nothing can), else null. Checked at validation against the model's output, which must
    /// then be one score per class.</summary>
    protected virtual string? ComparesPredictedClass(TOptions options) => null;

    /// <inheritdoc/>
    public sealed override IEnumerable<string> Validate(TOptions options, AnalysisValidationContext context)
    {
        if (context.Referenced(options.Of)?.Analysis is { } a && a is not IAttribution)
            yield return $"option 'of': step '{options.Of!.Id}' is not an attribution method (a metric needs one map per input, like saliency, grad-cam or occlusion)";
        if (context.Referenced(options.Of)?.Analysis is IFixedMaps && ExplainsAgain(options) is { } again)
            yield return $"option 'of': step '{options.Of!.Id}' gives fixed maps, of the inputs as they are, and this metric explains {again} (a method to run again, as Quantus's explain_func)";
        foreach (var e in Expectation.Errors(options.Expect, MetricNamesWith(options, context.Model))) yield return e;
        if (options is PerturbOptions { UniformLow: var low, UniformHigh: var high } && low >= high)
            yield return $"option 'uniform_low' ({low}) must be below 'uniform_high' ({high})";
        if (options is PerturbOptions { UpperBound: { } upper, LowerBound: var lower } && upper <= lower)
            yield return $"option 'upper_bound' ({upper}) must be above 'lower_bound' ({lower})";
        if (options is PerturbOptions { BaselineImages: not null } po && (po.Baseline is not null || po.BaselineValue is not null))
            yield return "give 'baseline' or 'baseline_images', not both: the images replace the baseline";
        if (options is IConstantFill { BaselineValue: { } constant })
            foreach (var e in Baselines.CheckConstant(constant, "baseline", context.Model.DefaultInput)) yield return e;
        if (context.OutputShape is { Length: not 2 } output)
        {
            // A class probability, or a predicted class, needs a class axis: on a segmentation map or detections the
            // metric would score the target's own score instead, or fail at run time.
            if (options is PerturbOptions { Softmax: true } or ConfidenceOptions { Softmax: true })
                yield return $"option 'softmax': the model's output is N×{string.Join("×", output.Skip(1))}, not one score per class (N×K): there is no class probability to score; leave softmax out (the metric then scores the target's own score; a segmentation target's mode: softmax scores per-pixel probabilities)";
            if (ComparesPredictedClass(options) is { } instead) yield return Maps.NoPredictedClass(output, instead);
        }
        foreach (var e in ValidateMetric(options, context)) yield return e;
    }

    /// <inheritdoc/>
    public sealed override void Run(TOptions options, IAnalysisContext ctx)
    {
        var writer = new MetricWriter(ctx.Output, ctx.StepId, options.Of!.Id);
        Evaluate(options, ctx, writer);
        // A shard's values are partial: its expectations are checked by 'loupe merge' on all of them.
        Finish(writer, options.Expect, check: ctx.Shard is null);
    }

    /// <summary>Writes <c>summary</c> and <c>values</c> (every per-image series, so that shards merge exactly) and
    /// checks the expectations.</summary>
    void Finish(MetricWriter writer, string[] expect, bool check)
    {
        var output = writer.Output;
        output.Json("summary", new { columns = new[] { "step", "of", "metric", "mean", "std", "count", "higherIsBetter" }, rows = writer.Rows });
        output.Json("values", new MetricValues(writer.Of, expect, writer.Series.ToArray()));
        if (!check) return;
        // (validated against MetricNamesWith; a merge has no model, so the names written are the ones allowed)
        var names = MetricNames.Concat(writer.Values.Keys).Distinct().ToList();
        var expectations = expect.Select((e, i) => Expectation.Parse(e, i, names, out var error) ?? throw new LoupeException(error!)).ToList();
        var failed = expectations.Select(e => e.Check(writer.Values)).Where(m => m is not null).ToList();
        if (failed.Count > 0) throw new LoupeException($"{failed.Count} expectation(s) failed: " + string.Join("; ", failed));
    }

    /// <summary>Shards (for metrics that declare <see cref="IShardable"/>): the metric-specific results
    /// (<see cref="MergeDetails"/>), then every per-image series concatenated in dataset order and reduced exactly as
    /// in an unsharded run; expectations are checked on the merged values.</summary>
    public void Merge(IShardMerge merge)
    {
        MergeDetails(merge);
        var parts = merge.Json("values").Select(p => System.Text.Json.JsonSerializer.Deserialize<MetricValues>(p, MetricValues.Json)!).ToList();
        var writer = new MetricWriter(merge.Output, merge.StepId, parts[0].Of);
        for (int j = 0; j < parts[0].Series.Length; j++)
        {
            var s = parts[0].Series[j];
            writer.Replay(s with { Values = parts.SelectMany(p => p.Series[j].Values).ToArray() });
        }
        Finish(writer, parts[0].Expect, check: true);
    }

    /// <summary>Merges the metric's own whole-step results (curves, per-input JSON, plots) of the shards.</summary>
    protected virtual void MergeDetails(IShardMerge merge) { }

    /// <summary>Maps of the linked step for one of the run's batches: as
    /// <see cref="LinkedMaps(TOptions, IAnalysisContext, Tensor, string[], TargetSelection, string[])"/>, a target that reads
    /// the data (<see cref="IDataTarget"/>, e.g. ground-truth labels) selecting from the batch when the maps are made
    /// again.</summary>
    protected static AttributionResult LinkedMaps(TOptions options, IAnalysisContext ctx, InputBatch batch)
    {
        if (MapCache.TryGet(ctx, options.Of!.Id, batch.Ids) is { } cached) return cached;
        return LinkedMaps(options, ctx, batch.Input, batch.Ids, ctx.Target is IDataTarget data ? data.Select(batch, 0) : null);
    }

    /// <summary>Maps of the linked step for a batch (target: this step's target, or <paramref name="selection"/>). The
    /// original inputs' maps are the ones that step made in this run (<see cref="MapCache"/>) when it kept them for the
    /// same target; otherwise (perturbed inputs, a given selection, maps beyond the memory budget) the method runs.
    /// <paramref name="sources"/>: the ids of the inputs perturbed rows were made from, row for row (what per-input
    /// baselines are looked up by; <see cref="AttributionInput.SourceIds"/>); default <paramref name="ids"/>.</summary>
    protected static AttributionResult LinkedMaps(TOptions options, IAnalysisContext ctx, Tensor input, string[]? ids, TargetSelection? selection = null, string[]? sources = null)
    {
        if (ids is not null && selection is null && MapCache.TryGet(ctx, options.Of!.Id, ids) is { } cached) return cached;
        var of = ctx.Referenced(options.Of!);
        return ((IAttribution)of.Analysis).Attribute(of.Options, new AttributionInput(ctx, input, selection, 0, ids) { SourceIds = sources ?? ids });
    }

    /// <summary>The ids of k copies of each of a batch's inputs, copy-major (copy j of input i at row j·N + i), as
    /// <see cref="LinkedMaps(TOptions, IAnalysisContext, Tensor, string[], TargetSelection, string[])"/>'s sources.</summary>
    protected static string[] CopyIds(string[] ids, long k) => Enumerable.Range(0, (int)k).SelectMany(_ => ids).ToArray();
}

/// <summary>A per-image series behind a step's metrics: <c>stat</c> (name_mean, name_std), <c>rate</c> (a mean
/// written as <see cref="Row"/>'s metric) or <c>count</c> (values summed); <see cref="HigherIsBetter"/> when declared.</summary>
public sealed record MetricSeries(string Kind, string Name, string? Row, double[] Values, bool? HigherIsBetter = null);

/// <summary>The <c>values</c> artifact of a metric step: everything its metrics are computed from.</summary>
public sealed record MetricValues(string Of, string[] Expect, MetricSeries[] Series)
{
    /// <summary>How it is read back (the host writes camelCase, NaN as a string).</summary>
    public static readonly System.Text.Json.JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.CamelCase,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };
}

/// <summary>Collects a step's metrics: forwards them to the manifest and keeps them for the expectations and summary,
/// with the per-image series they come from.</summary>
public sealed class MetricWriter(IArtifactSink output, string stepId, string of)
{
    /// <summary>Where results go.</summary>
    public IArtifactSink Output => output;
    /// <summary>The evaluated step.</summary>
    public string Of => of;
    /// <summary>Every scalar written.</summary>
    public Dictionary<string, double> Values { get; } = [];
    /// <summary>Summary rows (one per per-image statistic).</summary>
    public List<SummaryRow> Rows { get; } = [];
    /// <summary>The per-image series, in the order they were written.</summary>
    public List<MetricSeries> Series { get; } = [];

    /// <summary>Writes one scalar.</summary>
    public void Metric(string name, double value)
    {
        Values[name] = value;
        output.Metric(name, value);
    }

    /// <summary>Writes <c>name_mean</c> and <c>name_std</c> (population std) over images and a summary row.</summary>
    public (double Mean, double Std) Stat(string name, IReadOnlyList<double> values, bool? higherIsBetter = null)
    {
        Series.Add(new("stat", name, null, values.ToArray(), higherIsBetter));
        var (mean, std) = MeanStd(values);
        Metric(name + "_mean", mean);
        Metric(name + "_std", std);
        if (higherIsBetter is { } up) output.MetricDirection(name, up);
        Rows.Add(new SummaryRow(stepId, of, name, mean, std, values.Count(double.IsFinite), higherIsBetter));
        return (mean, std);
    }

    /// <summary>Mean and population std of the finite values (NaN when there are none).</summary>
    public static (double Mean, double Std) MeanStd(IReadOnlyList<double> values)
    {
        var finite = values.Where(double.IsFinite).ToList();
        double mean = finite.Count == 0 ? double.NaN : finite.Average();
        double std = finite.Count == 0 ? double.NaN : Math.Sqrt(finite.Sum(v => (v - mean) * (v - mean)) / finite.Count);
        return (mean, std);
    }

    /// <summary>Writes the mean of per-image values as <paramref name="metric"/> (e.g. a hit rate) and a summary row
    /// <paramref name="row"/>; with <paramref name="higherIsBetter"/>, its direction too (a column of the methods
    /// table).</summary>
    public double Rate(string metric, string row, IReadOnlyList<double> values, bool? higherIsBetter = null)
    {
        Series.Add(new("rate", metric, row, values.ToArray(), higherIsBetter));
        double mean = values.Count == 0 ? double.NaN : values.Average();
        Metric(metric, mean);
        if (higherIsBetter is { } up) output.MetricDirection(metric, up);
        Rows.Add(new SummaryRow(stepId, of, row, mean, double.NaN, values.Count, higherIsBetter));
        return mean;
    }

    /// <summary>Writes a count (shards add up).</summary>
    public void Count(string name, double value)
    {
        Series.Add(new("count", name, null, [value]));
        Metric(name, value);
    }

    /// <summary>Writes a series again (the shards' series concatenated).</summary>
    public void Replay(MetricSeries s)
    {
        switch (s.Kind)
        {
            case "stat": Stat(s.Name, s.Values, s.HigherIsBetter); break;
            case "rate": Rate(s.Name, s.Row!, s.Values, s.HigherIsBetter); break;
            case "count": Count(s.Name, s.Values.Sum()); break;
            default: throw new LoupeException($"unknown metric series kind '{s.Kind}'");
        }
    }
}

/// <summary>One line of a metric step's <c>expect</c> option: the grammar of a step's <c>expect:</c> lines
/// (<see cref="ExpectLine"/>: <c>[prefix.]metric op number</c>), checked against the metrics this step writes.</summary>
public sealed record Expectation(ExpectLine Line)
{
    /// <summary>Parse errors of every expectation (empty when all parse).</summary>
    public static IEnumerable<string> Errors(string[] expect, IReadOnlyList<string> metrics)
    {
        for (int i = 0; i < expect.Length; i++)
            if (Parse(expect[i], i, metrics, out var error) is null) yield return error!;
    }

    /// <summary>Parses one expectation against the step's <paramref name="metrics"/>; null with an error naming the
    /// position (1-based character) when it does not parse or names no metric of the step.</summary>
    public static Expectation? Parse(string text, int index, IReadOnlyList<string> metrics, out string? error)
    {
        string Err(int position, string what) => $"option 'expect'[{index}] \"{text}\": at character {position}: {what}";
        var line = ExpectLine.Parse(text, out var why, out int at);
        if (line is null)
        {
            error = Err(at, why == "expected a metric name" ? why + " (e.g. auc_mean)" : why!);
            return null;
        }
        if (line.Key(metrics.Contains) is null)
        {
            error = Err(text.Length - text.TrimStart().Length + 1, $"unknown metric '{line.Name}'{line.DidYouMean(metrics)}; this step writes: {string.Join(", ", metrics)}");
            return null;
        }
        error = null;
        return new Expectation(line);
    }

    /// <summary>Null when it holds; otherwise what failed.</summary>
    public string? Check(IReadOnlyDictionary<string, double> values)
    {
        if (Line.Key(values.ContainsKey) is not { } key) return $"{Line.Text} ({Line.Name} was not computed)";
        var v = values[key];
        return Line.Holds(v) ? null : $"{Line.Text} ({key} = {v.ToString("G4", CultureInfo.InvariantCulture)})";
    }
}
