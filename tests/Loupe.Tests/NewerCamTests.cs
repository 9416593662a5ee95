using Loupe.Core;

namespace Loupe.Tests;

/// <summary>grad-cam-element-wise, eigen-grad-cam, seg-eigen-cam, kpca-cam, fem and finer-cam against PyTorch / sklearn
/// implementations of pytorch-grad-cam's formulas (tests/fixtures/make_families_fixtures.py, make_seg_eigen_cam_fixtures.py): layer maps after ReLU, demo CNN at relu3 and
/// resnet18 at layer3 (the demo CNN case: Loupe.Library.Tests/TechniqueApiTests, through the in-process API).</summary>
public class NewerCamTests
{
    const string Steps = """
              - { id: gcew, uses: grad-cam-element-wise, with: { layer: LAYER } }
              - { id: egc, uses: eigen-grad-cam, with: { layer: LAYER } }
              - { id: seg, uses: seg-eigen-cam, with: { layer: LAYER } }
              - { id: kpca, uses: kpca-cam, with: { layer: LAYER } }
              - { id: fem, uses: fem, with: { layer: LAYER } }
              - { id: finer, uses: finer-cam, with: { layer: LAYER } }
              - { id: finer-lc, uses: finer-cam, with: { layer: LAYER, base: layer-cam } }
              - { id: finer-pp, uses: finer-cam, with: { layer: LAYER, base: grad-cam-plus-plus } }
        """;

    static readonly (string Step, string Artifact, string Fixture)[] Cases =
        [("gcew", "grad-cam-element-wise-layer", "gcew"), ("egc", "eigen-grad-cam-layer", "egc"), ("seg", "seg-eigen-cam-layer", "segeigen"), ("kpca", "kpca-cam-layer", "kpca"), ("fem", "fem-layer", "fem"), ("finer", "finer-cam-layer", "finer"),
         ("finer-lc", "finer-cam-layer", "finer_layercam"), ("finer-pp", "finer-cam-layer", "finer_gcpp")];

    static void Check(RunResult r, string model, int n)
    {
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.All(r.Manifest!["steps"]!.AsArray(), s => Assert.True(s!["liveTensorDelta"]!.GetValue<long>() == 0, $"{s["id"]}: {s["liveTensorDelta"]}"));
        foreach (var (step, artifact, fixture) in Cases)
            TechniqueTests.Close(TechniqueTests.Stack(r, step, artifact, n), $"fam_{model}_{fixture}.npy", 1e-4);
    }

    // The demo CNN case runs through the in-process API: Loupe.Library.Tests/TechniqueApiTests.

    [Fact]
    public void MatchThePyTorchReferenceOnResNet18() =>
        Check(ShapleyFamilyTests.ResNet18(Steps.Replace("LAYER", "layer3")), "r18", 2);

    /// <summary>random-cam (pytorch-grad-cam's RandomCAM): weights from U(−1, 1) seeded per input id — the same map of an
    /// input in batches of 1 and of 4; another seed, other maps.</summary>
    [Fact]
    public void RandomCamIsSeededPerInputAndBatchFree()
    {
        float[] Map(int batch, int seed)
        {
            var path = TestEnv.FixturePipeline("  - { id: rc, uses: random-cam, with: { layer: relu3, relu: false } }", batchSize: batch);
            var r = TestEnv.Run(path, null, $"seed={seed}");
            Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
            return TechniqueTests.Stack(r, "rc", "random-cam");
        }
        // The raw signed map (no ReLU, no min-max scaling, which would magnify the float rounding of passes of another
        // size where a map is mostly negative).
        var a = Map(1, 0);
        Assert.True(TestEnv.RelL2(a, Map(4, 0)) <= 1e-5);
        Assert.True(TestEnv.RelL2(a, Map(4, 1)) > 0.05);
        Assert.Contains(a, v => v < 0);   // weights of both signs
    }

    [Fact]
    public void RefineCamNeedsSeveralLayers()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("- { id: f, uses: grad-cam-plus-plus, with: { layer: relu3, aggregate: product } }"));
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("'aggregate: product' (RefineCAM) combines several layers", string.Join("\n", r.Errors));
    }

    [Fact]
    public void ConcatRunsWithActivationMethodsAndIsRefusedWithOthers()
    {
        var ok = TestEnv.Run(TestEnv.FixturePipeline("- { id: e, uses: eigen-cam, with: { layers: [relu2, relu3], aggregate: concat, convention: pytorch-grad-cam } }"));
        Assert.True(ok.ExitCode == 0, string.Join("\n", ok.Errors));
        var grad = TestEnv.Run(TestEnv.FixturePipeline("- { id: g, uses: grad-cam, with: { layers: [relu2, relu3], aggregate: concat } }"));
        Assert.Contains("'aggregate: concat' joins activations, which this method does not read alone", string.Join("\n", grad.Errors));
        var one = TestEnv.Run(TestEnv.FixturePipeline("- { id: e, uses: eigen-cam, with: { layer: relu3, aggregate: concat } }"));
        Assert.Contains("'aggregate: concat' (pytorch-grad-cam's fasterrcnn_reshape_transform) joins several layers", string.Join("\n", one.Errors));
    }

    [Fact]
    public void FinerCamRefusesRanksBeyondTheClasses()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("- { id: f, uses: finer-cam, with: { layer: relu3, compare: [1, 10] } }"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("compare rank 10 needs more than the model's 10 classes", r.Manifest!["steps"]![0]!["error"]!.ToString());
    }

    [Fact]
    public void AugSmoothAveragesTheDeaugmentedMapsAsPyTorchGradCam()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: ag, uses: aug-smooth, with: { inner: { uses: gradient-x-input } } }
              - { id: ak, uses: aug-smooth, with: { inner: { uses: kpca-cam, with: { layer: relu3 } } } }
            """, batchSize: 3));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.All(r.Manifest!["steps"]!.AsArray(), s => Assert.True(s!["liveTensorDelta"]!.GetValue<long>() == 0, $"{s["id"]}: {s["liveTensorDelta"]}"));
        TechniqueTests.Close(TechniqueTests.Stack(r, "ag", "aug-smooth"), "fam_aug_gxi.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "ak", "aug-smooth"), "fam_aug_kpca.npy", 1e-4);
    }

    /// <summary>The <c>finer</c> target is Finer-CAM's score for any method (pytorch-grad-cam's FinerWeightedTarget,
    /// which its FinerCAM hands to any base CAM): Grad-CAM with it is finer-cam (base grad-cam), and Score-CAM takes it
    /// (FinerCAM(base_method=ScoreCAM)), giving another map than Score-CAM of the top-1 logit.</summary>
    [Fact]
    public void TheFinerTargetGivesFinerCamToAnyMethod()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: finer, uses: finer-cam, with: { layer: relu3 } }
              - { id: gc, uses: grad-cam, with: { layer: relu3 }, target: finer }
              - { id: sc, uses: score-cam, with: { layer: relu3 }, target: { finer: { compare: [1, 2], alpha: 0.5 } } }
              - { id: sc1, uses: score-cam, with: { layer: relu3 } }
            """, batchSize: 4));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        var finer = TechniqueTests.Stack(r, "finer", "finer-cam-layer");
        Assert.True(TestEnv.RelL2(TechniqueTests.Stack(r, "gc", "grad-cam-layer"), finer) <= 1e-6);
        Assert.True(TestEnv.RelL2(TechniqueTests.Stack(r, "sc", "score-cam-layer"), TechniqueTests.Stack(r, "sc1", "score-cam-layer")) > 1e-3);
        var bad = TestEnv.Run(TestEnv.FixturePipeline("      - { id: gc, uses: grad-cam, with: { layer: relu3 }, target: { finer: { compare: [0, 1] } } }"));
        Assert.Contains("compare must list ranks ≥ 1", string.Join("\n", bad.Errors) + bad.Manifest?.ToJsonString());
    }
}
