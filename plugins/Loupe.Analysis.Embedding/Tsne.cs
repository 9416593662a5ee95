using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using System.Diagnostics;
using Loupe.Abstractions;

namespace Loupe.Analysis.Embedding;

/// <summary>Initialisation of t-SNE.</summary>
public enum TsneInit
{
    /// <summary>First two principal components, scaled to std 1e-4 (scikit-learn's default).</summary>
    Pca,
    /// <summary>N(0, 1e-4²) from the step seed.</summary>
    Random,
}

/// <summary>Options of <c>tsne</c>.</summary>
public sealed record TsneOptions : FeatureOptions
{
    /// <summary>Perplexity.</summary>
    [Range(1.0, 10000.0), Description("perplexity: effective number of neighbours (must be below the number of inputs)")]
    public double Perplexity { get; init; } = 30;
    /// <summary>Early exaggeration.</summary>
    [Range(1.0, 1000.0), Description("early exaggeration factor on P")]
    public double EarlyExaggeration { get; init; } = 12;
    /// <summary>Exaggeration iterations.</summary>
    [Range(0, 100000), Description("iterations with early exaggeration (momentum 0.5)")]
    public int ExaggerationIterations { get; init; } = 250;
    /// <summary>Iterations.</summary>
    [Range(250, 100000), Description("total iterations (momentum 0.8 after the exaggeration phase)")]
    public int Iterations { get; init; } = 1000;
    /// <summary>Learning rate.</summary>
    [Range(0.0, 1e7), Description("learning rate; 0 = 'auto', max(N / early_exaggeration / 4, 50) as scikit-learn")]
    public double LearningRate { get; init; }
    /// <summary>θ.</summary>
    [Range(0.0, 1.0), Description("Barnes-Hut angle θ: larger is faster and coarser")]
    public double Theta { get; init; } = 0.5;
    /// <summary>Initialisation.</summary>
    [Description("pca (default, scaled as scikit-learn) or random (seeded)")]
    public TsneInit Init { get; init; } = TsneInit.Pca;
    /// <summary>Trustworthiness k.</summary>
    [Range(0, 1000), Description("report trustworthiness at this k (0 = skip; costs one N×N ranking in blocks)")]
    public int TrustworthinessK { get; init; } = 10;
    /// <summary>Thumbnail map size.</summary>
    [Range(0, 8000), Description("thumbnail map size in pixels (0 = no map)")]
    public int MapSize { get; init; } = 1600;
    /// <summary>Thumbnail size.</summary>
    [Range(0, 512), Description("thumbnail size in pixels on the map; 0 = auto (map_size / (1.4·√N), at least 24)")]
    public int ThumbnailSize { get; init; }
    /// <summary>Plot size.</summary>
    [Range(200, 4000), Description("scatter plot size in pixels (height)")]
    public int PlotSize { get; init; } = 900;
}

/// <summary>Barnes-Hut t-SNE of a layer's dataset features: <c>coordinates.npy</c> (N×2), <c>points2d.json</c> (for the report), <c>scatter.png</c> coloured
/// by label with a legend, <c>map.png</c> (thumbnails at their positions), KL divergence and trustworthiness metrics.</summary>
public sealed class TsneAnalysis : FeatureAnalysis<TsneOptions>, IDeclaresMetrics
{
    /// <inheritdoc/>
    public IReadOnlyList<string> MetricNames => ["kl_divergence", "iterations", "learning_rate", "tsne_seconds"];
    /// <inheritdoc/>
    public IReadOnlyList<string> MetricNamesFor(object options, IModel model) =>
        ((TsneOptions)options).TrustworthinessK is > 0 and var k ? [.. MetricNames, $"trustworthiness_k{k}"] : MetricNames;

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(TsneOptions options, AnalysisValidationContext context)
    {
        if (options.ExaggerationIterations > options.Iterations)
            yield return $"option 'exaggeration_iterations' ({options.ExaggerationIterations}) exceeds 'iterations' ({options.Iterations})";
        if (context.InputCount is { } n && BarnesHutTsne.CheckPerplexity(n, options.Perplexity) is { } msg) yield return "option 'perplexity': " + msg;
    }

    /// <inheritdoc/>
    public override void Run(TsneOptions options, IAnalysisContext ctx)
    {
        // Fail before any forward pass when the source knows its size (the validation context has no input count yet).
        if (ctx.InputCount is { } count && BarnesHutTsne.CheckPerplexity(count, options.Perplexity) is { } early)
            throw new LoupeException(early);
        using var fs = Features.Collect(ctx, options.Layer, options.Pool);
        var settings = new TsneSettings
        {
            Perplexity = options.Perplexity,
            EarlyExaggeration = options.EarlyExaggeration,
            ExaggerationIterations = options.ExaggerationIterations,
            Iterations = options.Iterations,
            LearningRate = options.LearningRate > 0 ? options.LearningRate : null,
            Theta = options.Theta,
            PcaInit = options.Init == TsneInit.Pca,
            Seed = ctx.Seed,
        };
        var sw = Stopwatch.StartNew();
        var r = BarnesHutTsne.Fit(fs.X, settings,
            (it, kl) => ctx.Progress(0.9 + 0.09 * it / options.Iterations, $"t-SNE iteration {it}, KL {kl:F4}"), ctx.Cancellation);
        var seconds = sw.Elapsed.TotalSeconds;
        ctx.Output.Raw("coordinates", null, Features.Matrix(r.Embedding, fs.N, 2));
        ctx.Output.Json("ids", fs.Ids);
        ctx.Output.Json("kl-history", r.History.Select(h => new { iteration = h.Iteration, kl = h.Kl }).ToArray());
        if (fs.Labels is { } l) ctx.Output.Raw("labels", null, Features.LabelArray(l));
        ctx.Output.Metric("kl_divergence", r.KlDivergence);
        ctx.Output.Metric("iterations", r.Iterations);
        ctx.Output.Metric("learning_rate", r.LearningRate);
        ctx.Output.Metric("tsne_seconds", seconds);
        if (options.TrustworthinessK > 0)
        {
            if (options.TrustworthinessK < fs.N / 2.0)
                ctx.Output.Metric($"trustworthiness_k{options.TrustworthinessK}", Trustworthiness.Compute(fs.X, r.Embedding, options.TrustworthinessK));
            else ctx.Warn($"trustworthiness skipped: k = {options.TrustworthinessK} needs at least {2 * options.TrustworthinessK + 1} inputs");
        }
        var xs = Enumerable.Range(0, fs.N).Select(i => r.Embedding[2 * i]).ToArray();
        var ys = Enumerable.Range(0, fs.N).Select(i => r.Embedding[2 * i + 1]).ToArray();
        var title = $"t-SNE of '{options.Layer}' ({fs.N} inputs, perplexity {options.Perplexity:0.#}, KL {r.KlDivergence:F3})";
        ctx.Output.Figure("scatter", null, () => Plots.Scatter(xs, ys, fs.Labels, ctx.Labels, title, "t-SNE 1", "t-SNE 2", options.PlotSize));
        ctx.Output.Json(Points2D.ArtifactName, Plots.Points(title, "t-SNE 1", "t-SNE 2", fs, xs, ys));
        if (options.MapSize > 0)
        {
            int thumb = options.ThumbnailSize > 0 ? options.ThumbnailSize
                : Math.Clamp((int)(options.MapSize / (1.4 * Math.Sqrt(fs.N))), 24, Math.Max(24, options.MapSize / 8));
            var layout = Plots.ThumbnailLayout(xs, ys, options.MapSize, thumb);
            var pixels = Features.PixelsAt(ctx, layout.Select(p => p.Index));
            try
            {
                var map = Plots.ThumbnailMap(options.MapSize, thumb, layout, i => Plots.Resize(Display.Image(pixels[i]), thumb), fs.Labels);
                ctx.Output.Display("map", null, map);
            }
            finally { foreach (var t in pixels.Values) t.Dispose(); }
        }
    }
}
