namespace Loupe.Tests;

/// <summary>Issue 18 item 8's spelling: a constant baseline is written <c>fill: 0.5</c> (or a per-channel list) wherever a
/// baseline is taken; the named fills keep working under the same key, and the older <c>fill_value</c> /
/// <c>baseline_value</c> keys stay accepted. References: tests/fixtures/make_convention_fixtures.py.</summary>
public class FillSpellingTests
{
    static Loupe.Core.RunResult Ok(Loupe.Core.RunResult r)
    {
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        return r;
    }

    [Fact]
    public void FillTakesConstantsInOcclusionIntegratedGradientsAndFeatureAblation()
    {
        var r = Ok(TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: occ, uses: occlusion, with: { window: [3, 5], stride: [2, 4], fill: 0.25 } }
              - { id: ig, uses: integrated-gradients, with: { steps: 16, fill: [0.5] } }
              - { id: igb, uses: integrated-gradients, with: { steps: 16, baseline: 0.5 } }
              - { id: fm, uses: feature-ablation, with: { segments: mask, feature_mask: {{TestEnv.Yaml(TestEnv.Fixture("conv_fa_mask_ids.npy"))}}, fill: 0.5 } }
              - { id: named, uses: occlusion, with: { window: [3, 5], stride: [2, 4], fill: black } }
            """, batchSize: 4)));
        TechniqueTests.Close(TechniqueTests.Stack(r, "occ", "occlusion"), "conv_occlusion_3x5_s2x4_fill025.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "ig", "integrated-gradients"), "conv_ig_baseline05.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "igb", "integrated-gradients"), "conv_ig_baseline05.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "fm", "feature-ablation"), "conv_fa_mask.npy", 1e-4);
        // A named fill still selects the named baseline (black ≠ 0.25).
        Assert.True(TestEnv.RelL2(TechniqueTests.Stack(r, "named", "occlusion"), TechniqueTests.Stack(r, "occ", "occlusion")) > 1e-2);
    }

    [Fact]
    public void FillOnDeletionDeepLiftAndTheLayerPathMethodsEqualsTheNamedBaseline()
    {
        // Black pixels are (0 − 0.2860) / 0.3530 in the demo CNN's normalised space: the constant is the black baseline.
        var black = ((0f - 0.2860f) / 0.3530f).ToString("R", System.Globalization.CultureInfo.InvariantCulture);
        var r = Ok(TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: sal, uses: saliency }
              - { id: db, uses: deletion, with: { of: sal, steps: 8, baseline: black } }
              - { id: dc, uses: deletion, with: { of: sal, steps: 8, fill: {{black}} } }
              - { id: dlb, uses: deeplift, with: { baseline: black } }
              - { id: dlc, uses: deeplift, with: { fill: {{black}} } }
              - { id: lcb, uses: layer-conductance, with: { layer: pool2, steps: 4, baseline: black } }
              - { id: lcc, uses: layer-conductance, with: { layer: pool2, steps: 4, fill: [{{black}}] } }
              - { id: lc0, uses: layer-conductance, with: { layer: pool2, steps: 4 } }
            """, batchSize: 4)));
        double Auc(string step) => r.Manifest!["steps"]!.AsArray().First(s => s!["id"]!.GetValue<string>() == step)!["metrics"]!["auc_mean"]!.GetValue<double>();
        Assert.Equal(Auc("db"), Auc("dc"), 1e-5);
        Assert.True(TestEnv.RelL2(TechniqueTests.Stack(r, "dlc", "deeplift"), TechniqueTests.Stack(r, "dlb", "deeplift")) < 1e-5);
        var lcc = TechniqueTests.Stack(r, "lcc", "layer-conductance-layer");
        Assert.True(TestEnv.RelL2(lcc, TechniqueTests.Stack(r, "lcb", "layer-conductance-layer")) < 1e-5);
        // The zero baseline's conductance (issue 20's fixture) is another map: the constant is not ignored.
        TechniqueTests.Close(TechniqueTests.Stack(r, "lc0", "layer-conductance-layer"), "fam_cnn_conductance.npy", 1e-3);
        Assert.True(TestEnv.RelL2(lcc, TechniqueTests.Stack(r, "lc0", "layer-conductance-layer")) > 1e-2);
    }

    [Fact]
    public void FillAndItsOlderSpellingTogetherOrAnUnknownNameAreValidationErrors()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: occ, uses: occlusion, with: { fill: 0.5, fill_value: 0.3 } }
              - { id: ig, uses: integrated-gradients, with: { fill: purple } }
            """));
        Assert.Equal(2, r.ExitCode);
        var all = string.Join("\n", r.Errors);
        Assert.Contains("option 'fill_value' given twice", all);
        Assert.Contains("'purple' is not one of zero, mean, blur, black", all);
        // A constant of the wrong length is caught by the method's validation (binding succeeded).
        var length = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: dl, uses: deeplift, with: { fill: [0.1, 0.2] } }
            """));
        Assert.Equal(2, length.ExitCode);
        Assert.Contains("option 'fill': give one value or one per channel (1), got 2", string.Join("\n", length.Errors));
    }
}
