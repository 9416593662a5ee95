using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Tests;

/// <summary>noise-tunnel keeps an inner step's image-dependent baseline (mean, blur) that of the clean input, as
/// Captum's NoiseTunnel keeps the baseline it is given (audit of 2026-12-05: the inner step made it of each noisy copy).</summary>
public class NoiseTunnelBaselineTests
{
    [Fact]
    public void TheMeanBaselineIsTheCleanImagesMean()
    {
        // One input: its per-channel mean as a constant fill is the clean image's mean baseline. With the same fixed
        // draws, noise-tunnel around IG with fill: mean must equal noise-tunnel around IG with that constant.
        var dir = TestEnv.TempDir("loupe-ntb");
        var all = Npy.Read(TestEnv.Fixture("fashion_input.npy"));
        var one = all.Data.AsSpan(0, 784).ToArray();
        var input = Path.Combine(dir, "one.npy");
        File.WriteAllBytes(input, Npy.Encode(new NdArray(one, [1, 1, 28, 28])));
        double mean = one.Average(v => (double)v);
        var draws = TestEnv.Yaml(TestEnv.Fixture("conv_nt_draws.npy"));
        var r = TestEnv.Run(TestEnv.Pipeline($$"""
            version: 1
            model:
              uses: torchvision
              with: { architecture: fashion-cnn, weights: {{TestEnv.Yaml(TestEnv.Fixture("fashion_cnn_seed0.pt"))}} }
            data: { uses: npy, with: { path: {{TestEnv.Yaml(input)}} } }
            steps:
              - { id: mean, uses: noise-tunnel, with: { inner: { uses: integrated-gradients, with: { steps: 4, fill: mean } }, samples: 4, stdevs: 0.3, noise_file: {{draws}} } }
              - { id: const, uses: noise-tunnel, with: { inner: { uses: integrated-gradients, with: { steps: 4, fill: {{mean.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}} } }, samples: 4, stdevs: 0.3, noise_file: {{draws}} } }
            """, dir));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        var a = TechniqueTests.Stack(r, "mean", "noise-tunnel", 1);
        var b = TechniqueTests.Stack(r, "const", "noise-tunnel", 1);
        Assert.True(TestEnv.RelL2(a, b) < 1e-5, $"relative L2 {TestEnv.RelL2(a, b)}");
    }

    /// <summary>Writes a .npy of shape <paramref name="shape"/> with values f(i) and returns its YAML-quoted path.</summary>
    static string Write(string dir, string name, long[] shape, Func<int, float> f)
    {
        var path = Path.Combine(dir, name);
        File.WriteAllBytes(path, Npy.Encode(new NdArray(Enumerable.Range(0, (int)shape.Aggregate(1L, (a, b) => a * b)).Select(f).ToArray(), shape)));
        return TestEnv.Yaml(path);
    }

    /// <summary>Captum NoiseTunnel's draw_baseline_from_distrib: copy s of each input takes baseline [index s] of the set
    /// and the inner method compares with it. Without noise (stdevs 0) and with fixed indices [0, 1, 1], smoothgrad is
    /// (IG(b₀) + 2·IG(b₁)) / 3 and vargrad the variance of those three maps, from integrated-gradients run with each
    /// baseline_file; deeplift and occlusion take the drawn baselines too.</summary>
    [Fact]
    public void DrawnBaselinesReplaceTheInnersBaseline()
    {
        var dir = TestEnv.TempDir("loupe-ntd");
        Func<int, float> f0 = i => 0.3f * MathF.Sin(0.11f * i), f1 = i => -0.4f + 0.001f * i;
        var set = Write(dir, "set.npy", [2, 1, 28, 28], i => i < 784 ? f0(i) : f1(i - 784));
        var b0 = Write(dir, "b0.npy", [1, 1, 28, 28], f0);
        var b1 = Write(dir, "b1.npy", [1, 1, 28, 28], f1);
        var idx = Write(dir, "idx.npy", [3], i => i == 0 ? 0 : 1);
        var draw = $"samples: 3, stdevs: 0.0, draw_baseline_from_distrib: true, baselines_file: {set}, baseline_indices_file: {idx}";
        var r = TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: nt, uses: noise-tunnel, with: { inner: { uses: integrated-gradients, with: { steps: 8 } }, {{draw}} } }
              - { id: vg, uses: noise-tunnel, with: { inner: { uses: integrated-gradients, with: { steps: 8 } }, {{draw}}, type: vargrad } }
              - { id: ig0, uses: integrated-gradients, with: { steps: 8, baseline_file: {{b0}} } }
              - { id: ig1, uses: integrated-gradients, with: { steps: 8, baseline_file: {{b1}} } }
              - { id: ntdl, uses: noise-tunnel, with: { inner: { uses: deeplift }, {{draw}} } }
              - { id: dl0, uses: deeplift, with: { baseline_file: {{b0}} } }
              - { id: dl1, uses: deeplift, with: { baseline_file: {{b1}} } }
            """, batchSize: 3));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        foreach (var (nt, a, b, name) in new[] { ("nt", "ig0", "ig1", "integrated-gradients"), ("ntdl", "dl0", "dl1", "deeplift") })
        {
            var g0 = TechniqueTests.Stack(r, a, name);
            var g1 = TechniqueTests.Stack(r, b, name);
            var expected = g0.Zip(g1, (u, v) => (u + 2 * v) / 3).ToArray();
            var got = TechniqueTests.Stack(r, nt, "noise-tunnel");
            Assert.True(TestEnv.RelL2(got, expected) < 1e-5, $"{nt}: relative L2 {TestEnv.RelL2(got, expected)}");
            Assert.True(TestEnv.RelL2(got, g0) > 1e-2, $"{nt}: the drawn baselines made no difference");
        }
        {
            var g0 = TechniqueTests.Stack(r, "ig0", "integrated-gradients");
            var g1 = TechniqueTests.Stack(r, "ig1", "integrated-gradients");
            var expected = g0.Zip(g1, (u, v) => { float m = (u + 2 * v) / 3; return (u * u + 2 * v * v) / 3 - m * m; }).ToArray();
            var got = TechniqueTests.Stack(r, "vg", "noise-tunnel");
            Assert.True(TestEnv.RelL2(got, expected) < 1e-3, $"vargrad: relative L2 {TestEnv.RelL2(got, expected)}");
        }
    }

    /// <summary>Seeded draws: each input's copies draw their baselines from a stream of the input's id, so the maps are
    /// the same at batch sizes 1 and 4, and each map is (k·IG(b₀) + (S − k)·IG(b₁)) / S for a whole k.</summary>
    [Fact]
    public void SeededBaselineDrawsArePerInput()
    {
        var dir = TestEnv.TempDir("loupe-nts");
        Func<int, float> f0 = i => 0.2f * MathF.Cos(0.07f * i), f1 = i => 0.5f - 0.0005f * i;
        var set = Write(dir, "set.npy", [2, 1, 28, 28], i => i < 784 ? f0(i) : f1(i - 784));
        var b0 = Write(dir, "b0.npy", [1, 1, 28, 28], f0);
        var b1 = Write(dir, "b1.npy", [1, 1, 28, 28], f1);
        const int S = 6;
        string Steps() => $$"""
              - { id: nt, uses: noise-tunnel, with: { inner: { uses: integrated-gradients, with: { steps: 6 } }, samples: {{S}}, stdevs: 0.0, draw_baseline_from_distrib: true, baselines_file: {{set}} } }
              - { id: ig0, uses: integrated-gradients, with: { steps: 6, baseline_file: {{b0}} } }
              - { id: ig1, uses: integrated-gradients, with: { steps: 6, baseline_file: {{b1}} } }
            """;
        var one = TestEnv.Run(TestEnv.FixturePipeline(Steps(), batchSize: 1));
        var four = TestEnv.Run(TestEnv.FixturePipeline(Steps(), batchSize: 4));
        Assert.True(one.ExitCode == 0 && four.ExitCode == 0, string.Join("\n", one.Errors.Concat(four.Errors)));
        var a = TechniqueTests.Stack(one, "nt", "noise-tunnel");
        Assert.True(TestEnv.RelL2(a, TechniqueTests.Stack(four, "nt", "noise-tunnel")) < 1e-6, "the draws depend on the batch");
        for (int i = 0; i < 4; i++)
        {
            var g0 = TestEnv.Artifact(four, $"ig0/{i:D5}.integrated-gradients.npy").Data;
            var g1 = TestEnv.Artifact(four, $"ig1/{i:D5}.integrated-gradients.npy").Data;
            var m = TestEnv.Artifact(four, $"nt/{i:D5}.noise-tunnel.npy").Data;
            double best = Enumerable.Range(0, S + 1).Min(k => TestEnv.RelL2(m, g0.Zip(g1, (u, v) => (k * u + (S - k) * v) / S).ToArray()));
            Assert.True(best < 1e-5, $"input {i}: no whole count of b₀ draws explains the map (best relative L2 {best})");
        }
    }

    [Fact]
    public void BaselineDrawsAreRefusedWhereTheyCannotApply()
    {
        var dir = TestEnv.TempDir("loupe-ntv");
        var set = Write(dir, "set.npy", [2, 1, 28, 28], i => 0.1f);
        var r = TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: sal, uses: noise-tunnel, with: { inner: { uses: saliency }, draw_baseline_from_distrib: true, baselines_file: {{set}} } }
              - { id: nodraw, uses: noise-tunnel, with: { inner: { uses: integrated-gradients }, baselines_file: {{set}} } }
              - { id: noset, uses: noise-tunnel, with: { inner: { uses: integrated-gradients }, draw_baseline_from_distrib: true } }
            """));
        Assert.NotEqual(0, r.ExitCode);
        var all = string.Join("\n", r.Errors);
        Assert.Contains("takes no baseline", all);
        Assert.Contains("only apply with 'draw_baseline_from_distrib: true'", all);
        Assert.Contains("give either 'baselines_file' or 'baselines_from_data'", all);
    }
}
