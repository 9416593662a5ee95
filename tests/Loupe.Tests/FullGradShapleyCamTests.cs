using Loupe.Core;

namespace Loupe.Tests;

/// <summary>full-grad and shapley-cam against PyTorch implementations of pytorch-grad-cam's FullGrad and ShapleyCAM
/// (tests/fixtures/make_cams_fixtures.py) on the demo CNN and resnet18 ('hash' weights, 64²). The onnx backend's
/// full-grad: Loupe.Onnx.Tests/FullGradOnnxTests.</summary>
public class FullGradShapleyCamTests
{
    static void Ok(RunResult r)
    {
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.All(r.Manifest!["steps"]!.AsArray(), s => Assert.True(s!["liveTensorDelta"]!.GetValue<long>() == 0, $"{s["id"]}: {s["liveTensorDelta"]}"));
    }

    [Fact]
    public void MatchThePyTorchReferenceOnTheDemoCnn()
    {
        // batch 3 over 4 inputs: the maps do not depend on batch edges.
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: fg, uses: full-grad }
              - { id: fge, uses: full-grad, with: { eigen_smooth: true } }
              - { id: rest, uses: shapley-cam, with: { layer: relu3, score: rest } }
              - { id: soft, uses: shapley-cam, with: { layer: relu3 }, target: { top-1: softmax } }
            """, batchSize: 3));
        Ok(r);
        TechniqueTests.Close(TechniqueTests.Stack(r, "fg", "full-grad"), "cams_cnn_fullgrad.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "fge", "full-grad"), "cams_cnn_fullgrad_eigen.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "rest", "shapley-cam-layer"), "cams_cnn_shapley_rest.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "soft", "shapley-cam-layer"), "cams_cnn_shapley_softmax.npy", 1e-4);
    }

    [Fact]
    public void MatchThePyTorchReferenceOnResNet18()
    {
        var r = ShapleyFamilyTests.ResNet18("""
              - { id: fg, uses: full-grad }
              - { id: fge, uses: full-grad, with: { eigen_smooth: true } }
              - { id: rest, uses: shapley-cam, with: { layer: layer3, score: rest } }
            """);
        Ok(r);
        TechniqueTests.Close(TechniqueTests.Stack(r, "fg", "full-grad", 2), "cams_r18_fullgrad.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "fge", "full-grad", 2), "cams_r18_fullgrad_eigen.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "rest", "shapley-cam-layer", 2), "cams_r18_shapley_rest.npy", 1e-4);
    }

    /// <summary>full-grad on the torchvision families whose graph form Loupe's own modules write (RegNet X's residual
    /// bottlenecks, DenseNet's concatenations and pre-activation batch norms, MNASNet's inverted residuals, SqueezeNet's
    /// Fire concatenations and biased convolutions) against the PyTorch reference of pytorch-grad-cam's FullGrad
    /// ('hash' weights, 64²); the graph run inside full-grad is checked against the model's own output too, and LRP runs on
    /// the same graph form.</summary>
    [Theory]
    [InlineData("regnet_x_400mf")]
    [InlineData("densenet121")]
    [InlineData("mnasnet1_0")]
    [InlineData("squeezenet1_1")]
    public void FullGradMatchesThePyTorchReferenceOnMoreFamilies(string arch)
    {
        var r = ShapleyFamilyTests.TorchVision(arch, """
              - { id: fg, uses: full-grad }
              - { id: lrp, uses: lrp, with: { rule: epsilon, epsilon: 1.0e-9, zero_bias: true } }
            """);
        Ok(r);
        TechniqueTests.Close(TechniqueTests.Stack(r, "fg", "full-grad", 2), $"cams_{arch}_fullgrad.npy", 1e-4);
        // The same graph form carries LRP: with LRP-0 (ε → 0, biases taken as zero) every map is finite and not zero.
        var lrp = TechniqueTests.Stack(r, "lrp", "lrp", 2);
        Assert.All(lrp, v => Assert.True(float.IsFinite(v)));
        Assert.Contains(lrp, v => v != 0);
    }

    /// <summary>full-grad on the families with squeeze-and-excitation and smooth activations — EfficientNet v1 (MBConv:
    /// SiLU, SE of SiLU and sigmoid, residual sums), v2 (FusedMBConv too), MobileNet v3 (TorchVision for .NET's modules:
    /// hard-swish, SE of ReLU and hard-sigmoid), MobileNet v2 (ReLU6, inverted residuals) and RegNet Y (SE in the
    /// residual bottleneck), ConvNeXt (layer norms of the channels, GELU, layer scale; its Linear layers are not biased
    /// Conv2d layers and take no part) and ShuffleNet v2 (channel halves, concatenation, channel shuffle) — against the
    /// PyTorch reference of pytorch-grad-cam's FullGrad ('hash' weights, 64²): every Conv2d with a bias (SE's two 1×1
    /// convolutions among them) and every batch norm. LRP (epsilon-plus) runs on the same graph form (finite, non-zero
    /// maps) under Zennit's conventions (the SE product's gradient, the activations passed; its numbers: LrpSqueezeExcitationTests)
    /// and is refused where it has no rule: under Captum's conventions the smooth activations and products (Captum's LRP
    /// refuses such modules, ConvNeXt's layer norms among them) — naming the first such node.</summary>
    [Theory]
    [InlineData("efficientnet_b0", null, "features.0.2' (Silu)")]
    [InlineData("efficientnet_v2_s", null, "features.0.2' (Silu)")]
    [InlineData("mobilenet_v3_small", null, "features.0.2' (Hardswish)")]
    [InlineData("mobilenet_v2", null, null)]
    [InlineData("regnet_y_400mf", null, "trunk_output.block1.block1-0.f.se' (Mul: a product of two values")]
    [InlineData("convnext_tiny", null, "features.0.1.channels_last' (Permute)")]
    [InlineData("shufflenet_v2_x1_0", null, null)]
    public void FullGradMatchesThePyTorchReferenceOnSqueezeExcitationFamilies(string arch, string? refusedUnderZennit, string? refusedUnderCaptum)
    {
        var r = ShapleyFamilyTests.TorchVision(arch, """
              - { id: fg, uses: full-grad }
            """ + (refusedUnderZennit is null ? "\n  - { id: lrp, uses: lrp }" : ""));
        Ok(r);
        TechniqueTests.Close(TechniqueTests.Stack(r, "fg", "full-grad", 2), $"cams_{arch}_fullgrad.npy", 1e-4);
        if (refusedUnderZennit is null)
        {
            var maps = TechniqueTests.Stack(r, "lrp", "lrp", 2);
            Assert.All(maps, v => Assert.True(float.IsFinite(v)));
            Assert.Contains(maps, v => v != 0);
        }
        foreach (var (convention, refused) in new[] { ("zennit", refusedUnderZennit), ("captum", refusedUnderCaptum) })
        {
            if (refused is null) continue;
            var lrp = ShapleyFamilyTests.TorchVision(arch, $"- {{ id: lrp, uses: lrp, with: {{ convention: {convention} }} }}");
            Assert.NotEqual(0, lrp.ExitCode);
            var error = string.Join("\n", lrp.Errors.Select(e => e.Message));
            Assert.Contains($"lrp: node '{refused}", error);
            Assert.Contains($"has no LRP rule here under convention: {convention}", error);
        }
    }

    /// <summary>LRP-ε with ε = 1e-9 and zero biases overflows on EfficientNet's squeeze-and-excitation branches in
    /// float32: the step fails with the reason and what to change, instead of writing maps of NaN.</summary>
    [Fact]
    public void AnOverflowingRelevanceFailsTheStepWithTheReason()
    {
        var r = ShapleyFamilyTests.TorchVision("efficientnet_b0", """
              - { id: lrp, uses: lrp, with: { rule: epsilon, epsilon: 1.0e-9, zero_bias: true } }
              - { id: ok, uses: lrp }
            """);
        Assert.NotEqual(0, r.ExitCode);
        var steps = r.Manifest!["steps"]!.AsArray();
        Assert.Contains("lrp: the relevance overflowed (infinite or NaN values)", steps[0]!["error"]!.ToString());
        Assert.Equal("succeeded", steps[1]!["status"]!.GetValue<string>());
    }

    [Fact]
    public void ShapleyCamOfALogitAfterReluIsGradCam()
    {
        // The top-1 logit is piecewise linear in relu3 (global average pool, linear head): H·A = 0, ShapleyCAM = Grad-CAM.
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: s, uses: shapley-cam, with: { layer: relu3 } }
              - { id: g, uses: grad-cam, with: { layer: relu3 } }
            """));
        Ok(r);
        var s = TechniqueTests.Stack(r, "s", "shapley-cam-layer");
        var g = TechniqueTests.Stack(r, "g", "grad-cam-layer");
        Assert.True(s.Max() > 0);
        Assert.Equal(g.Length, s.Length);
        for (int i = 0; i < s.Length; i++) Assert.True(Math.Abs(s[i] - g[i]) <= 1e-6 * (1 + Math.Abs(g[i])), $"{i}: {s[i]} vs {g[i]}");
    }

    [Fact]
    public void RestScoreNeedsAClassTarget()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: s, uses: shapley-cam, with: { layer: relu3, score: rest }, target: { channel: "relu3:3" } }
            """));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("score rest needs a class target", r.Manifest!["steps"]![0]!["error"]!.ToString());
    }

    [Fact]
    public void ShapleyCamDifferentiatesTwiceOnTheOnnxInterpreter()
    {
        // The shipped demo CNN through torchvision (whose maps the PyTorch references check) and through its ONNX export:
        // the ReST score's Hessian term comes from the onnx interpreter's double backward.
        const string steps = "- { id: s, uses: shapley-cam, with: { layer: relu3, score: rest } }";
        var tv = FamilyBackendTests.Run("torchvision", steps);
        var onnx = FamilyBackendTests.Run("onnx", steps);
        Ok(tv);
        Ok(onnx);
        FamilyBackendTests.Same(tv, onnx, "s", "shapley-cam-layer");
    }
}
