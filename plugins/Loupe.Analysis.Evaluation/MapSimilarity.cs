using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>How the randomisation metrics compare two maps (Quantus's similarity_func).</summary>
public enum MapSimilarity
{
    /// <summary>Spearman's ρ of the flattened maps (average ranks), scipy's <c>spearmanr</c>: NaN when a map is constant
    /// (it has no ranks to correlate), as Quantus's <c>correlation_spearman</c> gives.</summary>
    Spearman,
    /// <summary>Pearson's r of the flattened maps.</summary>
    Pearson,
    /// <summary>Kendall's τ-b of the flattened maps (scipy's kendalltau).</summary>
    Kendall,
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
        float[] Flat(Tensor t) => t.to(ScalarType.Float32).ToArray<float>();
        return kind switch
        {
            MapSimilarity.Spearman => Maps.Spearman(Flat(a), Flat(b), constantIsNaN: true),
            MapSimilarity.Pearson => Maps.Pearson(Flat(a).Select(v => (double)v).ToArray(), Flat(b).Select(v => (double)v).ToArray()),
            MapSimilarity.Kendall => KendallTau(Flat(a).Select(v => (double)v).ToArray(), Flat(b).Select(v => (double)v).ToArray()),
            MapSimilarity.Ssim => Maps.Ssim(a.reshape(h, w), b.reshape(h, w)),
            MapSimilarity.FlatSsim => FlatSsim(a.reshape(-1), b.reshape(-1)),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
        };
    }

    /// <summary>The similarity of <paramref name="reference"/> (H×W values) to each map it is compared with, as
    /// <see cref="Of"/> gives it; Spearman ranks the reference once (a reference compared with every randomised model's
    /// map in MPRT).</summary>
    public static Func<Tensor, double> Against(MapSimilarity kind, Tensor reference, long h, long w)
    {
        if (kind != MapSimilarity.Spearman) return map => Of(kind, reference, map, h, w);
        var values = reference.to(ScalarType.Float32).ToArray<float>();
        var ranks = values.All(float.IsFinite) ? Maps.Ranks(values) : null;
        return map =>
        {
            using var scope = NewDisposeScope();
            return Maps.Spearman(values, ranks, map.to(ScalarType.Float32).ToArray<float>(), constantIsNaN: true);
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

    /// <summary>Kendall's τ-b as scipy's <c>kendalltau</c> computes it, in O(n log n) (Knight 1966): the pairs sorted by
    /// (x, y), the discordant ones counted as inversions of y, and (C − D) = n₀ − ties(x) − ties(y) + ties(x, y) − 2D
    /// over √((n₀ − ties(x))(n₀ − ties(y))), n₀ = n(n − 1)/2. NaN when either side is constant.</summary>
    public static double KendallTau(double[] x, double[] y)
    {
        int n = x.Length;
        if (y.Length != n) throw new ArgumentException("Kendall's τ of series of different lengths");
        if (n < 2 || x.Any(double.IsNaN) || y.Any(double.IsNaN)) return double.NaN;
        // y as dense ranks, then the pairs in (x, y) order.
        var byY = Enumerable.Range(0, n).ToArray();
        Array.Sort(y.ToArray(), byY);
        var rank = new int[n];
        for (int i = 0, r = 0; i < n; i++)
        {
            if (i > 0 && y[byY[i]] != y[byY[i - 1]]) r++;
            rank[byY[i]] = r;
        }
        var order = Enumerable.Range(0, n).ToArray();
        Array.Sort(order, (i, j) => x[i] != x[j] ? x[i].CompareTo(x[j]) : rank[i].CompareTo(rank[j]));
        long Pairs(long t) => t * (t - 1) / 2;
        long xTies = 0, jointTies = 0, yTies = 0, discordant = 0;
        for (int i = 0, run = 1, joint = 1; i < n; i++)
        {
            bool sameX = i + 1 < n && x[order[i + 1]] == x[order[i]];
            bool sameXY = sameX && rank[order[i + 1]] == rank[order[i]];
            if (sameX) run++; else { xTies += Pairs(run); run = 1; }
            if (sameXY) joint++; else { jointTies += Pairs(joint); joint = 1; }
        }
        var perRank = new long[n];
        foreach (var r in rank) perRank[r]++;
        foreach (var c in perRank) yTies += Pairs(c);
        // Inversions of the y ranks in (x, y) order: a Fenwick tree of the ranks seen so far.
        var tree = new long[n + 1];
        for (int i = 0; i < n; i++)
        {
            int r = rank[order[i]];
            long notAbove = 0;
            for (int k = r + 1; k > 0; k -= k & -k) notAbove += tree[k];
            discordant += i - notAbove;
            for (int k = r + 1; k <= n; k += k & -k) tree[k]++;
        }
        long total = Pairs(n);
        double den = Math.Sqrt((double)(total - xTies)) * Math.Sqrt((double)(total - yTies));
        return den > 0 ? (total - xTies - yTies + jointTies - 2 * discordant) / den : double.NaN;
    }
}

