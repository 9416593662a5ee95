using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;
using Baseline = Loupe.Abstractions.Toolkit.Fill;

namespace Loupe.Analysis.Evaluation;

/// <summary>Options of <c>deletion</c> and <c>insertion</c>.</summary>
public sealed record PixelCurveOptions : MetricOptions
{
    /// <summary>Steps.</summary>
    [Range(1, 100_000), Description("number of steps; step k removes/inserts round(k/steps · units) pixels or patches")]
    public int Steps { get; init; } = 100;
    /// <summary>Patch size.</summary>
    [Range(1, 4096), Description("order and remove patch × patch blocks (ranked by their mean map value) instead of pixels")]
    public int Patch { get; init; } = 1;
    /// <summary>Baseline.</summary>
    [Alias("fill"), OrConstant(nameof(BaselineValue)), Description("substrate (also spelled fill): zero (normalised), mean, blur, black, or a constant: one value or one per channel in normalised space (as Captum's baselines), e.g. 0.5 or [0.1, 0.2, 0.3]; default: zero for deletion, blur for insertion (Petsiuk et al.)")]
    public Baseline? Baseline { get; init; }
    /// <summary>Constant baseline (older spelling; <c>fill: 0.5</c> binds here).</summary>
    [Description("older spelling of a constant given to 'fill' (or 'baseline')")]
    public float[]? BaselineValue { get; init; }
    /// <summary>Blur σ.</summary>
    [Range(0.5, 1000.0), Description("σ in pixels of the blur baseline (RISE: 5)")]
    public double BlurSigma { get; init; } = 5;
    /// <summary>Copies per forward.</summary>
    [Range(1, 100_000), Description("perturbed copies per forward pass (default: within 64 RGB 224² images)")]
    public int? MicroBatch { get; init; }
}

/// <summary>Deletion / insertion (Petsiuk et al. 2018, RISE): pixels are ranked by the linked step's map (highest
/// first; a per-channel map by Σ_c |·|, an N×H×W map by its signed value), removed from the image (deletion: replaced
/// by the baseline) or revealed on the baseline (insertion) in <c>steps</c> equal fractions; the softmax probability of
/// the target class is recorded at every step and the area under the curve (trapezoid over the fraction in [0,1]) is
/// the score. Lower is better for deletion, higher for insertion.</summary>
public abstract class PixelCurve : MetricAnalysis<PixelCurveOptions>, IShardable
{
    /// <summary>True for insertion.</summary>
    protected abstract bool Insert { get; }
    string Name => Insert ? "insertion" : "deletion";

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward) { HandlesSideInputs = true };
    /// <inheritdoc/>
    public override IReadOnlyList<string> MetricNames => ["auc_mean", "auc_std"];

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(PixelCurveOptions o, AnalysisValidationContext context) =>
        OptionRules.OnlyWith(o, (o.Baseline ?? (Insert ? Baseline.Blur : Baseline.Zero)) == Baseline.Blur && o.BaselineValue is null,
            "the blur baseline (fill: blur, insertion's default)", nameof(o.BlurSigma));

    /// <inheritdoc/>
    protected override void Evaluate(PixelCurveOptions o, IAnalysisContext ctx, MetricWriter writer)
    {
        var fill = o.Baseline ?? (Insert ? Baseline.Blur : Baseline.Zero);
        var ids = new List<string>();
        var curves = new List<double[]>();
        var labels = new List<string>();
        bool warned = false;
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            var x = batch.Input;
            long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
            var result = LinkedMaps(o, ctx, batch);
            var sel = result.Selection;
            if (sel.Classes is null && !warned) { ctx.Warn($"{Name}: the target is not a class; curves record the target score instead of a softmax probability"); warned = true; }
            var map = Maps.Reduce(result.Map, h, w);
            var rankPix = PixelRanks(map, o.Patch, out long units);
            var baseline = Baselines.Of(x, fill, o.BlurSigma, ctx.Input, o.BaselineValue, "baseline_value");
            var counts = Enumerable.Range(0, o.Steps + 1).Select(k => (long)Math.Round(k * (double)units / o.Steps)).ToArray();
            long chunk = Math.Max(1, Explain.CopiesPerForward(ctx, x, o.MicroBatch) / n);
            var parts = new List<Tensor>();
            for (long k0 = 0; k0 < counts.Length; k0 += chunk)
            {
                using var inner = NewDisposeScope();
                ctx.Cancellation.ThrowIfCancellationRequested();
                long p = Math.Min(chunk, counts.Length - k0);
                var ks = tensor(counts[(int)k0..(int)(k0 + p)]).view(1, p, 1, 1);
                var m = (rankPix.unsqueeze(1) < ks).to(ScalarType.Float32).unsqueeze(2);          // N×p×1×H×W, 1 = changed
                var (from, to) = Insert ? (baseline, x) : (x, baseline);
                var copies = (from.unsqueeze(1) * (1 - m) + to.unsqueeze(1) * m).reshape(n * p, c, h, w);
                var rows = Enumerable.Range(0, (int)n).SelectMany(i => Enumerable.Repeat(i, (int)p)).ToArray();
                using (SideInputs.ForRows(ctx.Model, rows))   // each copy with its row's side inputs
                    parts.Add(inner.MoveToOuter(Maps.Probability(ctx, copies, sel.Rows(rows)).view(n, p)));
            }
            var probs = cat(parts, 1).to(ScalarType.Float64).contiguous().ToArray<double>();
            int s1 = o.Steps + 1;
            for (int i = 0; i < n; i++)
            {
                curves.Add(probs.AsSpan(i * s1, s1).ToArray());
                ids.Add(batch.Ids[i]);
                labels.Add(sel.Labels[i]);
            }
            if (ctx.InputCount is > 0) ctx.Progress(ids.Count / (double)ctx.InputCount.Value);
        }
        var aucs = curves.Select(Auc).ToList();
        var flat = curves.SelectMany(cv => cv.Select(v => (float)v)).ToArray();
        ctx.Output.Raw("curves", null, new NdArray(flat, [curves.Count, o.Steps + 1]));
        ctx.Output.Json("auc", new
        {
            metric = Name, of = o.Of!.Id, baseline = fill.ToString().ToLowerInvariant(), steps = o.Steps, patch = o.Patch,
            inputs = ids.Select((id, i) => new { id, target = labels[i], auc = aucs[i] }).ToArray(),
        });
        var (mean, std) = writer.Stat("auc", aucs, higherIsBetter: Insert);
        Plot(ctx.Output, o.Of.Id, fill.ToString().ToLowerInvariant(), curves, mean, std);
    }

    void Plot(IArtifactSink output, string of, string baseline, List<double[]> curves, double mean, double std)
    {
        int steps = curves[0].Length - 1;
        var xs = Enumerable.Range(0, steps + 1).Select(k => k / (double)steps).ToArray();
        var meanCurve = xs.Select((_, k) => curves.Average(cv => cv[k])).ToArray();
        output.Figure("curves", null, () => Plots.Lines(xs, [($"mean (AUC {mean:F3} ± {std:F3})", meanCurve)],
            $"{Name} of '{of}' ({curves.Count} inputs, baseline {baseline})",
            Insert ? "fraction of pixels inserted" : "fraction of pixels deleted", "probability of the target class", curves.Take(64).ToList(),
            yRange: (-0.02, 1.02), legendLow: Insert));
    }

    /// <inheritdoc/>
    protected override void MergeDetails(IShardMerge merge)
    {
        var curves = merge.Rows("curves");
        var auc = merge.Concat("auc", "inputs");
        var aucs = auc["inputs"]!.AsArray().Select(i => (double)i!["auc"]!).ToList();
        var (mean, std) = MetricWriter.MeanStd(aucs);
        int s1 = (int)curves.Shape[1];
        var rows = Enumerable.Range(0, (int)curves.Shape[0]).Select(i => curves.Data.AsSpan(i * s1, s1).ToArray().Select(v => (double)v).ToArray()).ToList();
        Plot(merge.Output, (string)auc["of"]!, (string)auc["baseline"]!, rows, mean, std);
    }

    /// <summary>Trapezoid AUC of a curve sampled at k/steps, k = 0..steps.</summary>
    public static double Auc(double[] curve)
    {
        double s = 0;
        for (int k = 0; k + 1 < curve.Length; k++) s += (curve[k] + curve[k + 1]) / 2;
        return s / (curve.Length - 1);
    }

    /// <summary>Rank of each pixel's unit (0 = highest map value), N×H×W int64; units are pixels or patch × patch blocks.</summary>
    public static Tensor PixelRanks(Tensor map, int patch, out long units)
    {
        using var scope = NewDisposeScope();
        long n = map.shape[0], h = map.shape[1], w = map.shape[2];
        long gh = (h + patch - 1) / patch, gw = (w + patch - 1) / patch;
        var blocks = patch > 1
            ? nn.functional.avg_pool2d(map.unsqueeze(1), patch, stride: patch, ceil_mode: true, count_include_pad: false).view(n, gh * gw)
            : map.reshape(n, h * w);
        units = gh * gw;
        var order = blocks.argsort(1, descending: true);
        var rank = zeros_like(order).scatter_(1, order, arange(units, dtype: ScalarType.Int64).unsqueeze(0).expand(n, units).contiguous());
        var pix = rank.view(n, gh, gw);
        if (patch > 1) pix = pix.repeat_interleave(patch, 1).repeat_interleave(patch, 2)[.., ..(int)h, ..(int)w];
        return scope.MoveToOuter(pix.contiguous());
    }
}

/// <summary><c>deletion</c>: remove the most important pixels first; a faithful map makes the probability drop fast (low AUC).</summary>
public sealed class Deletion : PixelCurve { /// <inheritdoc/>
    protected override bool Insert => false; }

/// <summary><c>insertion</c>: reveal the most important pixels first on the baseline; a faithful map makes the probability rise fast (high AUC).</summary>
public sealed class Insertion : PixelCurve { /// <inheritdoc/>
    protected override bool Insert => true; }
