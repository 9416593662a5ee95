using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Options of <c>sanity-randomisation</c>.</summary>
public sealed record SanityOptions : RandomisationOptions
{
    /// <summary>Flag threshold.</summary>
    [Range(-1.0, 1.0), Description("warn (and set insensitive = 1) when the mean Spearman ρ at full randomisation is above this")]
    public double FlagAbove { get; init; } = 0.9;
    /// <summary>Optional cap.</summary>
    [Range(1, 100_000), Description("randomise at most this many modules (top first); default: all")]
    public int? MaxLayers { get; init; }
    /// <summary>Adebayo et al.'s normal draws.</summary>
    protected override ParameterRandomisation DefaultRandomisation => ParameterRandomisation.Normal;
}

/// <summary>Cascading model-parameter randomisation (Adebayo et al. 2018). Modules are the parameter names grouped by
/// prefix (before the last '.'), randomised from the top (last) module down, cumulatively: each parameter is
/// overwritten in place with N(0, σ²) values (σ: the original's std; seeded from the step seed and the module; or
/// re-initialised as PyTorch's reset_parameters, as Quantus's MPRT: <c>randomise: reset</c>), the
/// maps are recomputed for the same target classes as on the intact model, and compared with the original maps:
/// Spearman ρ of |map| (average ranks for ties) and SSIM of the min-max normalised |map|. The weights are restored
/// after every batch, also on errors. A method whose maps do not change is flagged.</summary>
public sealed class SanityRandomisation : MetricAnalysis<SanityOptions>
{
    /// <inheritdoc/>
    protected override string? ExplainsAgain(SanityOptions options) => "the inputs on randomised models";

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Parameters) { HandlesSideInputs = true };   // the batch's maps on each randomised model
    /// <inheritdoc/>
    public override IReadOnlyList<string> MetricNames => ["spearman_full_mean", "spearman_full_std", "ssim_full_mean", "ssim_full_std", "insensitive"];

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(SanityOptions options, AnalysisValidationContext context)
    {
        foreach (var e in ModelRandomisation.Validate(context.Model, options.Kind)) yield return e;
        foreach (var e in options.RandomisationErrors()) yield return e;
    }

    /// <inheritdoc/>
    protected override void Evaluate(SanityOptions o, IAnalysisContext ctx, MetricWriter writer)
    {
        var kind = o.Kind;
        var modules = ModelRandomisation.ExecutionOrder(ctx, ModelRandomisation.Modules(ctx.Model, kind));
        ModelRandomisation.WarnLeftOut(ctx, "sanity-randomisation", kind);
        if (o.MaxLayers is { } max) modules = modules.Take(max).ToList();
        int l = modules.Count;
        var spearman = Enumerable.Range(0, l).Select(_ => new List<double>()).ToArray();
        var ssim = Enumerable.Range(0, l).Select(_ => new List<double>()).ToArray();
        int done = 0;
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            var x = batch.Input;
            long h = x.shape[2], w = x.shape[3];
            var original = LinkedMaps(o, ctx, batch);
            var selection = original.Selection;
            var reference = Maps.Reduce(original.Map, h, w).abs();
            // The intact maps' values and ranks, once for every randomised layer.
            var referenceValues = Enumerable.Range(0, (int)x.shape[0]).Select(i => reference[i].contiguous().ToArray<float>()).ToArray();
            var referenceRanks = referenceValues.Select(v => v.All(float.IsFinite) ? Maps.Ranks(v) : null).ToArray();
            var saved = new List<(Tensor Live, Tensor Copy)>();
            try
            {
                for (int g = 0; g < l; g++)
                {
                    ctx.Cancellation.ThrowIfCancellationRequested();
                    ModelRandomisation.Randomise(ctx, modules[g], g, kind, o.ResetSeed, saved);
                    using var inner = NewDisposeScope();
                    var randomised = Maps.Reduce(LinkedMaps(o, ctx, x, batch.Ids, selection).Map, h, w).abs();
                    for (int i = 0; i < x.shape[0]; i++)
                    {
                        spearman[g].Add(Maps.Spearman(referenceValues[i], referenceRanks[i], randomised[i].contiguous().ToArray<float>()));
                        ssim[g].Add(Maps.Ssim(reference[i], randomised[i]));
                    }
                }
            }
            finally
            {
                ModelRandomisation.Restore(saved);
            }
            done += batch.Ids.Length;
            if (ctx.InputCount is > 0) ctx.Progress(done / (double)ctx.InputCount.Value);
        }
        int invalid = spearman.Sum(v => v.Count(d => !double.IsFinite(d)));
        if (invalid > 0) ctx.Warn($"sanity-randomisation: {invalid} randomised map(s) of '{o.Of!.Id}' had non-finite values and were left out of the means");
        static (double, double) Ms(List<double> v)
        {
            var f = v.Where(double.IsFinite).ToList();
            if (f.Count == 0) return (double.NaN, double.NaN);
            var m = f.Average();
            return (m, Math.Sqrt(f.Sum(a => (a - m) * (a - m)) / f.Count));
        }
        var per = Enumerable.Range(0, l).Select(g => new { g, sp = Ms(spearman[g]), ss = Ms(ssim[g]) }).ToList();
        ctx.Output.Json("randomisation", new
        {
            of = o.Of!.Id,
            note = "cascading, top module first; row k: modules 0..k randomised; Spearman of |map| and SSIM of min-max normalised |map| vs the intact model",
            layers = per.Select(p => new
            {
                module = modules[p.g].Module, parameters = modules[p.g].Parameters,
                spearman_mean = p.sp.Item1, spearman_std = p.sp.Item2, ssim_mean = p.ss.Item1, ssim_std = p.ss.Item2,
            }).ToArray(),
        });
        if (l > 0 && spearman[0].Count > 0)
        {
            int n = spearman[0].Count;
            ctx.Output.Raw("spearman", null, new NdArray(Enumerable.Range(0, n).SelectMany(i => spearman.Select(s => (float)s[i])).ToArray(), [n, l]));
            ctx.Output.Raw("ssim", null, new NdArray(Enumerable.Range(0, n).SelectMany(i => ssim.Select(s => (float)s[i])).ToArray(), [n, l]));
        }
        var (spFull, _) = l == 0 ? (double.NaN, 0.0) : writer.Stat("spearman_full", spearman[l - 1], higherIsBetter: false);
        if (l > 0) writer.Stat("ssim_full", ssim[l - 1], higherIsBetter: false);
        bool insensitive = spFull > o.FlagAbove;
        writer.Metric("insensitive", insensitive ? 1 : 0);
        if (insensitive)
            ctx.Warn($"sanity-randomisation: the maps of '{o.Of.Id}' barely change when the whole model is randomised (mean Spearman ρ {spFull:F3} > {o.FlagAbove}): they do not depend on the model's parameters");
        if (l > 0)
        {
            var xs = Enumerable.Range(0, l).Select(i => (double)i).ToArray();
            ctx.Output.Figure("randomisation", null, () => Plots.Lines(xs,
                [("Spearman ρ of |map|", per.Select(p => p.sp.Item1).ToArray()), ("SSIM", per.Select(p => p.ss.Item1).ToArray())],
                $"cascading randomisation of '{o.Of.Id}'", "randomised down to module, top first", "similarity to the original map",
                xTicks: modules.Select(m => m.Module).ToArray(),
                yRange: (Math.Min(-0.1, per.SelectMany(p => new[] { p.sp.Item1, p.ss.Item1 }).Where(double.IsFinite).DefaultIfEmpty(0).Min() - 0.05), 1.05)));
        }
    }
}
