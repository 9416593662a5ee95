using Loupe.Core;

namespace Loupe.Tests;

/// <summary>deeplift and deeplift-shap against a PyTorch implementation of Captum's rescale rules (ReLU `nonlinear`,
/// `maxpool`; tests/fixtures/make_families_fixtures.py) on the demo CNN and resnet18 (whose residual blocks end in a
/// functional ReLU), and DeepLift's summation to delta.</summary>
public class DeepLiftTests
{
    [Fact]
    public void MatchesThePyTorchReferenceOnTheDemoCnn()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: dl, uses: deeplift }
              - { id: dls, uses: deeplift-shap, with: { baselines_file: {{TestEnv.Yaml(TestEnv.Fixture("fam_gshap_baselines.npy"))}}, internal_batch_size: 4 } }
              - { id: ab, uses: feature-ablation, with: { cell: 28 } }
            """, batchSize: 3));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.All(r.Manifest!["steps"]!.AsArray(), s => Assert.True(s!["liveTensorDelta"]!.GetValue<long>() == 0, $"{s["id"]}: {s["liveTensorDelta"]}"));
        TechniqueTests.Close(TechniqueTests.Stack(r, "dl", "deeplift"), "fam_cnn_deeplift.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "dls", "deeplift-shap"), "fam_cnn_deeplift_shap.npy", 1e-4);
        // Summation to delta: Σ attributions = F(x) − F(x′) (feature ablation of one 28×28 cell with the zero fill).
        for (int i = 0; i < 4; i++)
        {
            double total = TestEnv.Artifact(r, $"dl/{i:D5}.deeplift.npy").Data.Sum(v => (double)v);
            double gap = TestEnv.Artifact(r, $"ab/{i:D5}.feature-ablation.npy").Data[0];
            Assert.True(Math.Abs(total - gap) <= 1e-4 * Math.Abs(gap) + 1e-6, $"input {i}: Σ {total} vs F(x) − F(x′) {gap}");
        }
    }

    /// <summary>Captum's LayerDeepLift / LayerDeepLiftShap: the rescale multipliers at a layer's output (conv3, before
    /// its batch norm; relu3 over 3 references) or input (conv2's), times the activation difference, against
    /// make_families_fixtures.py; at conv3, which cuts every path, the sum is F(x) − F(x′).</summary>
    [Fact]
    public void LayerDeepLiftMatchesThePyTorchReference()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: c3, uses: layer-deeplift, with: { layer: conv3 } }
              - { id: c2, uses: layer-deeplift, with: { layer: conv2, attribute_to_layer_input: true } }
              - { id: r2, uses: layer-deeplift, with: { layer: relu2, attribute_to_layer_input: true } }
              - { id: gp, uses: layer-gradient-x-activation, with: { layer: pool1 } }
              - { id: gc, uses: layer-gradient-x-activation, with: { layer: conv2, attribute_to_layer_input: true } }
              - { id: sh, uses: layer-deeplift-shap, with: { layer: relu3, baselines_file: {{TestEnv.Yaml(TestEnv.Fixture("fam_gshap_baselines.npy"))}}, internal_batch_size: 4 } }
              - { id: ab, uses: feature-ablation, with: { cell: 28 } }
            """, batchSize: 3));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.All(r.Manifest!["steps"]!.AsArray(), s => Assert.True(s!["liveTensorDelta"]!.GetValue<long>() == 0, $"{s["id"]}: {s["liveTensorDelta"]}"));
        TechniqueTests.Close(TechniqueTests.Stack(r, "c3", "layer-deeplift-layer"), "fam_cnn_layer_deeplift_conv3.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "c2", "layer-deeplift-layer"), "fam_cnn_layer_deeplift_conv2_input.npy", 1e-4);
        // A ReLU's input under the rescale rule: captured before the rule takes it.
        TechniqueTests.Close(TechniqueTests.Stack(r, "r2", "layer-deeplift-layer"), "fam_cnn_layer_deeplift_relu2_input.npy", 1e-4);
        // The input of a convolution the backend folded with its batch norm is pool1's output (it was never captured
        // before 2026-12-05: the fused module that runs carried no hook).
        var pool = TechniqueTests.Stack(r, "gp", "layer-gradient-x-activation-layer");
        Assert.True(TestEnv.RelL2(TechniqueTests.Stack(r, "gc", "layer-gradient-x-activation-layer"), pool) <= 1e-5);
        TechniqueTests.Close(TechniqueTests.Stack(r, "sh", "layer-deeplift-shap-layer"), "fam_cnn_layer_deeplift_shap_relu3.npy", 1e-4);
        for (int i = 0; i < 4; i++)
        {
            double total = TestEnv.Artifact(r, $"c3/{i:D5}.layer-deeplift-layer.npy").Data.Sum(v => (double)v);
            double gap = TestEnv.Artifact(r, $"ab/{i:D5}.feature-ablation.npy").Data[0];
            Assert.True(Math.Abs(total - gap) <= 1e-3 * Math.Max(1, Math.Abs(gap)), $"input {i}: Σ {total} vs F(x) − F(x′) {gap}");
        }
    }

    [Fact]
    public void MatchesThePyTorchReferenceOnResNet18()
    {
        var r = ShapleyFamilyTests.ResNet18("  - { id: dl, uses: deeplift }");
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        TechniqueTests.Close(TechniqueTests.Stack(r, "dl", "deeplift", 2), "fam_r18_deeplift.npy", 1e-4);
    }
}
