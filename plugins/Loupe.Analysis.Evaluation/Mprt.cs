using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary><c>mprt</c> variants of Hedström et al. (2023, "Sanity checks revisited"; Quantus SmoothMPRT and
/// EfficientMPRT), beside the cascading <c>sanity-randomisation</c>. Modules are those of <c>sanity-randomisation</c>
/// in execution order; each is re-initialised as PyTorch's reset_parameters after torch.manual_seed(reset_seed + 1), as
/// Quantus does (or drawn as there: <c>randomise: normal</c>; either way every order ends on the same fully randomised
/// model; restored after each batch, also on errors), in <c>order</c>, and after each module the
/// method runs again for the classes chosen on the intact model: a curve with one point per module, after the
/// <c>original</c> point. The score is the curve's last point (Quantus <c>return_last_correlation</c>).
/// <list type="bullet">
/// <item><c>smooth</c>: each map is the mean over <c>samples</c> copies x + ε, ε ~ N(0, σ²) for all but the last copy
/// (ε = 0), σ = noise_magnitude × (max x − min x); the noise is seeded per input and shared by every model. A point is
/// the Spearman ρ of the intact (or, <c>reference: given</c>, the evaluated step's) and the randomised model's |map|
/// (normalising, as Quantus does, leaves ranks unchanged); the original point is the ρ of the evaluated step's map and the intact noise-averaged one. Lower
/// is better.</item>
/// <item><c>efficient</c>: a point is H(map), the entropy (natural log) of the <c>bins</c>-bin histogram of the map's
/// values over their range (or the map's Shannon entropy or Gini coefficient: <c>complexity</c>); the score is (H(last) − H(original)) / H(original), the relative rise in complexity.
/// Higher is better: a map that depends on the model becomes noisier.</item>
/// </list></summary>
public sealed class Mprt : QualityMetric<MprtOptions>
{
    /// <inheritdoc/>
    protected override bool HoldsSideInputs => true;
    /// <inheritdoc/>
    protected override string? ExplainsAgain(MprtOptions options) => "the inputs on randomised models";

    /// <inheritdoc/>
    public override string Id => "mprt";
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Parameters) { HandlesSideInputs = HoldsSideInputs };
    /// <inheritdoc/>
    public override IReadOnlyList<string> MetricNames => ["mprt_mean", "mprt_std", "mprt_original_mean", "mprt_original_std"];
    /// <inheritdoc/>
    protected override bool HigherIsBetterWith(MprtOptions options) => options.Variant == MprtVariant.Efficient;

    /// <inheritdoc/>
    protected override IReadOnlyList<string> MetricNamesWith(MprtOptions options, IModel model) =>
        [.. MetricNames, .. LayerKeys(options.PerLayer ? ModelRandomisation.Modules(model, options.Kind).Count : 1)
            .Concat(options.ExtraScores ? EmprtExtra.Names : []).SelectMany(k => new[] { k + "_mean", k + "_std" })];

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(MprtOptions options, AnalysisValidationContext context)
    {
        foreach (var e in ModelRandomisation.Validate(context.Model, options.Kind)) yield return e;
        foreach (var e in options.RandomisationErrors()) yield return e;
        if (options.Score != MprtScore.Last && options.Variant != MprtVariant.Smooth)
            yield return $"option 'score': {(options.Score == MprtScore.Average ? "average" : "quantus-average")} applies to variant smooth (eMPRT's score is the relative entropy rise)";
        if (options.ExtraScores && options.Variant != MprtVariant.Efficient)
            yield return "option 'extra_scores' applies to variant efficient (Quantus EfficientMPRT's compute_extra_scores)";
        if (options.Similarity != MprtOptions.DefaultSimilarity && options.Variant != MprtVariant.Smooth)
            yield return "option 'similarity' applies to variant smooth (eMPRT compares complexities)";
        if (options.Similarity == MapSimilarity.Ssim)
            yield return "option 'similarity': ssim compares 2-D maps (random-logit, sanity-randomisation); mprt takes spearman, pearson, kendall or flat-ssim";
        if (options.Complexity == MprtComplexity.Entropy && options.Abs != true)
            yield return "option 'complexity': entropy treats the map as a distribution and needs non-negative values: set abs: true (Quantus asserts the same)";
        if (options.Reference != MprtReference.Smoothed && options.Variant != MprtVariant.Smooth)
            yield return "option 'reference' applies to variant smooth (eMPRT compares complexities)";
        if (options.Complexity != MprtComplexity.DiscreteEntropy && options.Variant != MprtVariant.Efficient)
            yield return "option 'complexity' applies to variant efficient";
        if (options.Score != MprtScore.Last && !options.PerLayer)
            yield return $"option 'score': {(options.Score == MprtScore.Average ? "average" : "quantus-average")} needs the curve's every point (per_layer: true)";
        if (options.BinsRule is not null && (options.Variant != MprtVariant.Efficient || options.Complexity != MprtComplexity.DiscreteEntropy))
            yield return "option 'bins_rule' applies to variant efficient with complexity discrete-entropy";
        var defaults = new MprtOptions();
        foreach (var (key, set, variant) in new[]
        {
            ("samples", options.Samples != defaults.Samples, MprtVariant.Smooth),
            ("noise_magnitude", options.NoiseMagnitude != defaults.NoiseMagnitude, MprtVariant.Smooth),
            ("micro_batch", options.MicroBatch is not null, MprtVariant.Smooth),
            ("bins", options.Bins != defaults.Bins, MprtVariant.Efficient),
        })
            if (set && options.Variant != variant) yield return $"option '{key}' applies to variant {(variant == MprtVariant.Smooth ? "smooth" : "efficient")}";
        if (options.Variant == MprtVariant.Efficient)
        {
            // bins counts the discrete entropy's histogram, unless bins_rule computes it; min_bins and max_bins bound the rule.
            foreach (var e in OptionRules.OnlyWith(options, options.Complexity == MprtComplexity.DiscreteEntropy && options.BinsRule is null, "complexity: discrete-entropy without bins_rule", nameof(options.Bins))) yield return e;
            foreach (var e in OptionRules.OnlyWith(options, options.BinsRule is not null, "bins_rule", nameof(options.MinBins), nameof(options.MaxBins))) yield return e;
        }
        else foreach (var e in OptionRules.OnlyWith(options, false, "variant efficient with bins_rule", nameof(options.MinBins), nameof(options.MaxBins))) yield return e;
        if (options.MinBins > options.MaxBins) yield return $"option 'min_bins' ({options.MinBins}) must not exceed 'max_bins' ({options.MaxBins})";
    }

    /// <inheritdoc/>
    protected override string? Unshardable(MprtOptions o) => o.BinsRule is BinRule.FreedmanDiaconis or BinRule.Scott
        ? "its bins_rule computes the histogram's bins from every map of the run" : null;

    /// <summary>The options with <c>bins</c> from <c>bins_rule</c> when it is set, computed once from every map of the
    /// run as Quantus computes it from the whole a_batch.</summary>
    MprtOptions WithRuleBins(MprtOptions o, IAnalysisContext ctx)
    {
        if (o.BinsRule is not { } rule) return o;
        if (rule is not (BinRule.FreedmanDiaconis or BinRule.Scott)) return o with { Bins = MapComplexity.QuantusBins(null, rule, o.MinBins, o.MaxBins) };
        using var scope = NewDisposeScope();
        var maps = cat(ctx.Batches().Select(batch => Flat(o, LinkedMaps(o, ctx, batch).Map, batch.Ids.Length).flatten()).ToList(), 0);
        // Quantus normalises the whole a_batch it is given at once (then |·|) before it applies the rule.
        maps = Normalisations.Rows(maps.unsqueeze(0), o.Normalise.Resolve(false, Normalisation.SecondMoment)).squeeze(0);
        if (o.Abs == true) maps = maps.abs();
        return o with { Bins = MapComplexity.QuantusBins(maps, rule, o.MinBins, o.MaxBins) };
    }

    /// <summary>Series names of the curve's points after the original: <c>mprt_layer1</c> … (k-th module randomised).</summary>
    static IEnumerable<string> LayerKeys(int count) => Enumerable.Range(1, count).Select(k => $"mprt_layer{k}");

    /// <summary>The modules (top first, as <see cref="ModelRandomisation.Randomise"/> numbers them) in the order they
    /// are randomised: indices into the top-first list.</summary>
    public static int[] RandomisationOrder(int count, MprtOrder order) => order == MprtOrder.TopDown
        ? Enumerable.Range(0, count).ToArray()
        : Enumerable.Range(0, count).Reverse().ToArray();

    /// <summary>|map| (N×D) of the method: as given, or averaged over the noisy copies. <paramref name="clean"/>: the
    /// evaluated step's own maps of the inputs (the intact model), which stand for the last copy (noise 0) instead of
    /// running the method on it again.</summary>
    Tensor Maps(MprtOptions o, MetricBatch b, Tensor? noise, Tensor? clean = null)
    {
        using var scope = NewDisposeScope();
        if (noise is null) return scope.MoveToOuter(Magnitude(o, Flat(o, LinkedMaps(o, b.Context, b.X, null, b.Selection, b.Batch.Ids).Map, b.N)));
        long n = b.N, s = noise.shape[0], run = clean is null ? s : s - 1;   // the last copy is the clean input
        long chunk = Math.Max(1, Explain.CopiesPerForward(b.Context, b.X, o.MicroBatch, gradients: true) / n);
        Tensor? sum = clean is null ? null : Flat(o, clean, n);
        for (long s0 = 0; s0 < run; s0 += chunk)
        {
            using var inner = NewDisposeScope();
            long k = Math.Min(chunk, run - s0);
            var xs = (b.X.unsqueeze(0) + noise.narrow(0, s0, k)).reshape(k * n, b.X.shape[1], b.X.shape[2], b.X.shape[3]);
            var rows = Enumerable.Range(0, (int)k).SelectMany(_ => Enumerable.Range(0, (int)n)).ToArray();
            var sel = b.Selection.Rows(rows);
            using var held = SideInputs.ForRows(b.Context.Model, rows);   // each noisy copy with its row's side inputs
            var m = Flat(o, LinkedMaps(o, b.Context, xs, null, sel, CopyIds(b.Batch.Ids, k)).Map, k * n).reshape(k, n, -1).sum([0]);
            sum = inner.MoveToOuter(sum is null ? m : sum + m);
        }
        return scope.MoveToOuter(Magnitude(o, sum! / s));
    }

    /// <summary>The maps as <paramref name="rows"/> × values in float64: with <c>features: pixels</c> a per-channel map's
    /// signed channel sum (quantus.explain's default reduction), else every value.</summary>
    static Tensor Flat(MprtOptions o, Tensor map, long rows)
    {
        var m = map.detach().to(ScalarType.Float64);
        if (o.Features == FeatureUnit.Pixels && m.dim() == 4) m = m.sum(1);
        return m.reshape(rows, -1);
    }

    /// <summary>The map normalised (by default for sMPRT, by the second moment, as Quantus's), then |map| unless
    /// <c>abs</c> is off (by default off for eMPRT, as Quantus's).</summary>
    static Tensor Magnitude(MprtOptions o, Tensor map)
    {
        bool smooth = o.Variant == MprtVariant.Smooth;
        var m = Normalisations.Rows(map, o.Normalise.Resolve(smooth, Normalisation.SecondMoment));
        return o.Abs ?? smooth ? m.abs() : m;
    }

    /// <summary>The curve of every row: N × (1 + points), column 0 the original point; with <paramref name="model"/>,
    /// each row's model entropy at the same points is added to it (<see cref="EmprtExtra.OutputEntropies"/>).</summary>
    double[][] Curve(MprtOptions o, MetricBatch b, List<(string Module, List<string> Parameters)> modules, List<double[]>? model = null)
    {
        using var scope = NewDisposeScope();
        var ctx = b.Context;
        bool smooth = o.Variant == MprtVariant.Smooth;
        Tensor? noise = null;
        if (smooth)
        {
            var x = b.X;
            var sigma = (x.amax([1, 2, 3]) - x.amin([1, 2, 3])) * (float)o.NoiseMagnitude;               // per input
            var draws = Enumerable.Range(0, o.Samples - 1).Select(_ => InputSeeds.Randn(b.Generators, [1, .. x.shape.Skip(1)]).squeeze(0) * sigma.view(-1, 1, 1, 1))
                .Append(zeros_like(x));                                                                   // the last copy: x itself
            noise = stack(draws.ToArray());                                                               // samples×N×C×H×W
        }
        var given = Magnitude(o, Flat(o, b.Map, b.N));
        var intact = smooth ? Maps(o, b, noise, clean: b.Map) : given;   // the step's maps of x: not recomputed
        double Similar(Tensor p, Tensor q) => MapSimilarities.Of(o.Similarity, p, q, 1, p.shape[0]);
        var reference = o.Reference == MprtReference.Given ? given : intact;
        var against = smooth ? Enumerable.Range(0, (int)b.N).Select(i => MapSimilarities.Against(o.Similarity, reference[i], 1, reference.shape[1])).ToArray() : null;
        double Point(Tensor maps, int i) => smooth ? against![i](maps[i]) : MapComplexity.Of(maps[i], o.Complexity, o.Bins);
        var curves = Enumerable.Range(0, (int)b.N).Select(i => new List<double> { smooth ? Similar(given[i], intact[i]) : Point(intact, i) }).ToArray();
        // The intact model's output as the randomised ones run it: modules whose parameters are written run unfolded
        // (a batch norm folded into its convolution rounds differently), whichever batch randomises them first.
        if (model is not null) foreach (var p in modules.SelectMany(m => m.Parameters)) ctx.Model.GetParameter(p);
        var entropies = model is null ? null : EmprtExtra.OutputEntropies(b).Select(e => new List<double> { e }).ToArray();
        var order = RandomisationOrder(modules.Count, o.Order);
        var saved = new List<(Tensor Live, Tensor Copy)>();
        try
        {
            for (int k = 0; k < order.Length; k++)
            {
                ctx.Cancellation.ThrowIfCancellationRequested();
                if (o.Order == MprtOrder.Independent) ModelRandomisation.Restore(saved);
                ModelRandomisation.Randomise(ctx, modules[order[k]], order[k], o.Kind, o.ResetSeed, saved);
                if (!o.PerLayer && k < order.Length - 1) continue;
                using var inner = NewDisposeScope();
                var randomised = Maps(o, b, noise);
                for (int i = 0; i < b.N; i++) curves[i].Add(Point(randomised, i));
                if (entropies is not null)
                    foreach (var (e, i) in EmprtExtra.OutputEntropies(b).Select((e, i) => (e, i))) entropies[i].Add(e);
            }
        }
        finally
        {
            ModelRandomisation.Restore(saved);
        }
        if (entropies is not null) model!.AddRange(entropies.Select(e => e.ToArray()));
        return curves.Select(c => c.ToArray()).ToArray();
    }

    /// <summary>The score of one curve: the last point or the mean of the randomised points (smooth), or the relative
    /// rise of the complexity (efficient; Quantus's (b − a)/a in floating point: where the original's complexity is 0 — a
    /// constant map's histogram entropy — +∞ when the randomised map's is not, NaN when it is 0 too, as numpy gives).</summary>
    static double EndPoint(MprtOptions o, double[] curve) =>
        o.Variant == MprtVariant.Efficient ? (curve[^1] - curve[0]) / curve[0]
        : o.Score switch { MprtScore.Average => curve.Skip(1).Average(), MprtScore.QuantusAverage => curve.Average(), _ => curve[^1] };

    /// <inheritdoc/>
    protected override double[] Score(MprtOptions o, MetricBatch b) =>
        Curve(o, b, ModelRandomisation.ExecutionOrder(b.Context, ModelRandomisation.Modules(b.Context.Model, o.Kind))).Select(c => EndPoint(o, c)).ToArray();

    /// <inheritdoc/>
    protected override void Evaluate(MprtOptions given, IAnalysisContext ctx, MetricWriter writer)
    {
        var o = WithRuleBins(given, ctx);
        var modules = ModelRandomisation.ExecutionOrder(ctx, ModelRandomisation.Modules(ctx.Model, o.Kind));
        ModelRandomisation.WarnLeftOut(ctx, Id, o.Kind);
        var ids = new List<string>();
        var labels = new List<string>();
        var curves = new List<double[]>();
        var model = o.ExtraScores ? new List<double[]>() : null;
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            var result = LinkedMaps(o, ctx, batch);
            var gens = InputSeeds.Generators(ctx.Seed, batch.Ids)!;
            try { curves.AddRange(Curve(o, new MetricBatch(ctx, batch, result.Map, result.Selection, gens, o.MicroBatch), modules, model)); }
            finally { foreach (var g in gens) g.Dispose(); }
            ids.AddRange(batch.Ids);
            labels.AddRange(result.Selection.Labels);
            if (ctx.InputCount is > 0) ctx.Progress(ids.Count / (double)ctx.InputCount.Value);
        }
        WriteScores(ctx, writer, Id, o, HigherIsBetterWith(o), ids, labels, curves.Select(c => EndPoint(o, c)).ToList());
        if (model is not null) EmprtExtra.Write(writer, ctx.Output, ids, curves, model);
        // The curve: one series per point (metrics.csv, the summary, expect:), per input rows and the plot.
        int points = o.PerLayer ? modules.Count : 1;
        writer.Stat("mprt_original", curves.Select(c => c[0]).ToList());
        foreach (var (key, k) in LayerKeys(points).Select((key, k) => (key, k)))
            writer.Stat(key, curves.Select(c => c[k + 1]).ToList());
        var order = RandomisationOrder(modules.Count, o.Order);
        var names = o.PerLayer ? order.Select(g => modules[g].Module).ToArray()
            : [o.Order == MprtOrder.Independent ? modules[order[^1]].Module : "all modules"];
        var rows = new NdArray(curves.SelectMany(c => c.Select(v => (float)v)).ToArray(), [curves.Count, points + 1]);
        ctx.Output.Raw("mprt_curve", null, rows);
        WriteCurve(ctx.Output, new JsonObject
        {
            ["of"] = o.Of!.Id, ["variant"] = Kebab(o.Variant.ToString()), ["order"] = Kebab(o.Order.ToString()),
            ["modules"] = new JsonArray(names.Select(n => (JsonNode)n).ToArray()),
        }, rows);
    }

    static string Kebab(string name) => string.Concat(name.Select((c, i) => char.IsUpper(c) && i > 0 ? "-" + char.ToLowerInvariant(c) : char.ToLowerInvariant(c).ToString()));

    /// <summary>Writes <c>mprt_layers.json</c> (per point: the module randomised last, mean and std over inputs) and the
    /// plot of the mean curve over the inputs' curves, from the per-input rows (N × points).</summary>
    static void WriteCurve(IArtifactSink output, JsonObject info, NdArray rows)
    {
        int n = (int)rows.Shape[0], p = (int)rows.Shape[1];
        var modules = info["modules"]!.AsArray().Select(m => m!.GetValue<string>()).ToArray();
        string variant = info["variant"]!.GetValue<string>(), order = info["order"]!.GetValue<string>(), of = info["of"]!.GetValue<string>();
        var columns = Enumerable.Range(0, p).Select(j => Enumerable.Range(0, n).Select(i => (double)rows.Data[i * p + j]).ToList()).ToList();
        var stats = columns.Select(c => MetricWriter.MeanStd(c)).ToList();
        var ticks = new[] { "original" }.Concat(modules).ToArray();
        bool smooth = variant == "smooth";
        output.Json("mprt_layers", new JsonObject
        {
            ["of"] = of, ["variant"] = variant, ["order"] = order, ["modules"] = new JsonArray(modules.Select(m => (JsonNode)m).ToArray()),
            ["note"] = smooth
                ? "point k: Spearman ρ of the noise-averaged |map| of the model with the first k modules randomised (in 'order'; independent: only module k) and the intact model's; 'original': the evaluated step's map vs the intact noise-averaged map"
                : "point k: entropy (nats) of the |map| histogram with the first k modules randomised (in 'order'; independent: only module k); 'original': the intact model's",
            ["points"] = new JsonArray(ticks.Select((t, j) => (JsonNode)new JsonObject
            {
                ["randomised"] = t, ["mean"] = Num(stats[j].Mean), ["std"] = Num(stats[j].Std),
            }).ToArray()),
        });
        var xs = Enumerable.Range(0, p).Select(j => (double)j).ToArray();
        var faint = Enumerable.Range(0, Math.Min(n, 64)).Select(i => Enumerable.Range(0, p).Select(j => (double)rows.Data[i * p + j]).ToArray()).ToList();
        string xLabel = order switch
        {
            "independent" => "module randomised alone (bottom-up order)",
            "top-down" => "randomised cumulatively, output first, down to module",
            _ => "randomised cumulatively, input first, up to module",
        };
        var finite = rows.Data.Where(float.IsFinite).DefaultIfEmpty(0f).ToArray();
        output.Figure("mprt_layers", null, () => Plots.Lines(xs, [(smooth ? "mean Spearman ρ" : "mean entropy", stats.Select(s => s.Mean).ToArray())],
            $"{(smooth ? "smooth" : "efficient")} MPRT of '{of}' ({order})", xLabel,
            smooth ? "Spearman ρ to the intact model's |map|" : "entropy of the |map| histogram (nats)", faint: faint, xTicks: ticks,
            legendLow: !smooth,   // entropies sit near the top of their axis
            yRange: smooth ? (Math.Min(-0.1, finite.Min() - 0.05), 1.05) : (0, Math.Max(0.1, finite.Max() * 1.05))));
    }

    static JsonNode? Num(double v) => double.IsFinite(v) ? JsonValue.Create(v) : null;

    /// <inheritdoc/>
    protected override void MergeDetails(IShardMerge merge)
    {
        base.MergeDetails(merge);
        if (merge.Has("mprt_extra", "json")) merge.Concat("mprt_extra", "inputs");
        var rows = merge.Rows("mprt_curve");
        var info = merge.Json("mprt_layers")[0].AsObject();
        WriteCurve(merge.Output, new JsonObject
        {
            ["of"] = info["of"]!.GetValue<string>(), ["variant"] = info["variant"]!.GetValue<string>(), ["order"] = info["order"]!.GetValue<string>(),
            ["modules"] = info["modules"]!.DeepClone(),
        }, rows);
    }
}
