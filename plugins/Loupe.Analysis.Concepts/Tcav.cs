using TorchSharp;
using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Concepts;

/// <summary>Options of <c>tcav</c>.</summary>
public sealed record TcavOptions
{
    /// <summary>Layer.</summary>
    [Required, LayerName, Description("layer whose activations (flattened) the CAVs live in, e.g. pool2")]
    public string Layer { get; init; } = "";
    /// <summary>Concept folders.</summary>
    [Required, FilePath(Directory = true), Description("folder with one subfolder of example images per concept (the subfolder name is the concept name)")]
    public string Concepts { get; init; } = "";
    /// <summary>Random counterexample sets.</summary>
    [Required, FilePath(Directory = true), Description("folder with one subfolder per random counterexample set (at least 3; Kim et al. use many)")]
    public string Random { get; init; } = "";
    /// <summary>Concept subset.</summary>
    [Description("concepts to test (subfolder names); default all")]
    public string[]? Names { get; init; }
    /// <summary>Classes.</summary>
    [Description("classes to test (names or indices); default every class that has inputs in the data")]
    public string[]? Classes { get; init; }
    /// <summary>C.</summary>
    [Range(1e-6, 1e6), Description("inverse L2 strength C of the logistic-regression CAV classifier (sklearn's C)")]
    public double C { get; init; } = 1.0;
    /// <summary>Significance level.</summary>
    [Range(1e-9, 0.5), Description("significance level before the Bonferroni correction (divided by concepts × classes)")]
    public double Alpha { get; init; } = 0.05;
}

/// <summary>TCAV (Kim et al. 2018): a concept activation vector (CAV) is the normal of a linear classifier that separates
/// a layer's activations of concept examples from those of a random set (L2 logistic regression, solved exactly:
/// <see cref="Stats.Logistic"/>); a class's TCAV score is the fraction of its inputs whose logit increases along the CAV
/// (∇h_k(f_l(x))·v &gt; 0). Each concept is scored against every random set, and so is a random baseline (random set
/// r+1 against set r); Student's two-sided t-test compares the two series and a concept is significant when
/// p &lt; alpha / (concepts × classes) (Bonferroni). The class of an input is its label, or the prediction without
/// labels. Outputs <c>scores.npy</c> (concepts+1 × classes × sets, last row the baseline), <c>pvalues.npy</c>,
/// <c>cavs.npy</c> (concepts × sets × D), <c>tcav.json</c> and <c>tcav.png</c> (bars: mean ± std over the sets, * marks
/// significance).</summary>
public sealed class Tcav : Analysis<TcavOptions>, IDeclaresMetrics
{
    /// <inheritdoc/>
    public IReadOnlyList<string> MetricNames => [];

    /// <inheritdoc/>
    public IReadOnlyList<string>? MetricNamesFor(object options, IModel model) => null;

    /// <summary><c>tcav_&lt;concept&gt;_&lt;class&gt;</c> for the concepts (<c>names</c>, else the subfolders) and the
    /// classes (<c>classes</c>, else every labelled class: those with inputs in the data are written), so that
    /// <c>expect:</c> lines are checked at validation; null when the classes are not known by name (no labels).</summary>
    public IReadOnlyList<string>? MetricNamesFor(object options, AnalysisValidationContext context)
    {
        var o = (TcavOptions)options;
        if (context.Labels is not { } labels || !Directory.Exists(o.Concepts)) return null;
        long[] classes;
        try { classes = ResolveClasses(o.Classes, labels, "tcav") ?? [.. Enumerable.Range(0, labels.Count).Select(k => (long)k)]; }
        catch (LoupeException) { return null; }   // reported by the run
        if (classes.Length == 0) return null;
        var concepts = o.Names ?? [.. Directory.EnumerateDirectories(o.Concepts).Select(d => Path.GetFileName(d)!)];
        return [.. concepts.SelectMany(c => classes.Select(k => $"tcav_{c}_{ClassName(labels, k)}"))];
    }

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations | ModelCapabilities.Gradients, UsesTarget: false);

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(TcavOptions options, AnalysisValidationContext context)
    {
        if (Directory.Exists(options.Random) && Directory.EnumerateDirectories(options.Random).Count() < 3)
            yield return $"option 'random': {options.Random} needs at least 3 subfolders (random counterexample sets) for the t-test";
        if (Directory.Exists(options.Concepts) && options.Names is { } names)
            foreach (var n in names.Where(n => !Directory.Exists(Path.Combine(options.Concepts, n))))
                yield return $"option 'names': concept '{n}' has no subfolder in {options.Concepts}";
    }

    /// <summary>Activations of <paramref name="layer"/> for a folder of images (rows × D, float32, CPU).</summary>
    public static Tensor FolderActivations(IAnalysisContext ctx, string folder, string layer, string what)
    {
        using var scope = NewDisposeScope();
        using var pixels = ConceptImages.Pixels(ConceptImages.Files(folder, what), ctx.Input);
        var rows = new List<Tensor>();
        for (long s = 0; s < pixels.shape[0]; s += ctx.BatchSize)
        {
            var x = ctx.Input.Normalize(pixels.narrow(0, s, Math.Min(ctx.BatchSize, pixels.shape[0] - s)));
            using var capture = ctx.Model.Capture([layer], forGradients: false);
            using (no_grad()) using (NewDisposeScope()) ctx.Model.Forward(x);
            rows.Add(capture[layer].flatten(1).to(ScalarType.Float32).cpu().clone());
        }
        return scope.MoveToOuter(cat(rows));
    }

    /// <summary>Resolves class names or indices against the model's labels.</summary>
    public static long[]? ResolveClasses(string[]? classes, IReadOnlyList<string> labels, string plugin)
    {
        if (classes is null) return null;
        return classes.Select(c => labels.ToList().IndexOf(c) is var i and >= 0 ? i
            : long.TryParse(c, System.Globalization.CultureInfo.InvariantCulture, out var v) && v >= 0 ? v
            : throw new LoupeException($"{plugin}: option 'classes': '{c}' is neither a class name ({string.Join(", ", labels)}) nor an index")).ToArray();
    }

    /// <inheritdoc/>
    public override void Run(TcavOptions options, IAnalysisContext ctx)
    {
        var conceptDirs = ConceptImages.Subfolders(options.Concepts, "tcav: option 'concepts'")
            .Where(d => options.Names is null || options.Names.Contains(Path.GetFileName(d))).ToList();
        var randomDirs = ConceptImages.Subfolders(options.Random, "tcav: option 'random'");
        if (randomDirs.Count < 3) throw new LoupeException($"tcav: option 'random': {options.Random} needs at least 3 random sets");
        var names = conceptDirs.Select(d => Path.GetFileName(d)!).ToList();
        int nc = names.Count, nr = randomDirs.Count;
        ctx.Progress(0.02, "activations of the concept and random images");
        var concept = conceptDirs.Select(d => FolderActivations(ctx, d, options.Layer, $"tcav: concept '{Path.GetFileName(d)}'")).ToList();
        var random = randomDirs.Select(d => FolderActivations(ctx, d, options.Layer, $"tcav: random set '{Path.GetFileName(d)}'")).ToList();
        long dim = random[0].shape[1];
        // CAVs: rows 0..nc-1 the concepts, row nc the random baseline (set r+1 against set r).
        var cavs = new double[nc + 1][][];
        var accuracy = new double[nc + 1, nr];
        for (int ci = 0; ci <= nc; ci++)
        {
            cavs[ci] = new double[nr][];
            for (int r = 0; r < nr; r++)
            {
                ctx.Cancellation.ThrowIfCancellationRequested();
                var pos = ci < nc ? concept[ci] : random[(r + 1) % nr];
                var (w, _, acc) = Stats.Logistic(pos, random[r], options.C);
                cavs[ci][r] = w;
                accuracy[ci, r] = acc;
            }
            ctx.Progress(0.05 + 0.3 * (ci + 1) / (nc + 1), $"CAVs of {(ci < nc ? names[ci] : "the random baseline")}");
        }
        foreach (var t in concept.Concat(random)) t.Dispose();

        // Directional derivatives over the data: one forward and one backward per class and batch.
        using var cavMatrix = tensor(cavs.SelectMany(c => c.SelectMany(w => w)).ToArray(), [(nc + 1) * nr, dim]);
        var classes = ResolveClasses(options.Classes, ctx.Labels, "tcav");
        var positive = new Dictionary<long, long[]>();
        var count = new Dictionary<long, long>();
        long seen = 0;
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            using var capture = ctx.Model.Capture([options.Layer], forGradients: true);
            var output = ctx.Model.Forward(batch.Input);
            var a = capture[options.Layer];
            var cls = batch.Labels ?? output.argmax(1).cpu().ToArray<long>();
            var wanted = cls.Distinct().Where(k => classes is null || classes.Contains(k)).OrderBy(k => k).ToList();
            foreach (var (k, idx) in wanted.Select((k, i) => (k, i)))
            {
                if (k >= output.shape[1]) throw new LoupeException($"tcav: class {k} is out of range: the model has {output.shape[1]} outputs");
                var g = CheckedOps.Grad([output[.., k].sum()], [a], retainGraph: idx < wanted.Count - 1)[0].flatten(1).to(ScalarType.Float64).cpu();
                var rows = tensor(Enumerable.Range(0, cls.Length).Where(i => cls[i] == k).Select(i => (long)i).ToArray());
                var signs = g.index_select(0, rows).MatMul(cavMatrix.t()).gt(0).to(ScalarType.Int64).sum(dim: 0).ToArray<long>();
                if (!positive.TryGetValue(k, out var acc)) { positive[k] = acc = new long[signs.Length]; count[k] = 0; }
                for (int j = 0; j < signs.Length; j++) acc[j] += signs[j];
                count[k] += rows.shape[0];
            }
            seen += batch.Ids.Length;
            if (ctx.InputCount is > 0) ctx.Progress(0.35 + 0.55 * seen / ctx.InputCount.Value, $"directional derivatives {seen}/{ctx.InputCount}");
        }
        var tested = (classes ?? positive.Keys.OrderBy(k => k).ToArray()).Where(positive.ContainsKey).ToArray();
        foreach (var missing in (classes ?? []).Where(k => !positive.ContainsKey(k)))
            ctx.Warn($"tcav: class {ClassName(ctx, missing)} has no inputs in the data; it is left out");
        if (tested.Length == 0) throw new LoupeException("tcav: none of the classes has inputs in the data");
        Report(options, ctx, names, tested, positive, count, cavs, accuracy, nr, dim);
    }

    static string ClassName(IAnalysisContext ctx, long k) => ClassName(ctx.Labels, k);
    static string ClassName(IReadOnlyList<string> labels, long k) => k < labels.Count ? labels[(int)k] : $"class {k}";

    static void Report(TcavOptions options, IAnalysisContext ctx, List<string> names, long[] tested, Dictionary<long, long[]> positive,
        Dictionary<long, long> count, double[][][] cavs, double[,] accuracy, int nr, long dim)
    {
        int nc = names.Count, nk = tested.Length;
        var scores = new float[(nc + 1) * nk * nr];
        var p = new float[nc * nk];
        int tests = nc * nk;
        double threshold = options.Alpha / tests;
        var results = new List<object>();
        var bars = new List<TcavBar>();
        for (int ki = 0; ki < nk; ki++)
        {
            long k = tested[ki];
            double[] Series(int ci) => Enumerable.Range(0, nr).Select(r => positive[k][ci * nr + r] / (double)count[k]).ToArray();
            var baseline = Series(nc);
            for (int r = 0; r < nr; r++) scores[(nc * nk + ki) * nr + r] = (float)baseline[r];
            for (int ci = 0; ci < nc; ci++)
            {
                var s = Series(ci);
                for (int r = 0; r < nr; r++) scores[(ci * nk + ki) * nr + r] = (float)s[r];
                var (t, pv) = Stats.TTest(s, baseline);
                p[ci * nk + ki] = (float)pv;
                bool significant = pv < threshold;
                results.Add(new { concept = names[ci], @class = ClassName(ctx, k), class_index = k, inputs = count[k], mean = s.Average(), std = Std(s),
                    baseline_mean = baseline.Average(), baseline_std = Std(baseline), t, p = pv, significant,
                    cav_accuracy = Enumerable.Range(0, nr).Average(r => accuracy[ci, r]) });
                bars.Add(new TcavBar(ClassName(ctx, k), names[ci], s.Average(), Std(s), significant));
                ctx.Output.Metric($"tcav_{names[ci]}_{ClassName(ctx, k)}", s.Average());
            }
            bars.Add(new TcavBar(ClassName(ctx, k), "random baseline", baseline.Average(), Std(baseline), null));
        }
        ctx.Output.Raw("scores", null, new NdArray(scores, [nc + 1, nk, nr]));
        ctx.Output.Raw("pvalues", null, new NdArray(p, [nc, nk]));
        ctx.Output.Raw("cavs", null, new NdArray(cavs.Take(nc).SelectMany(c => c.SelectMany(w => w.Select(v => (float)v))).ToArray(), [nc, nr, dim]));
        ctx.Output.Json("tcav", new { layer = options.Layer, concepts = names, classes = tested.Select(k => ClassName(ctx, k)), random_sets = nr,
            alpha = options.Alpha, bonferroni_threshold = threshold, c = options.C, results });
        ctx.Output.Figure("tcav", null, () => ConceptPlots.TcavBars(bars,
            $"TCAV at {options.Layer}: mean ± std over {nr} random sets; * = significant (two-sided t-test vs random CAVs, p < {Display.Number(threshold)} after Bonferroni)"));
    }

    static double Std(double[] v)
    {
        double m = v.Average();
        return Math.Sqrt(v.Sum(x => (x - m) * (x - m)) / Math.Max(1, v.Length - 1));
    }
}

/// <summary>One bar of the TCAV plot: class, concept, mean score, std, significance (null for the baseline).</summary>
public sealed record TcavBar(string Class, string Concept, double Mean, double Std, bool? Significant);
