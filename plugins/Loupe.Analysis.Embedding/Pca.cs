using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Embedding;

/// <summary>Options of <c>pca</c>.</summary>
public sealed record PcaOptions : FeatureOptions
{
    /// <summary>Number of components.</summary>
    [Range(1, 4096), Description("number of principal components kept (the scatter shows the first two)")]
    public int Components { get; init; } = 10;
    /// <summary>Plot size.</summary>
    [Range(200, 4000), Description("scatter plot size in pixels (square)")]
    public int PlotSize { get; init; } = 900;
}

/// <summary>PCA of a layer's dataset features: <c>coordinates.npy</c> (N×k), <c>components.npy</c> (k×D),
/// <c>explained-variance.npy</c>, <c>explained-variance-ratio.npy</c>, <c>mean.npy</c>, a scatter of PC1/PC2 coloured by label (PNG, and <c>points2d.json</c> for the report).</summary>
public sealed class PcaAnalysis : FeatureAnalysis<PcaOptions>, IDeclaresMetrics
{
    /// <inheritdoc/>
    public IReadOnlyList<string> MetricNames => ["explained_variance_ratio_pc1", "explained_variance_ratio_pc2", "explained_variance_ratio_pc3"];
    /// <inheritdoc/>
    public IReadOnlyList<string> MetricNamesFor(object options, IModel model) => MetricNames.Take(Math.Clamp(((PcaOptions)options).Components, 1, 3)).ToList();

    /// <inheritdoc/>
    public override void Run(PcaOptions options, IAnalysisContext ctx)
    {
        using var fs = Features.Collect(ctx, options.Layer, options.Pool);
        var r = Pca.Fit(fs.X, options.Components);
        int k = r.ExplainedVariance.Length;
        ctx.Output.Raw("coordinates", null, Pca.ToNd(r.Coordinates));
        ctx.Output.Raw("components", null, Pca.ToNd(r.Components));
        ctx.Output.Raw("explained-variance", null, new NdArray(r.ExplainedVariance.Select(v => (float)v).ToArray(), [k]));
        ctx.Output.Raw("explained-variance-ratio", null, new NdArray(r.ExplainedVarianceRatio.Select(v => (float)v).ToArray(), [k]));
        ctx.Output.Raw("mean", null, new NdArray(r.Mean.Select(v => (float)v).ToArray(), [r.Mean.Length]));
        ctx.Output.Json("ids", fs.Ids);
        if (fs.Labels is { } l) ctx.Output.Raw("labels", null, Features.LabelArray(l));
        for (int i = 0; i < Math.Min(k, 3); i++) ctx.Output.Metric($"explained_variance_ratio_pc{i + 1}", r.ExplainedVarianceRatio[i]);
        if (k >= 2)
        {
            var xs = Enumerable.Range(0, fs.N).Select(i => r.Coordinates[i, 0]).ToArray();
            var ys = Enumerable.Range(0, fs.N).Select(i => r.Coordinates[i, 1]).ToArray();
            string title = $"PCA of '{options.Layer}' ({fs.N} inputs, {fs.D} features)",
                xLabel = $"PC1 ({r.ExplainedVarianceRatio[0]:P1})", yLabel = $"PC2 ({r.ExplainedVarianceRatio[1]:P1})";
            ctx.Output.Figure("scatter", null, () => Plots.Scatter(xs, ys, fs.Labels, ctx.Labels, title, xLabel, yLabel, options.PlotSize));
            ctx.Output.Json(Points2D.ArtifactName, Plots.Points(title, xLabel, yLabel, fs, xs, ys));
        }
    }
}
