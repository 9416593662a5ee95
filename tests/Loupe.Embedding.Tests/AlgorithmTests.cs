using System.Text.Json;
using Loupe.Abstractions;
using Loupe.Analysis.Embedding;
using static TorchSharp.torch;

namespace Loupe.Embedding.Tests;

/// <summary>The algorithms against scikit-learn (fixtures/make_tsne_fixture.py), closed forms and brute force.</summary>
public class AlgorithmTests
{
    static readonly JsonElement Reference = JsonDocument.Parse(File.ReadAllText(Env.Fixture("tsne_reference.json"))).RootElement;

    static Tensor FixtureFeatures()
    {
        var a = Npy.Read(Env.Fixture("fashion500-gap-features.npy"));
        return tensor(a.Data, a.Shape);
    }

    [Fact]
    public void TsneMatchesScikitLearnsKlAndIsTrustworthyAndDeterministic()
    {
        _ = Env.RepoRoot;
        using var x = FixtureFeatures();
        var r = BarnesHutTsne.Fit(x, new TsneSettings());
        var skKl = Reference.GetProperty("tsne").EnumerateArray().Select(e => e.GetProperty("kl_divergence").GetDouble()).ToArray();
        double skMean = skKl.Average();
        Assert.True(Math.Abs(r.KlDivergence - skMean) <= 0.05 * skMean, $"KL {r.KlDivergence:F4} vs scikit-learn {skMean:F4} (runs {string.Join(", ", skKl.Select(v => v.ToString("F4")))})");
        Assert.Equal(1000, r.Iterations);
        Assert.Equal(50, r.LearningRate);                       // auto: max(500 / 12 / 4, 50)
        double t = Trustworthiness.Compute(x, r.Embedding, 10);
        Assert.True(t >= 0.9, $"trustworthiness {t:F4} < 0.9");
        double skT = Reference.GetProperty("tsne")[0].GetProperty("trustworthiness_k10").GetDouble();
        Assert.True(t >= skT - 0.01, $"trustworthiness {t:F4} vs scikit-learn {skT:F4}");
        // Deterministic for a seed, also with the parallel force loops.
        var again = BarnesHutTsne.Fit(x, new TsneSettings { Iterations = 300 });
        var serial = BarnesHutTsne.Fit(x, new TsneSettings { Iterations = 300, Parallel = false });
        Assert.Equal(again.Embedding, serial.Embedding);
    }

    [Fact]
    public void TrustworthinessMatchesScikitLearnOnAKnownEmbedding()
    {
        using var x = FixtureFeatures();
        var first2 = x.narrow(1, 0, 2).to(ScalarType.Float64).contiguous().ToArray<double>();
        double expected = Reference.GetProperty("trustworthiness_k10_of_features_identity").GetDouble();
        Assert.Equal(expected, Trustworthiness.Compute(x, first2, 10), 1e-6);
    }

    [Fact]
    public void PerplexityTooLargeForNIsAClearError()
    {
        Assert.Null(BarnesHutTsne.CheckPerplexity(500, 30));
        Assert.Contains("perplexity 30 must be smaller than the number of inputs (20)", BarnesHutTsne.CheckPerplexity(20, 30));
        using var x = randn(20, 4);
        var e = Assert.Throws<LoupeException>(() => BarnesHutTsne.Fit(x, new TsneSettings()));
        Assert.Contains("perplexity", e.Message);
    }

    [Fact]
    public void JointProbabilitiesAreSymmetricAndHitThePerplexity()
    {
        using var x = FixtureFeatures();
        var (rowPtr, cols, vals) = BarnesHutTsne.JointProbabilities(x, 30);
        Assert.Equal(1.0, vals.Sum(), 1e-9);
        var map = new Dictionary<(int, int), double>();
        for (int i = 0; i < 500; i++) for (int t = rowPtr[i]; t < rowPtr[i + 1]; t++) map[(i, cols[t])] = vals[t];
        foreach (var ((i, j), v) in map) Assert.Equal(v, map[(j, i)], 1e-15);
        Assert.DoesNotContain(map.Keys, k => k.Item1 == k.Item2);
    }

    [Fact]
    public void PcaRecoversAKnownPlaneWithTheSignConvention()
    {
        // Points a·u + b·v + c on a plane in 4-D with var(a) ≫ var(b): components are u and v (largest loading
        // positive), explained variances are the sample variances of a and b, the rest is 0.
        var rng = new Random(1);
        int n = 200;
        double[] u = [0.6, -0.8, 0, 0], v = [0, 0, -1, 0], c = [1, 2, 3, 4];
        var a = Enumerable.Range(0, n).Select(_ => 3 * (rng.NextDouble() - 0.5) * 2).ToArray();
        var b = Enumerable.Range(0, n).Select(_ => (rng.NextDouble() - 0.5) * 2).ToArray();
        double ma = a.Average(), mb = b.Average();
        for (int i = 0; i < n; i++) { a[i] -= ma; b[i] -= mb; }       // make a and b exactly centred and uncorrelated-ish
        double ab = a.Zip(b).Sum(p => p.First * p.Second) / a.Sum(t => t * t);
        for (int i = 0; i < n; i++) b[i] -= ab * a[i];                 // exactly orthogonal: the plane's axes are u and v
        var data = new double[n * 4];
        for (int i = 0; i < n; i++) for (int d = 0; d < 4; d++) data[i * 4 + d] = a[i] * u[d] + b[i] * v[d] + c[d];
        using var x = tensor(data, [n, 4]);
        var r = Pca.Fit(x, 3);
        double va = a.Sum(t => t * t) / (n - 1), vb = b.Sum(t => t * t) / (n - 1);
        Assert.Equal(va, r.ExplainedVariance[0], 1e-9);
        Assert.Equal(vb, r.ExplainedVariance[1], 1e-9);
        Assert.Equal(0, r.ExplainedVariance[2], 1e-9);
        double[] uPos = [-0.6, 0.8, 0, 0], vPos = [0, 0, 1, 0];   // sign: largest |loading| positive
        for (int d = 0; d < 4; d++) { Assert.Equal(uPos[d], r.Components[0, d], 1e-9); Assert.Equal(vPos[d], r.Components[1, d], 1e-9); }
        for (int i = 0; i < n; i++) Assert.Equal(-a[i], r.Coordinates[i, 0], 1e-9);
        Assert.Equal(1.0, r.ExplainedVarianceRatio[0] + r.ExplainedVarianceRatio[1], 1e-9);
        // The Gram-matrix path (D > N) gives the same answer.
        using var wide = x.narrow(0, 0, 3);
        var g = Pca.Fit(wide, 2);
        var wc = wide - wide.mean([0]);
        var cov = wc.t().MatMul(wc) / 2;
        var eig = linalg.eigvalsh(cov).flip(0).ToArray<double>();
        for (int i = 0; i < 2; i++) Assert.Equal(eig[i], g.ExplainedVariance[i], 1e-9);
        var gramCoords = g.Coordinates;
        var direct = wc.MatMul(tensor(new[] { g.Components[0, 0], g.Components[0, 1], g.Components[0, 2], g.Components[0, 3] })).ToArray<double>();
        for (int i = 0; i < 3; i++) Assert.Equal(direct[i], gramCoords[i, 0], 1e-9);
    }

    [Fact]
    public void PcaMatchesScikitLearnOnTheFashionFeatures()
    {
        using var x = FixtureFeatures();
        var r = Pca.Fit(x, 10);
        var ev = Reference.GetProperty("pca_explained_variance").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        for (int i = 0; i < 10; i++) Assert.True(Math.Abs(r.ExplainedVariance[i] - ev[i]) <= 1e-4 * ev[i], $"PC{i + 1}: {r.ExplainedVariance[i]} vs {ev[i]}");
        var comps = Reference.GetProperty("pca_components_first3").EnumerateArray().Select(c => c.EnumerateArray().Select(e => e.GetDouble()).ToArray()).ToArray();
        for (int k = 0; k < 3; k++) for (int d = 0; d < 128; d++) Assert.True(Math.Abs(r.Components[k, d] - comps[k][d]) < 1e-4, $"component {k}, {d}");
    }

    [Theory]
    [InlineData(Metric.L2)]
    [InlineData(Metric.Cosine)]
    public void NearestNeighboursEqualBruteForceAcrossBlocks(Metric metric)
    {
        var rng = new Random(3);
        int n = 53, d = 6, k = 5;
        var data = Enumerable.Range(0, n * d).Select(_ => (float)rng.NextDouble()).ToArray();
        using var x = tensor(data, [n, d]);
        int[] queries = [0, 7, 52];
        using var q = x.index_select(0, tensor(queries.Select(i => (long)i).ToArray()));
        var (idx, dist) = NearestNeighbours.Search(x, q, k, metric, queries.Select(i => (long)i).ToArray(), blockSize: 7);
        for (int r = 0; r < queries.Length; r++)
        {
            var expected = Enumerable.Range(0, n).Where(j => j != queries[r])
                .Select(j => (j, Dist(data, queries[r], j, d, metric))).OrderBy(t => t.Item2).ThenBy(t => t.j).Take(k).ToArray();
            for (int c = 0; c < k; c++)
            {
                Assert.Equal(expected[c].j, idx[r, c]);
                Assert.Equal(expected[c].Item2, dist[r, c], 1e-6);
            }
        }
    }

    static double Dist(float[] x, int a, int b, int d, Metric m)
    {
        double s = 0, na = 0, nb = 0, dot = 0;
        for (int t = 0; t < d; t++)
        {
            double p = x[a * d + t], q = x[b * d + t];
            s += (p - q) * (p - q); na += p * p; nb += q * q; dot += p * q;
        }
        return m == Metric.L2 ? Math.Sqrt(s) : 1 - dot / Math.Sqrt(na * nb);
    }
}
