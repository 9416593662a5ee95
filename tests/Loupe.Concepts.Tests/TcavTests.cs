namespace Loupe.Concepts.Tests;

/// <summary>tcav on the planted model against tests/fixtures/make_concepts_fixtures.py (sklearn CAVs, scipy t-test).</summary>
public class TcavTests
{
    [Fact]
    public void PlantedStripesAreSignificantForTheirClassAndTheRandomConceptIsNot()
    {
        var path = Env.PlantedPipeline($"""
              - id: tcav
                uses: tcav
                with: {"{"} layer: pool2, concepts: {Env.Planted}/concepts, random: {Env.Planted}/random {"}"}
            """);
        var r = Env.Run(path);
        Env.Succeeded(r, "tcav");
        var json = Env.Json(r, "tcav/tcav.json");
        var results = json.GetProperty("results").EnumerateArray().ToList();
        bool Significant(string concept, string cls) => results.Single(x => x.GetProperty("concept").GetString() == concept && x.GetProperty("class").GetString() == cls).GetProperty("significant").GetBoolean();
        Assert.True(Significant("stripes", "striped"));
        foreach (var cls in new[] { "striped", "dotted", "plain" }) Assert.False(Significant("random", cls), cls);
        Assert.Equal(0.05 / 9, json.GetProperty("bonferroni_threshold").GetDouble(), 1e-12);

        // Same numbers as sklearn + scipy on the same activations and gradients.
        var cavs = Env.Artifact(r, "tcav/cavs.npy");
        Assert.Equal([3L, 10, 64 * 7 * 7], cavs.Shape);
        var reference = Loupe.Abstractions.Toolkit.Npy.Read(Env.Fixture("tcav_cav_stripes_r0.npy")).Data;
        var mine = cavs.Data.Skip(2 * 10 * 3136).Take(3136).ToArray();
        Assert.True(Env.RelErr(mine, reference) < 2e-3, $"CAV differs from sklearn's by {Env.RelErr(mine, reference)}");
        var scores = Env.Artifact(r, "tcav/scores.npy");
        var refScores = Loupe.Abstractions.Toolkit.Npy.Read(Env.Fixture("tcav_scores.npy"));
        Assert.Equal(refScores.Shape, scores.Shape);
        Assert.Equal(refScores.Data, scores.Data);
        var p = Env.Artifact(r, "tcav/pvalues.npy").Data;
        var refP = Loupe.Abstractions.Toolkit.Npy.Read(Env.Fixture("tcav_pvalues.npy")).Data;
        for (int i = 0; i < p.Length; i++) Assert.True(Math.Abs(p[i] - refP[i]) <= 1e-5 + 1e-4 * refP[i], $"p[{i}] {p[i]} vs scipy {refP[i]}");
        Assert.True(new FileInfo(Path.Combine(r.OutDir!, "tcav/tcav.png")).Length > 5000);
    }

    [Fact]
    public void TTestAndLogisticRegressionMatchClosedForms()
    {
        // scipy.stats.ttest_ind([1,2,3,4], [2,4,6,8,10]) = (t = -2.0578065752724592, p = 0.07861923505869378) (pooled variance).
        var (t, pv) = Loupe.Analysis.Concepts.Stats.TTest([1, 2, 3, 4], [2, 4, 6, 8, 10]);
        Assert.Equal(-2.0578065752724592, t, 1e-10);
        Assert.Equal(0.07861923505869378, pv, 1e-10);
        // One feature, symmetric data: optimum of Σ softplus(∓(w x + b)) + (w² + b²)/2 has b = 0 and w solving
        // w = 4 σ(−2w) for the two points ±2 (the stationarity condition, checked here).
        using var pos = TorchSharp.torch.tensor(new float[] { 2f }, [1, 1]);
        using var neg = TorchSharp.torch.tensor(new float[] { -2f }, [1, 1]);
        var (w, b, acc) = Loupe.Analysis.Concepts.Stats.Logistic(pos, neg, 1.0);
        Assert.Equal(0, b, 1e-9);
        Assert.Equal(w[0], 2 * 2 / (1 + Math.Exp(2 * w[0])), 1e-9);
        Assert.Equal(1.0, acc);
    }
}
