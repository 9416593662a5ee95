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

    [Fact]
    public void MatchesThePyTorchReferenceOnResNet18()
    {
        var r = ShapleyFamilyTests.ResNet18("  - { id: dl, uses: deeplift }");
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        TechniqueTests.Close(TechniqueTests.Stack(r, "dl", "deeplift", 2), "fam_r18_deeplift.npy", 1e-4);
    }
}
