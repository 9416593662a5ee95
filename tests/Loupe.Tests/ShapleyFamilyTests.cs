using Loupe.Abstractions;
using Loupe.Core;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>gradient-shap, kernel-shap, lime, shapley-sampling and feature-permutation against PyTorch/sklearn
/// implementations of Captum's formulas with the same draws (tests/fixtures/make_families_fixtures.py), on the demo
/// CNN and on torchvision's resnet18, and the documented seed → draw rules.</summary>
public class ShapleyFamilyTests
{
    static string F(string name) => TestEnv.Yaml(TestEnv.Fixture(name));

    static readonly Lazy<RunResult> Fixed = new(() =>
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: gs, uses: gradient-shap, with: { stdevs: 0.3, baselines_file: {{F("fam_gshap_baselines.npy")}}, draws_file: {{F("fam_gshap_draws.npy")}}, internal_batch_size: 5 } }
              - { id: ks, uses: kernel-shap, with: { cell: 7, coalitions_file: {{F("fam_kshap_coalitions.npy")}}, micro_batch: 16 } }
              - { id: ll, uses: lime, with: { cell: 7, alpha: 0.001, coalitions_file: {{F("fam_lime_coalitions.npy")}} } }
              - { id: lr, uses: lime, with: { cell: 7, coalitions_file: {{F("fam_lime_coalitions.npy")}}, model: linear, distance: euclidean, kernel_width: 20 } }
              - { id: lridge, uses: lime, with: { cell: 7, coalitions_file: {{F("fam_lime_coalitions.npy")}}, model: ridge } }
              - { id: ss, uses: shapley-sampling, with: { cell: 7, permutations_file: {{F("fam_shapley_perms.npy")}}, micro_batch: 7 } }
              - { id: fp, uses: feature-permutation, with: { cell: 7, permutations_file: {{F("fam_fperm_perms.npy")}}, micro_batch: 3 } }
              - { id: sx, uses: shapley-sampling, with: { exact: true, feature_mask: {{F("fam_shapley_exact_mask.npy")}}, micro_batch: 10 } }
            """, batchSize: 4));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        return r;
    });

    [Fact]
    public void NoStepLeavesLiveTensorsBehind() =>
        Assert.All(Fixed.Value.Manifest!["steps"]!.AsArray(), s => Assert.True(s!["liveTensorDelta"]!.GetValue<long>() == 0, $"{s["id"]}: {s["liveTensorDelta"]}"));

    [Theory]
    [InlineData("gs", "gradient-shap", "fam_gshap.npy")]
    [InlineData("ks", "kernel-shap", "fam_kshap.npy")]
    [InlineData("ll", "lime", "fam_lime_lasso.npy")]
    [InlineData("lr", "lime", "fam_lime_linear.npy")]
    [InlineData("lridge", "lime", "fam_lime_ridge.npy")]
    [InlineData("ss", "shapley-sampling", "fam_shapley.npy")]
    [InlineData("fp", "feature-permutation", "fam_fperm.npy")]
    [InlineData("sx", "shapley-sampling", "fam_shapley_exact.npy")]   // Captum's ShapleyValues: all 720 permutations
    public void MatchesThePyTorchReferenceOnTheDemoCnn(string step, string artifact, string fixture) =>
        TechniqueTests.Close(TechniqueTests.Stack(Fixed.Value, step, artifact), fixture, 1e-4);

    /// <summary><c>exact: true</c> on more than 16 features, or with a permutations file, is refused with the numbers.</summary>
    [Fact]
    public void ExactShapleyValuesRefuseTooManyFeatures()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: sx, uses: shapley-sampling, with: { exact: true, cell: 4 } }
            """));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("M = 49 features (at most 16", r.Manifest!["steps"]![0]!["error"]!.GetValue<string>());
    }

    /// <summary>Runs steps on torchvision's resnet18 with the 'hash' weights (saved as TorchSharp .dat) over
    /// arch_input_64.npy (2 inputs, 64²).</summary>
    internal static RunResult ResNet18(string steps) => TorchVision("resnet18", steps);

    /// <summary>A run of torchvision architecture <paramref name="arch"/> (10 classes, the 'hash' formula weights) on
    /// arch_input_64.npy (2 inputs of 3×64×64), batches of 2.</summary>
    internal static RunResult TorchVision(string arch, string steps)
    {
        var dir = TestEnv.TempDir();
        var weights = Path.Combine(dir, arch + "_hash.dat");
        using (var module = Loupe.Models.TorchSharp.TorchVisionAdapter.Build(arch, 10))
        {
            ModelTests.SetHashWeights(module);
            module.save(weights);
        }
        return TestEnv.Run(TestEnv.Pipeline($$"""
            version: 1
            model: { uses: torchvision, with: { architecture: {{arch}}, num_classes: 10, weights: {{TestEnv.Yaml(weights)}} }, input: { size: [64] } }
            data: { uses: npy, with: { path: {{F("arch_input_64.npy")}} } }
            settings: { batch_size: 2 }
            steps:
            {{steps}}
            """, dir));
    }

    [Fact]
    public void MatchesThePyTorchReferenceOnResNet18()
    {
        var r = ResNet18($$"""
              - { id: gs, uses: gradient-shap, with: { draws_file: {{F("fam_r18_gshap_draws.npy")}} } }
              - { id: ks, uses: kernel-shap, with: { cell: 16, coalitions_file: {{F("fam_r18_kshap_coalitions.npy")}} } }
            """);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        TechniqueTests.Close(TechniqueTests.Stack(r, "gs", "gradient-shap", 2), "fam_r18_gshap.npy", 1e-4);
        // kernel-shap maps are constant per cell: compare the value of each 16×16 cell (its top-left pixel).
        var cells = Enumerable.Range(0, 2).SelectMany(i =>
        {
            var map = TestEnv.Artifact(r, $"ks/{i:D5}.kernel-shap.npy").Data;                 // 3×64×64
            return Enumerable.Range(0, 16).Select(f => map[(f / 4) * 16 * 64 + (f % 4) * 16]);
        }).ToArray();
        TechniqueTests.Close(cells, "fam_r18_kshap.npy", 1e-4);
    }

    static RunResult Seeded(int batchSize, string extra = "") =>
        TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: gs, uses: gradient-shap, with: { samples: 4, stdevs: 0.2 } }
              - { id: ks, uses: kernel-shap, with: { cell: 7, samples: 30 } }
              - { id: lm, uses: lime, with: { cell: 7, samples: 30, alpha: 0.001 } }
              - { id: ss, uses: shapley-sampling, with: { cell: 14, samples: 3 } }
            {{extra}}
            """, batchSize: batchSize));

    [Fact]
    public void SeededDrawsDependOnTheInputIdNotOnTheBatch()
    {
        var a = Seeded(4);
        var b = Seeded(1);
        Assert.True(a.ExitCode == 0 && b.ExitCode == 0, string.Join("\n", a.Errors.Concat(b.Errors)));
        Assert.All(a.Manifest!["steps"]!.AsArray(), s => Assert.True(s!["liveTensorDelta"]!.GetValue<long>() == 0, $"{s["id"]}: {s["liveTensorDelta"]}"));
        foreach (var (step, name) in new[] { ("gs", "gradient-shap"), ("ks", "kernel-shap"), ("lm", "lime"), ("ss", "shapley-sampling") })
        {
            var x = TechniqueTests.Stack(a, step, name);
            Assert.Equal(x, TechniqueTests.Stack(b, step, name));
            Assert.Contains(x, v => v != 0);
        }
    }

    [Fact]
    public void LimeDrawsFollowTheDocumentedSeedRule()
    {
        // rule: per input, Generator(InputSeeds.For(step seed, input id)); coalitions = rand(S, M) < ½.
        var seeded = Seeded(4);
        Assert.Equal(0, seeded.ExitCode);
        int stepSeed = AnalysisContext.StepSeed(seeded.Manifest!["seed"]!.GetValue<int>(), "lm");
        var dir = TestEnv.TempDir();
        var file = Path.Combine(dir, "z.npy");
        using (var g = new Generator(InputSeeds.For(stepSeed, "00002")))
        using (var z = (rand([30, 16], generator: g) < 0.5).to(ScalarType.Float32))
            File.WriteAllBytes(file, Npy.Encode(NdArray.FromTensor(z)));
        var replay = TestEnv.Run(TestEnv.FixturePipeline($"- {{ id: lm, uses: lime, with: {{ cell: 7, alpha: 0.001, coalitions_file: {TestEnv.Yaml(file)} }} }}"));
        Assert.True(replay.ExitCode == 0, string.Join("\n", replay.Errors));
        Assert.Equal(TestEnv.Artifact(seeded, "lm/00002.lime.npy").Data, TestEnv.Artifact(replay, "lm/00002.lime.npy").Data);
        Assert.NotEqual(TestEnv.Artifact(seeded, "lm/00001.lime.npy").Data, TestEnv.Artifact(replay, "lm/00001.lime.npy").Data);
    }

    [Fact]
    public void ShapleySamplingIsEfficient()
    {
        // Every permutation telescopes: Σ_f φ_f = F(x) − F(baseline), whatever the permutations.
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: ss, uses: shapley-sampling, with: { cell: 14, samples: 2, baseline: black } }
              - { id: ab, uses: feature-ablation, with: { cell: 28, fill: black } }
            """));
        Assert.Equal(0, r.ExitCode);
        for (int i = 0; i < 4; i++)
        {
            var map = TestEnv.Artifact(r, $"ss/{i:D5}.shapley-sampling.npy").Data;
            double total = Enumerable.Range(0, 4).Sum(f => (double)map[(f / 2) * 14 * 28 + (f % 2) * 14]);
            // feature-ablation with one 28×28 cell: F(x) − F(black image) at every pixel.
            double gap = TestEnv.Artifact(r, $"ab/{i:D5}.feature-ablation.npy").Data[0];
            Assert.True(Math.Abs(total - gap) <= 1e-4 * Math.Max(1, Math.Abs(gap)), $"input {i}: Σφ {total} vs F(x) − F(b) {gap}");
        }
    }

    [Fact]
    public void BadDrawsAndSettingsAreReportedClearly()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline($"- {{ id: ks, uses: kernel-shap, with: {{ cell: 14, coalitions_file: {F("fam_kshap_coalitions.npy")} }} }}"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("coalitions_file must be S×4", r.Manifest!["steps"]![0]!["error"]!.ToString());
        var fp = TestEnv.Run(TestEnv.FixturePipeline("- { id: fp, uses: feature-permutation, with: { segments: superpixels } }"));
        Assert.Equal(2, fp.ExitCode);
        Assert.Contains(fp.Errors, e => e.ToString().Contains("feature-permutation needs features shared by the batch"));
        var one = TestEnv.Run(TestEnv.FixturePipeline("- { id: fp, uses: feature-permutation, with: { cell: 7 } }", batchSize: 1));
        Assert.Contains("batch_size to 2 or more", one.Manifest!["steps"]![0]!["error"]!.ToString());
        // A permutations file with no rows: an error naming the file, not an average over no permutations.
        var none = Path.Combine(TestEnv.TempDir(), "no-perms.npy");
        File.WriteAllBytes(none, Loupe.Abstractions.Toolkit.Npy.Encode(new NdArray([], [0, 4])));
        var empty = TestEnv.Run(TestEnv.FixturePipeline($"- {{ id: ss, uses: shapley-sampling, with: {{ cell: 14, permutations_file: {TestEnv.Yaml(none)} }} }}"));
        Assert.Equal(1, empty.ExitCode);
        Assert.Contains("no-perms.npy: permutations_file must be S×4 (S ≥ 1)", empty.Manifest!["steps"]![0]!["error"]!.ToString());
    }

    [Fact]
    public void SegmentChoicesTheMethodsCannotHonourAreValidationErrors()
    {
        // segments: mask without a feature_mask fell back to the 8-pixel grid silently until 2026-12-05.
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: lm, uses: lime, with: { segments: mask } }
            """));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("option 'segments': mask needs 'feature_mask'", string.Join("\n", r.Errors));
        // Captum's Lime.attribute takes 25 samples unless told otherwise.
        Assert.Equal(25, new Loupe.Analysis.Decisions.LimeOptions().Samples);
    }

    /// <summary>Features per channel, as Captum's feature_mask of the input's C×H×W shape: kernel-shap and
    /// shapley-sampling with a 3×64×64 mask of (channel, 16×16 cell) features on resnet18 against families_refs.py's
    /// restatements (make_channel_feature_fixtures.py); and every scalar a feature (segments: elements, Captum's
    /// feature_mask=None), refused until 2026-12-06, runs and gives each pixel its own value.</summary>
    [Fact]
    public void FeaturesMayBePerChannelAsCaptumsFeatureMask()
    {
        var r = ResNet18($$"""
              - { id: ks, uses: kernel-shap, with: { feature_mask: {{F("fam_chan_mask.npy")}}, coalitions_file: {{F("fam_chan_kshap_coalitions.npy")}} } }
              - { id: ss, uses: shapley-sampling, with: { feature_mask: {{F("fam_chan_mask.npy")}}, permutations_file: {{F("fam_chan_shapley_perms.npy")}} } }
            """);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        TechniqueTests.Close(TechniqueTests.Stack(r, "ks", "kernel-shap", 2), "fam_chan_kshap.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "ss", "shapley-sampling", 2), "fam_chan_shapley.npy", 1e-4);
        var e = TestEnv.Run(TestEnv.FixturePipeline("      - { id: ks, uses: kernel-shap, with: { segments: elements, samples: 200 } }", batchSize: 2));
        Assert.True(e.ExitCode == 0, string.Join("\n", e.Errors) + e.Manifest?.ToJsonString());
        var map = TestEnv.Artifact(e, "ks/00000.kernel-shap.npy").Data;
        Assert.True(map.Distinct().Count() > 100, $"{map.Distinct().Count()} distinct values over 784 pixels");
    }

    /// <summary>Captum's Occlusion with a window over the channel axis (sliding_window_shapes=(1, 16, 16),
    /// strides=(1, 8, 8)) against a PyTorch restatement of its algorithm (make_occlusion_channel_fixtures.py); a window
    /// of all three channels gives the 2-value window's map.</summary>
    [Fact]
    public void OcclusionSlidesAlongChannelsAsCaptumsThreeDimensionalWindow()
    {
        var r = ResNet18("""
              - { id: occ, uses: occlusion, with: { window: [1, 16, 16], stride: [1, 8, 8] } }
              - { id: all3, uses: occlusion, with: { window: [3, 16, 16], stride: [3, 8, 8] } }
              - { id: two, uses: occlusion, with: { window: [16, 16], stride: [8, 8] } }
            """);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        TechniqueTests.Close(TechniqueTests.Stack(r, "occ", "occlusion", 2), "fam_r18_occlusion_channels.npy", 1e-4);
        Assert.Equal(TechniqueTests.Stack(r, "two", "occlusion", 2), TechniqueTests.Stack(r, "all3", "occlusion", 2));
        var bad = TestEnv.Run(TestEnv.FixturePipeline("      - { id: o, uses: occlusion, with: { window: [2, 4, 4] } }"));
        Assert.Contains("option 'window' ([2, 4, 4]) is larger than the input (1×28×28)", string.Join("\n", bad.Errors));
    }
}
