using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>How the randomisation metrics compare two maps (Quantus's similarity_func).</summary>
public enum MapSimilarity
{
    /// <summary>Spearman's ρ of the flattened maps (average ranks; a constant map against a varying one: 0).</summary>
    Spearman,
    /// <summary>Pearson's r of the flattened maps.</summary>
    Pearson,
    /// <summary>Loupe's SSIM: 7×7 windows over the H×W maps, each min-max scaled (as <c>sanity-randomisation</c>).</summary>
    Ssim,
    /// <summary>Quantus's <c>ssim</c>: skimage's SSIM of the flattened maps (7-value windows, sample covariances, the
    /// joint value range as data range, the 3 values at each end cropped).</summary>
    FlatSsim,
}

/// <summary>The similarities of <see cref="MapSimilarity"/> on two maps.</summary>
public static class MapSimilarities
{
    /// <summary>The similarity of two H×W maps (any shape with H·W values).</summary>
    public static double Of(MapSimilarity kind, Tensor a, Tensor b, long h, long w)
    {
        using var scope = NewDisposeScope();
        float[] Flat(Tensor t) => t.to(ScalarType.Float32).contiguous().view(-1).data<float>().ToArray();
        return kind switch
        {
            MapSimilarity.Spearman => Maps.Spearman(Flat(a), Flat(b)),
            MapSimilarity.Pearson => Maps.Pearson(Flat(a).Select(v => (double)v).ToArray(), Flat(b).Select(v => (double)v).ToArray()),
            MapSimilarity.Ssim => Maps.Ssim(a.reshape(h, w), b.reshape(h, w)),
            MapSimilarity.FlatSsim => FlatSsim(a.reshape(-1), b.reshape(-1)),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
        };
    }

    /// <summary>skimage's <c>structural_similarity</c> of two 1-D signals with its defaults (7-value uniform windows,
    /// sample covariances ×7/6, K1 0.01, K2 0.03, mean over the windows that fit), data range |max − min| of both
    /// together, as Quantus's <c>ssim</c> calls it. NaN for two equal constant signals' zero range, as skimage gives.</summary>
    public static double FlatSsim(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        const int win = 7;
        var x = a.to(ScalarType.Float64).reshape(1, 1, -1);
        var y = b.to(ScalarType.Float64).reshape(1, 1, -1);
        if (x.shape[2] < win) throw new ArgumentException($"SSIM of signals shorter than its window of {win} values");
        double range = Math.Abs(Math.Max(x.max().item<double>(), y.max().item<double>()) - Math.Min(x.min().item<double>(), y.min().item<double>()));
        Tensor Mean(Tensor t) => nn.functional.avg_pool1d(t, win, stride: 1);
        double norm = win / (win - 1.0);
        var ux = Mean(x); var uy = Mean(y);
        var vx = (Mean(x * x) - ux * ux) * norm; var vy = (Mean(y * y) - uy * uy) * norm; var vxy = (Mean(x * y) - ux * uy) * norm;
        double c1 = Math.Pow(0.01 * range, 2), c2 = Math.Pow(0.03 * range, 2);
        var s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
        return s.mean().item<double>();
    }
}
