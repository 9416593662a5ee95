using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Variant of <c>mprt</c>.</summary>
public enum MprtVariant
{
    /// <summary>Smooth MPRT: maps averaged over noisy copies of the input before they are compared.</summary>
    Smooth,
    /// <summary>Efficient MPRT: the rise in the maps' histogram entropy when the model is randomised.</summary>
    Efficient,
}

/// <summary>Order in which <c>mprt</c> randomises the modules (Quantus <c>layer_order</c>).</summary>
public enum MprtOrder
{
    /// <summary>Cascading from the first module the input meets to the output (Quantus's default for both variants).</summary>
    BottomUp,
    /// <summary>Cascading from the output module down to the input (Adebayo et al.'s cascade).</summary>
    TopDown,
    /// <summary>One module at a time on the intact model, in bottom-up order.</summary>
    Independent,
}

/// <summary>Options of <c>mprt</c>.</summary>
public sealed record MprtOptions : RandomisationOptions
{
    /// <summary>What a map's values are.</summary>
    [Description("pixels (the default: a per-channel map summed over its channels, signed, as quantus.explain reduces the maps it gives Quantus's MPRT variants — SmoothMPRT always calls it) or values (every value of the map as the method gives it, a per-channel map's C·H·W values, as Quantus flattens a per-channel a_batch or explain_func output)")]
    public FeatureUnit Features { get; init; }

    /// <summary>Variant.</summary>
    [Description("smooth (sMPRT: Spearman of noise-averaged |maps|, intact vs randomised model; lower is better) or efficient (eMPRT: relative rise of the map's histogram entropy, randomised over intact; higher is better)")]
    public MprtVariant Variant { get; init; } = MprtVariant.Smooth;
    /// <summary>Layer order.</summary>
    [Description("order of randomisation: bottom-up (cascading from the input side, Quantus's default), top-down (cascading from the output) or independent (one module at a time); the score is the curve's last point")]
    public MprtOrder Order { get; init; } = MprtOrder.BottomUp;
    /// <summary>Per-layer curve.</summary>
    [Description("compute the curve after every module (true, Quantus skip_layers: false) or only the last point (false: two map evaluations instead of one per module)")]
    public bool PerLayer { get; init; } = true;
    /// <summary>Noisy copies.</summary>
    [Range(1, 100_000), Description("smooth: copies averaged per map, the last one without noise (Quantus nr_samples: 50)")]
    public int Samples { get; init; } = 50;
    /// <summary>Noise magnitude.</summary>
    [Range(0.0, 1000.0), Description("smooth: noise σ as a fraction of the input's value range max − min (Quantus noise_magnitude: 0.1)")]
    public double NoiseMagnitude { get; init; } = 0.1;
    /// <summary>Histogram bins.</summary>
    [Range(2, 100_000), Description("efficient: bins of the histogram of map values whose entropy is the map's complexity (Quantus n_bins: 100)")]
    public int Bins { get; init; } = 100;
    /// <summary>Quantus's rule for the bins.</summary>
    [Description("efficient: 'bins' from every map of the run by Quantus's rule (complexity_func_kwargs rule): freedman-diaconis, scott, square-root, sturges or rice, clamped to [min_bins, max_bins]; as Quantus, the sample size n is the number of axes of one explanation (3), so square-root, sturges and rice give min_bins; not under --shard")]
    public BinRule? BinsRule { get; init; }
    /// <summary>Fewest bins.</summary>
    [Range(1, 100_000), Description("efficient with bins_rule: the fewest bins (Quantus min_n_bins: 10)")]
    public int MinBins { get; init; } = 10;
    /// <summary>Most bins.</summary>
    [Range(1, 100_000), Description("efficient with bins_rule: the most bins (Quantus max_n_bins: 200)")]
    public int MaxBins { get; init; } = 200;
    /// <summary>Similarity (sMPRT).</summary>
    [Description("smooth: how a randomised model's map is compared with the intact one (Quantus similarity_func): spearman (the default), pearson, kendall (τ-b) or flat-ssim (Quantus's ssim: skimage's SSIM of the flattened maps)")]
    public MapSimilarity Similarity { get; init; } = DefaultSimilarity;
    /// <summary>The default of <see cref="Similarity"/>.</summary>
    public const MapSimilarity DefaultSimilarity = MapSimilarity.Spearman;
    /// <summary>Normalise.</summary>
    [Description("rescale each map (smooth: after averaging), per map, before abs and the comparison: true (Quantus's default function of both variants, second-moment), false, or " + Normalisations.Functions + "; default: on for smooth (Quantus sMPRT), off for efficient (Quantus eMPRT); Quantus's plain MPRT normalises by max. Spearman, Pearson and Kendall do not change under a positive scale; flat-ssim does")]
    public Normalisation? Normalise { get; init; }
    /// <summary>Complexity of a map (eMPRT).</summary>
    [Description("efficient: the map's complexity (Quantus complexity_func): discrete-entropy (the default: entropy of the 'bins'-bin histogram of its values), entropy (Shannon entropy of the map as a distribution, a/Σa; needs abs: true) or gini (Gini coefficient of the values + 1e-7, sorted)")]
    public MprtComplexity Complexity { get; init; }
    /// <summary>Copies per call.</summary>
    [Range(1, 100_000), Description("smooth: noisy copies per call of the method (default: within the memory budget)")]
    public int? MicroBatch { get; init; }
    /// <summary>Absolute values.</summary>
    [Description("take |·| of the maps (smooth: of the noise-averaged map) before comparing them (Quantus's defaults: true for MPRT and sMPRT, false for eMPRT)")]
    public bool? Abs { get; init; }
    /// <summary>The score.</summary>
    [Description("smooth: last (the curve's last point, Quantus return_last_correlation), average (the mean over the randomised points, what return_average_correlation means; needs per_layer) or quantus-average (the mean over every point, the original's included, as Quantus 0.6 computes return_average_correlation: its check for the original's key misses it; needs per_layer)")]
    public MprtScore Score { get; init; } = MprtScore.Last;
    /// <summary>What smooth's randomised maps are compared with.</summary>
    [Description("smooth: what each randomised model's map is compared with: smoothed (the intact model's noise-averaged map, as the paper and Quantus when no a_batch is passed; the default) or given (the evaluated step's own maps, as Quantus when a_batch is passed)")]
    public MprtReference Reference { get; init; }
    /// <summary>Quantus's compute_extra_scores.</summary>
    [Description("efficient: also the model's complexity, the entropy of its softmax output, at each point, and per input the extra scores of Quantus's compute_extra_scores (mprt_delta_explanation, mprt_fraction_explanation, mprt_delta_model, mprt_fraction_model, mprt_delta_explanation_vs_models, mprt_average_complexity, mprt_correlation_model_vs_explanation_complexity; mprt_extra.json); one forward per point more")]
    public bool ExtraScores { get; init; }
    /// <summary>Quantus's reset.</summary>
    protected override ParameterRandomisation DefaultRandomisation => ParameterRandomisation.Reset;
}

/// <summary>eMPRT's complexity of a map (Quantus's complexity_func).</summary>
public enum MprtComplexity
{
    /// <summary>Entropy of the histogram of the values (Quantus <c>discrete_entropy</c>).</summary>
    DiscreteEntropy,
    /// <summary>Shannon entropy of a / Σa (Quantus <c>entropy</c>, scipy.stats.entropy); non-negative maps only.</summary>
    Entropy,
    /// <summary>Gini coefficient of the values + 1e-7, sorted ascending (Quantus <c>gini_coeffiient</c>).</summary>
    Gini,
}

/// <summary>What <c>mprt</c>'s smooth variant compares the randomised models' maps with.</summary>
public enum MprtReference
{
    /// <summary>The intact model's noise-averaged maps (Hedström et al.; Quantus SmoothMPRT without a_batch).</summary>
    Smoothed,
    /// <summary>The evaluated step's maps (Quantus SmoothMPRT with a_batch).</summary>
    Given,
}

/// <summary>What <c>mprt</c>'s smooth score reduces its curve to.</summary>
public enum MprtScore
{
    /// <summary>The last point: every module randomised.</summary>
    Last,
    /// <summary>The mean over the points after the original.</summary>
    Average,
    /// <summary>The mean over every point, the original's included: Quantus 0.6's return_average_correlation (MPRT and
    /// SmoothMPRT skip a key "orig" where they stored "original", so the original point enters the mean).</summary>
    QuantusAverage,
}

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
    public override string Id => "mprt";
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Parameters);
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
        if (noise is null) return scope.MoveToOuter(Magnitude(o, Flat(o, LinkedMaps(o, b.Context, b.X, null, b.Selection).Map, b.N)));
        long n = b.N, s = noise.shape[0], run = clean is null ? s : s - 1;   // the last copy is the clean input
        long chunk = Math.Max(1, Explain.CopiesPerForward(b.Context, b.X, o.MicroBatch, gradients: true) / n);
        Tensor? sum = clean is null ? null : Flat(o, clean, n);
        for (long s0 = 0; s0 < run; s0 += chunk)
        {
            using var inner = NewDisposeScope();
            long k = Math.Min(chunk, run - s0);
            var xs = (b.X.unsqueeze(0) + noise.narrow(0, s0, k)).reshape(k * n, b.X.shape[1], b.X.shape[2], b.X.shape[3]);
            var sel = b.Selection.Rows(Enumerable.Range(0, (int)k).SelectMany(_ => Enumerable.Range(0, (int)n)).ToArray());
            var m = Flat(o, LinkedMaps(o, b.Context, xs, null, sel).Map, k * n).reshape(k, n, -1).sum([0]);
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
        double Point(Tensor maps, int i) => smooth ? Similar(reference[i], maps[i]) : MapComplexity.Of(maps[i], o.Complexity, o.Bins);
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
