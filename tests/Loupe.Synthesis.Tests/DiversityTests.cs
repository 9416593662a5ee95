using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Analysis.Synthesis;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Synthesis.Tests;

/// <summary>Lucid's diversity term (Olah et al. 2017, "Feature Visualization", §Diversity; Lucent's
/// <c>objectives.diversity</c>) and <c>batch</c>: several images per objective, pushed apart in Gram-matrix space.</summary>
public class DiversityTests
{
    static DiversityTests() => _ = Env.RepoRoot;

    /// <summary>Σ_{i≠j} ⟨G_i/‖G_i‖, G_j/‖G_j‖⟩ / B per group, written out element by element in float64 from its definition
    /// (G_i[c, d] = Σ_p A_i[c, p]·A_i[d, p]).</summary>
    static double[] Reference(float[] a, int n, int c, int positions, int batch)
    {
        var grams = new double[n][];
        for (int i = 0; i < n; i++)
        {
            var g = new double[c * c];
            for (int x = 0; x < c; x++)
                for (int y = 0; y < c; y++)
                    for (int p = 0; p < positions; p++)
                        g[x * c + y] += (double)a[(i * c + x) * positions + p] * a[(i * c + y) * positions + p];
            double norm = Math.Max(Math.Sqrt(g.Sum(v => v * v)), 1e-12);
            grams[i] = g.Select(v => v / norm).ToArray();
        }
        var result = new double[n / batch];
        for (int group = 0; group < n / batch; group++)
            for (int i = 0; i < batch; i++)
                for (int j = 0; j < batch; j++)
                    if (i != j)
                        result[group] += grams[group * batch + i].Zip(grams[group * batch + j], (u, v) => u * v).Sum() / batch;
        return result;
    }

    [Fact]
    public void GramSimilarityIsLucidsDiversityTermPerObjective()
    {
        using var scope = NewDisposeScope();
        var a = randn([6, 4, 3, 5], generator: new Generator(11)).relu();
        var got = Synthesizer.GramSimilarity(a, 3).ToArray<float>();
        var expected = Reference(a.ToArray<float>(), 6, 4, 15, 3);
        Assert.Equal(2, got.Length);
        for (int g = 0; g < 2; g++) Assert.Equal(expected[g], got[g], 5);
        // Identical images: every pair similar, B − 1; one group of a single image: 0.
        var same = a[..1].expand(4, -1, -1, -1);
        Assert.Equal(3f, Synthesizer.GramSimilarity(same, 4).item<float>(), 5);
        Assert.Equal(0f, Synthesizer.GramSimilarity(a[..1], 1).item<float>());
        // Two channels that never share a position: orthogonal Gram matrices.
        var disjoint = zeros(2, 2, 1, 2);
        disjoint[0, 0, 0, 0] = tensor(1f); disjoint[1, 1, 0, 1] = tensor(2f);
        Assert.Equal(0f, Synthesizer.GramSimilarity(disjoint, 2).item<float>());
    }

    /// <summary>The gradient of the term flows to the images: minimising it alone (λ·similarity, no objective) on a
    /// differentiable map lowers it.</summary>
    [Fact]
    public void TheTermIsDifferentiable()
    {
        using var scope = NewDisposeScope();
        var x = (randn([2, 3, 4, 4], generator: new Generator(5)).abs() + 0.5f).requires_grad_(true);
        var s = Synthesizer.GramSimilarity(x, 2).sum();
        var g = CheckedOps.Grad([s], [x])[0];
        using (no_grad())
        {
            var after = Synthesizer.GramSimilarity(x - 0.05f * g, 2).item<float>();
            Assert.True(after < s.item<float>(), $"{s.item<float>()} → {after}");
        }
    }

    static JsonArray Objectives(Loupe.Core.RunResult r, string step) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, "objectives.json")))!.AsArray();

    /// <summary>On the demo CNN, three images of one channel: with diversity (λ = 2: this model's channel means are ~1–3,
    /// where Lucid's InceptionV1 examples take λ = 100 against far larger activations) their relu2 Gram matrices end far
    /// less alike than the same three images optimised without it (same seed, same start noise), and each still raises
    /// the channel.</summary>
    [Fact]
    public void DiversityPushesTheImagesOfOneObjectiveApart()
    {
        const string Common = "objective: 'relu3:5', batch: 3, diversity_layer: relu2, steps: 60, jitter: 1, parameterization: pixels, init_sd: 0.5";
        var r = Env.Run(Env.DemoPipeline($$"""
              - id: plain
                uses: activation-max
                with: { {{Common}} }
              - id: diverse
                uses: activation-max
                with: { {{Common}}, diversity: 2 }
            """, seed: 3));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        var plain = Objectives(r, "plain");
        var diverse = Objectives(r, "diverse");
        Assert.Equal(3, diverse.Count);
        Assert.Equal([0, 1, 2], diverse.Select(e => e!["image"]!.GetValue<int>()));
        Assert.Equal("00-relu3-5-2", diverse[2]!["id"]!.GetValue<string>());
        double Similarity(JsonArray rows) => rows[0]!["gram_similarity"]!.GetValue<double>();
        // Measured: 1.94 without, 0.68 with (B − 1 = 2 would be three identical images).
        Assert.True(Similarity(diverse) < Similarity(plain) - 0.5, $"similarity with diversity {Similarity(diverse):F3}, without {Similarity(plain):F3}");
        Assert.All(diverse, e => Assert.True(e!["final"]!.GetValue<double>() > e["start"]!.GetValue<double>() + 0.5, e!.ToJsonString()));
        double Mean(JsonArray rows) => rows.Average(e => e!["final"]!.GetValue<double>());
        Assert.True(Mean(diverse) > 0.5 * Mean(plain), $"channel mean with diversity {Mean(diverse):F2}, without {Mean(plain):F2}");
        Assert.Equal([3L, 1, 28, 28], new[] { 0, 1, 2 }.Select(i => Env.Artifact(r, $"diverse/00-relu3-5-{i}.image.npy")).Aggregate(new[] { 0L, 1, 28, 28 }, (s, a) => [s[0] + 1, .. a.Shape]));
        Assert.Equal([60L, 3], Env.Artifact(r, "diverse/objective.npy").Shape);
        // The three images differ (each its own start noise).
        var i0 = Env.Artifact(r, "diverse/00-relu3-5-0.image.npy").Data;
        var i1 = Env.Artifact(r, "diverse/00-relu3-5-1.image.npy").Data;
        Assert.True(Env.RelL2(i0, i1) > 0.05);
    }

    /// <summary>Lucid's alignment term (Lucent's <c>alignment(layer, decay_ratio)</c>) written out: Σ_{d=1..4} Σ_{i+d&lt;N}
    /// mean((A_i − A_{i+d})²) / decay^d.</summary>
    [Theory]
    [InlineData(6, 2.0)]
    [InlineData(3, 1.5)]
    public void MisalignmentIsLucidsAlignmentTerm(int n, double decay)
    {
        using var scope = NewDisposeScope();
        var a = randn([n, 2, 3, 3], generator: new Generator(7));
        var v = a.ToArray<float>();
        int per = 18;
        double expected = 0;
        for (int d = 1; d <= 4; d++)
            for (int i = 0; i + d < n; i++)
            {
                double m = 0;
                for (int k = 0; k < per; k++) m += Math.Pow(v[i * per + k] - v[(i + d) * per + k], 2);
                expected += m / per / Math.Pow(decay, d);
            }
        Assert.Equal(expected, Synthesizer.Misalignment(a, decay).item<float>(), 4);
    }

    /// <summary>An interpolation between two channels in three images (Lucent's channel_interpolate, written as three
    /// weighted objectives): with alignment at relu2 the neighbouring images' relu2 maps end closer than without.</summary>
    [Fact]
    public void AlignmentDrawsNeighbouringImagesTogether()
    {
        const string Common = "objectives: ['relu3:5', '0.5 * relu3:5 + 0.5 * relu3:9', 'relu3:9'], alignment_layer: relu2, steps: 60, jitter: 1, parameterization: pixels, init_sd: 0.5";
        var r = Env.Run(Env.DemoPipeline($$"""
              - id: plain
                uses: activation-max
                with: { {{Common}} }
              - id: aligned
                uses: activation-max
                with: { {{Common}}, alignment: 10 }
            """, seed: 3));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        double Metric(string step) => r.Manifest!["steps"]!.AsArray().First(x => x!["id"]!.GetValue<string>() == step)!["metrics"]!["misalignment"]!.GetValue<double>();
        Assert.True(Metric("aligned") < 0.7 * Metric("plain"), $"misalignment with alignment {Metric("aligned"):F4}, without {Metric("plain"):F4}");
        Assert.All(Objectives(r, "aligned"), e => Assert.True(e!["final"]!.GetValue<double>() > e["start"]!.GetValue<double>(), e!.ToJsonString()));
    }

    [Fact]
    public void BatchTermsWithoutTheirImagesOrLayerAreValidationErrors()
    {
        var path = Env.DemoPipeline("""
              - id: one
                uses: activation-max
                with: { objective: 'relu3:5', diversity: 10, diversity_layer: relu2 }
              - id: nolayer
                uses: activation-max
                with: { objective: 'relu3:5', diversity: 10, batch: 4 }
              - id: flat
                uses: activation-max
                with: { objective: 'relu3:5', diversity: 10, batch: 4, diversity_layer: fc }
              - id: typo
                uses: activation-max
                with: { objective: 'relu3:5', diversity: 10, batch: 4, diversity_layer: relu22 }
              - id: lonely
                uses: activation-max
                with: { objective: 'relu3:5', alignment: 1, alignment_layer: relu2 }
              - id: noalign
                uses: activation-max
                with: { objectives: ['relu3:5', 'relu3:6'], alignment: 1 }
            """);
        var r = Env.Run(path);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(r.Errors, e => e.Message.Contains("set 'batch' to 2 or more"));
        Assert.Contains(r.Errors, e => e.Message.Contains("needs 'diversity_layer'"));
        Assert.Contains(r.Errors, e => e.Message.Contains("layer 'fc' has shape"));
        Assert.Contains(r.Errors, e => e.Message.Contains("relu22") && e.Message.Contains("did you mean", StringComparison.OrdinalIgnoreCase));
        Assert.Contains(r.Errors, e => e.Message.Contains("give two or more objectives"));
        Assert.Contains(r.Errors, e => e.Message.Contains("needs 'alignment_layer'"));
    }
}
