namespace Loupe.Tests;

/// <summary>beta-smooth against Zennit's BetaSmooth composite written out in PyTorch (every ReLU application's backward
/// is the gradient times sigmoid(β·x); tests/fixtures/make_beta_smooth_fixtures.py).</summary>
public class BetaSmoothTests
{
    /// <summary>The demo CNN (ReLU modules): the input gradient at β = 10 and β = 3, and gradient × input; the plain
    /// gradient differs (the smoothing is applied, not ignored).</summary>
    [Fact]
    public void SmoothedGradientsMatchTheReferenceOnTheDemoCnn()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: b10, uses: beta-smooth, with: { inner: { uses: saliency, with: { abs: false } } } }
              - { id: b3, uses: beta-smooth, with: { inner: { uses: saliency, with: { abs: false } }, beta: 3 } }
              - { id: gxi, uses: beta-smooth, with: { inner: { uses: gradient-x-input } } }
              - { id: plain, uses: saliency, with: { abs: false } }
            """, batchSize: 3));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        TechniqueTests.Close(TechniqueTests.Stack(r, "b10", "beta-smooth"), "bs_cnn_gradient_b10.npy", 1e-5);
        TechniqueTests.Close(TechniqueTests.Stack(r, "b3", "beta-smooth"), "bs_cnn_gradient_b3.npy", 1e-5);
        TechniqueTests.Close(TechniqueTests.Stack(r, "gxi", "beta-smooth"), "bs_cnn_gxi_b10.npy", 1e-5);
        Assert.True(TestEnv.RelL2(TechniqueTests.Stack(r, "plain", "saliency"), Npy.Read(TestEnv.Fixture("bs_cnn_gradient_b10.npy")).Data) > 0.05);
    }

    /// <summary>torchvision's resnet18, whose blocks end in a functional ReLU after the residual sum: each ReLU
    /// application (stem, inside and at the end of every block) smoothed with its own input.</summary>
    [Fact]
    public void SmoothedGradientsMatchTheReferenceOnResNet18()
    {
        var r = ShapleyFamilyTests.ResNet18("  - { id: b, uses: beta-smooth, with: { inner: { uses: saliency, with: { abs: false } } } }");
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        TechniqueTests.Close(TechniqueTests.Stack(r, "b", "beta-smooth", 2), "bs_r18_gradient_b10.npy", 1e-4);
    }

    /// <summary>A model without ReLUs (the small ViT's GELUs): the step fails and says why, instead of writing the plain
    /// gradient under β-smooth's name.</summary>
    [Fact]
    public void AModelWithoutReluIsRefused()
    {
        var vit = Path.Combine(TestEnv.Fixtures, "onnx");
        var r = TestEnv.Run(TestEnv.Pipeline($$"""
            version: 1
            model: { uses: onnx, with: { path: {{TestEnv.Yaml(Path.Combine(vit, "families", "vit.onnx"))}} } }
            data: { uses: npy, with: { path: {{TestEnv.Yaml(Path.Combine(vit, "vit_input.npy"))}} } }
            steps:
              - { id: b, uses: beta-smooth, with: { inner: { uses: saliency } } }
            """));
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("this graph has none", r.Manifest!.ToJsonString());
    }

    [Fact]
    public void AMethodThatSetsItsOwnReluRuleCannotBeWrapped()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("  - { id: b, uses: beta-smooth, with: { inner: { uses: guided-backprop } } }\n"));
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains(r.Errors, e => e.ToString().Contains("sets the ReLUs' backward rule itself", StringComparison.Ordinal));
        // A wrapper around such a method: refused when the model is asked for a second rule.
        var n = TestEnv.Run(TestEnv.FixturePipeline("  - { id: b, uses: beta-smooth, with: { inner: { uses: noise-tunnel, with: { inner: { uses: guided-backprop }, samples: 2 } } } }\n"));
        Assert.NotEqual(0, n.ExitCode);
        Assert.Contains("a ReLU override is already active", n.Manifest!.ToJsonString());
    }
}
