using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Quantus's rules for the number of histogram bins (quantus.functions.n_bins_func).</summary>
public enum BinRule
{
    /// <summary>(max − min) / (2·IQR / n^⅓).</summary>
    FreedmanDiaconis,
    /// <summary>(max − min) / (3.5·σ / n^⅓).</summary>
    Scott,
    /// <summary>√n.</summary>
    SquareRoot,
    /// <summary>log₂ n + 1.</summary>
    Sturges,
    /// <summary>2·n^⅓.</summary>
    Rice,
}

/// <summary>eMPRT's complexity of a map, and the number of bins of its histogram.</summary>
public static class MapComplexity
{
    /// <summary>Entropy (natural log) of the <paramref name="bins"/>-bin histogram of each row's values over its range.</summary>
    public static double HistogramEntropy(Tensor row, int bins)
    {
        using var scope = NewDisposeScope();
        var v = row.to(ScalarType.Float64);
        double lo = v.min().item<double>(), hi = v.max().item<double>();
        if (hi <= lo) return 0;
        var idx = ((v - lo) / (hi - lo) * bins).floor().clamp(0, bins - 1).to(ScalarType.Int64);
        var counts = zeros(bins, dtype: ScalarType.Float64).index_add_(0, idx, ones_like(v), 1);
        var p = counts / counts.sum();
        return -(p * where(p > 0, p.log(), zeros_like(p))).sum().item<double>();
    }

    /// <summary>eMPRT's complexity of one map (a row of values).</summary>
    public static double Of(Tensor row, MprtComplexity complexity, int bins)
    {
        using var scope = NewDisposeScope();
        var v = row.to(ScalarType.Float64).flatten();
        switch (complexity)
        {
            case MprtComplexity.DiscreteEntropy:
                return HistogramEntropy(v, bins);
            case MprtComplexity.Entropy:
                var p = v / v.sum();
                return -(p * where(p > 0, p.log(), zeros_like(p))).sum().item<double>();
            case MprtComplexity.Gini:
                long d = v.shape[0];
                var sorted = (v + 1e-7).sort().Values;
                var k = arange(1, d + 1, dtype: ScalarType.Float64);
                return (((2 * k - d - 1) * sorted).sum() / (d * sorted.sum())).item<double>();
            default:
                throw new ArgumentOutOfRangeException(nameof(complexity), complexity, null);
        }
    }

    /// <summary>Quantus's number of bins by <paramref name="rule"/> from the values of every map (<paramref name="values"/>,
    /// normalised and |·| as Quantus takes them; null for the rules that do not read them), clamped to
    /// [<paramref name="min"/>, <paramref name="max"/>]. Quantus takes the sample size n as the number of axes of one
    /// explanation (a_batch[0].ndim: 3 for C×H×W), not its number of values.</summary>
    public static int QuantusBins(Tensor? values, BinRule rule, int min, int max)
    {
        const double n = 3;
        double count = rule switch
        {
            BinRule.SquareRoot => Math.Floor(Math.Sqrt(n)),
            BinRule.Sturges => Math.Floor(Math.Log2(n) + 1),
            BinRule.Rice => Math.Floor(2 * Math.Cbrt(n)),
            _ => RangeOverWidth(values ?? throw new ArgumentNullException(nameof(values)), rule == BinRule.Scott, n),
        };
        return (int)Math.Max(Math.Min(count, max), min);
    }

    /// <summary>⌊(max − min) / width⌋ with Scott's width 3.5σ / n^⅓ (population σ) or Freedman–Diaconis's
    /// max(2·IQR / n^⅓, 1e-6) (numpy's linear percentiles).</summary>
    static double RangeOverWidth(Tensor values, bool scott, double n)
    {
        using var scope = NewDisposeScope();
        var v = values.flatten().to(ScalarType.Float64).sort().Values;
        long count = v.shape[0];
        double Percentile(double q)
        {
            double at = q / 100 * (count - 1);
            long i = (long)Math.Floor(at);
            double lo = v[i].item<double>(), hi = v[Math.Min(i + 1, count - 1)].item<double>();
            return lo + (hi - lo) * (at - i);
        }
        double width = scott
            ? 3.5 * v.std(unbiased: false).item<double>() / Math.Cbrt(n)
            : Math.Max(2 * (Percentile(75) - Percentile(25)) / Math.Cbrt(n), 1e-6);
        return Math.Floor((v[count - 1].item<double>() - v[0].item<double>()) / width);
    }
}
