using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

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
            var cov = xc.t().MatMul(xc) / (n - 1);
            var (ev, evec) = linalg.eigh(cov);                    // ascending
            vals = ev.flip(0).narrow(0, 0, k).clamp_min(0);
            comps = evec.flip(1).narrow(1, 0, k).t();
        }
        else
        {
            var gram = xc.MatMul(xc.t());
            var (ev, evec) = linalg.eigh(gram);
            var s2 = ev.flip(0).narrow(0, 0, k).clamp_min(0);
            var u = evec.flip(1).narrow(1, 0, k);                  // N×k
            var s = s2.sqrt();
            comps = (xc.t().MatMul(u) / s.clamp_min(1e-300).unsqueeze(0)).t();   // k×D, unit rows
            comps = where(s.unsqueeze(1) > 0, comps, zeros_like(comps));
            vals = s2 / (n - 1);
        }
        // Sign: the loading with the largest |value| of each component is positive.
        var arg = comps.abs().argmax(1, keepdim: true);
        var sign = comps.gather(1, arg).sign();
        sign = where(sign == 0, ones_like(sign), sign);
        comps = comps * sign;
        var coords = xc.MatMul(comps.t());
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
