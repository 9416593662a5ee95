using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Embedding;

/// <summary>A fitted PCA (float64).</summary>
/// <param name="Coordinates">N×k projections of the centred data.</param>
/// <param name="Components">k×D unit principal axes (rows), largest variance first.</param>
/// <param name="ExplainedVariance">Variance along each axis (eigenvalue of the covariance, divisor N − 1).</param>
/// <param name="ExplainedVarianceRatio">Share of the total variance.</param>
/// <param name="Mean">Column means (D).</param>
public sealed record PcaResult(double[,] Coordinates, double[,] Components, double[] ExplainedVariance, double[] ExplainedVarianceRatio, double[] Mean);

/// <summary>Exact PCA: centre, then the eigen-decomposition of the smaller of the D×D covariance and the N×N Gram
/// matrix (both float64). Sign convention: each component's largest-|value| loading is positive.</summary>
public static class Pca
{
    /// <summary>Fits <paramref name="k"/> components of <paramref name="x"/> (N×D).</summary>
    public static PcaResult Fit(Tensor x, int k)
    {
        using var scope = NewDisposeScope();
        long n = x.shape[0], d = x.shape[1];
        if (n < 2) throw new LoupeException("PCA needs at least 2 inputs");
        k = (int)Math.Min(k, Math.Min(n, d));
        var xd = x.to(ScalarType.Float64);
        var mean = xd.mean([0]);
        var xc = xd - mean;
        Tensor vals, comps; // comps: k×D
        if (d <= n)
        {
            var cov = xc.t().matmul(xc) / (n - 1);
            var (ev, evec) = linalg.eigh(cov);                    // ascending
            vals = ev.flip(0).narrow(0, 0, k).clamp_min(0);
            comps = evec.flip(1).narrow(1, 0, k).t();
        }
        else
        {
            var gram = xc.matmul(xc.t());
            var (ev, evec) = linalg.eigh(gram);
            var s2 = ev.flip(0).narrow(0, 0, k).clamp_min(0);
            var u = evec.flip(1).narrow(1, 0, k);                  // N×k
            var s = s2.sqrt();
            comps = (xc.t().matmul(u) / s.clamp_min(1e-300).unsqueeze(0)).t();   // k×D, unit rows
            comps = where(s.unsqueeze(1) > 0, comps, zeros_like(comps));
            vals = s2 / (n - 1);
        }
        // Sign: the loading with the largest |value| of each component is positive.
        var arg = comps.abs().argmax(1, keepdim: true);
        var sign = comps.gather(1, arg).sign();
        sign = where(sign == 0, ones_like(sign), sign);
        comps = comps * sign;
        var coords = xc.matmul(comps.t());
        var total = xc.pow(2).sum() / (n - 1);
        var ratio = total.item<double>() > 0 ? vals / total : zeros_like(vals);
        return new PcaResult(To2D(coords), To2D(comps), vals.ToArray<double>(), ratio.ToArray<double>(), mean.ToArray<double>());
    }

    static double[,] To2D(Tensor t)
    {
        var c = t.contiguous();
        var flat = c.ToArray<double>();
        int r = (int)c.shape[0], cols = (int)c.shape[1];
        var m = new double[r, cols];
        Buffer.BlockCopy(flat, 0, m, 0, flat.Length * sizeof(double));
        return m;
    }

    /// <summary>Row-major copy as float32 <see cref="NdArray"/>.</summary>
    public static NdArray ToNd(double[,] m) =>
        new(m.Cast<double>().Select(v => (float)v).ToArray(), [m.GetLength(0), m.GetLength(1)]);
}

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
public sealed class PcaAnalysis : FeatureAnalysis<PcaOptions>
{
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
            ctx.Output.Display("scatter", null, Plots.Scatter(xs, ys, fs.Labels, ctx.Labels, title, xLabel, yLabel, options.PlotSize));
            ctx.Output.Json(Points2D.ArtifactName, Plots.Points(title, xLabel, yLabel, fs, xs, ys));
        }
    }
}
