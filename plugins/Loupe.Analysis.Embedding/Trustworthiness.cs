using static TorchSharp.torch;

namespace Loupe.Analysis.Embedding;

/// <summary>Trustworthiness of an embedding (Venna &amp; Kaski 2001; scikit-learn's <c>trustworthiness</c>, Euclidean):
/// T(k) = 1 − 2 / (n·k·(2n − 3k − 1)) · Σᵢ Σ_{j ∈ kNN_embedded(i)} max(0, r(i, j) − k), where r(i, j) is the rank of j
/// among i's neighbours in the input space. Computed in blocks of rows (memory: block × N).</summary>
public static class Trustworthiness
{
    /// <summary>T(k) of <paramref name="embedded"/> (N×2 row-major) for the rows of <paramref name="x"/> (N×D).</summary>
    public static double Compute(Tensor x, double[] embedded, int k, int block = 256)
    {
        using var scope = NewDisposeScope();
        long n = x.shape[0];
        if (k >= n / 2.0) throw new ArgumentException($"trustworthiness needs k < N/2 (k = {k}, N = {n})");
        var xd = x.to(ScalarType.Float64);
        var e = tensor(embedded, [n, embedded.Length / n]);
        var (nbrE, _) = BarnesHutTsne.SquaredKnn(e, k);   // k nearest in the embedding (self excluded)
        var sq = (xd * xd).sum(1);
        double t = 0;
        for (long start = 0; start < n; start += block)
        {
            using var inner = NewDisposeScope();
            long len = Math.Min(block, n - start);
            var d = (sq.narrow(0, start, len).unsqueeze(1) + sq.unsqueeze(0) - 2 * xd.narrow(0, start, len).MatMul(xd.t())).clamp_min(0);
            var self = arange(start, start + len, dtype: ScalarType.Int64).unsqueeze(1);
            d = d.scatter(1, self, full(len, 1, double.PositiveInfinity, dtype: ScalarType.Float64));
            var order = d.sort(1, stable: true).Indices;                                // ascending, self last
            var ranks = empty_like(order).scatter_(1, order, arange(1, n + 1, dtype: ScalarType.Int64).unsqueeze(0).expand(len, -1));
            var sel = tensor(nbrE.AsSpan((int)(start * k), (int)(len * k)).ToArray().Select(v => (long)v).ToArray()).view(len, k);
            var r = ranks.gather(1, sel) - k;
            t += r.clamp_min(0).sum().item<long>();
        }
        return 1.0 - t * (2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)));
    }
}
