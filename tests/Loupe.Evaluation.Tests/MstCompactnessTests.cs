using Loupe.Abstractions;
using Loupe.Analysis.Evaluation;

namespace Loupe.Evaluation.Tests;

/// <summary><c>mst-c</c> (Quantus MSTC, Mesgari et al. 2026) against Quantus's algorithm restated with the libraries it
/// uses (numpy's percentile, scipy's ConvexHull and minimum_spanning_tree, sklearn's kneighbors_graph;
/// tests/fixtures/make_mst_c_fixtures.py): noise, a blob, two far blobs (a disconnected neighbour graph), a line (a
/// degenerate hull), a hot pixel and an all-zero map, under three option sets; and as a pipeline step.</summary>
public class MstCompactnessTests
{
    static string Fixture(string name) => Path.Combine(Env.RepoRoot, "tests", "fixtures", name);

    [Fact]
    public void ScoresEqualQuantussAlgorithm()
    {
        var maps = Npy.Read(Fixture("mstc_maps.npy"));
        var expected = Npy.Read(Fixture("mstc_scores.npy"));
        (double Threshold, int K, bool Auto, bool Scale)[] sets = [(80, 20, false, true), (90, 5, true, false), (99, 3, false, true)];
        for (int s = 0; s < sets.Length; s++)
            for (int m = 0; m < 6; m++)
            {
                var map = maps.Data.AsSpan(m * 784, 784).ToArray().Select(v => (double)v).ToArray();
                double actual = MstCompactness.Score(map, 28, 28, sets[s].Threshold, sets[s].K, sets[s].Auto, sets[s].Scale);
                double want = expected.Data[s * 6 + m];
                Assert.True(Math.Abs(actual - want) <= 1e-5 * Math.Abs(want) + 1e-9, $"option set {s}, map {m}: {actual} against Quantus's {want}");
            }
        // Fewer than two salient points: NaN, as Quantus.
        Assert.True(double.IsNaN(MstCompactness.Score([0, 5, 0, 0], 2, 2, 90, 20, false, true)));
    }

    [Fact]
    public void RunsAsAStepWithItsOptionsAndRefusesThemElsewhere()
    {
        var first4 = new NdArray(Npy.Read(Fixture("mstc_maps.npy")).Data.Take(4 * 784).ToArray(), [4, 28, 28]);
        var r = Env.Run(ComplexityValuesTests.MapsPipeline(Env.TempDir(), first4, """
              - { id: mst, uses: mst-c, with: { of: m, threshold: 90, k: 5, auto_increase_k: true, scale_score: false } }
            """));
        Assert.True(r.ExitCode == 0, Env.Dump(r));
        var values = Env.InputValues(r, "mst", "mst_c");
        var expected = Npy.Read(Fixture("mstc_scores.npy")).Data;
        for (int i = 0; i < 4; i++) Assert.Equal(expected[6 + i], values[i], 1e-5 * expected[6 + i]);
        var bad = Env.Run(ComplexityValuesTests.MapsPipeline(Env.TempDir(), first4, """
              - { id: sp, uses: sparseness, with: { of: m, k: 5 } }
              - { id: mv, uses: mst-c, with: { of: m, features: values } }
            """));
        Assert.NotEqual(0, bad.ExitCode);
        var all = string.Join("\n", bad.Errors);
        Assert.Contains("features: values' does not apply to mst-c", all);
        Assert.Contains("'k'", all);
    }
}
