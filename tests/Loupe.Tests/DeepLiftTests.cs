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

    /// <summary><c>baseline_file</c> (Captum's tensor baselines) on deeplift and layer-deeplift against the reference
    /// run with that reference input, and on the layer path methods: a file of 0.5 everywhere gives fill: 0.5's maps.</summary>
    [Fact]
    public void BaselineFilesAreCaptumsTensorBaselines()
    {
        var dir = TestEnv.TempDir("loupe-baseline");
        var half = Path.Combine(dir, "half.npy");
        File.WriteAllBytes(half, Npy.Encode(new Loupe.Abstractions.NdArray(Enumerable.Repeat(0.5f, 28 * 28).ToArray(), [1, 28, 28])));
        var file = TestEnv.Yaml(TestEnv.Fixture("fam_dl_baseline_file.npy"));
        var r = TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: dl, uses: deeplift, with: { baseline_file: {{file}} } }
              - { id: ldl, uses: layer-deeplift, with: { layer: conv3, baseline_file: {{file}} } }
              - { id: lc-file, uses: layer-conductance, with: { layer: pool2, steps: 4, baseline_file: {{TestEnv.Yaml(half)}} } }
              - { id: lc-fill, uses: layer-conductance, with: { layer: pool2, steps: 4, fill: 0.5 } }
              - { id: nc-file, uses: neuron-conductance, with: { layer: relu3, neuron: [9, 3, 3], steps: 4, baseline_file: {{TestEnv.Yaml(half)}} } }
              - { id: nc-fill, uses: neuron-conductance, with: { layer: relu3, neuron: [9, 3, 3], steps: 4, fill: 0.5 } }
            """, batchSize: 3));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        TechniqueTests.Close(TechniqueTests.Stack(r, "dl", "deeplift"), "fam_cnn_deeplift_file.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "ldl", "layer-deeplift-layer"), "fam_cnn_layer_deeplift_conv3_file.npy", 1e-4);
        Assert.Equal(TechniqueTests.Stack(r, "lc-fill", "layer-conductance-layer"), TechniqueTests.Stack(r, "lc-file", "layer-conductance-layer"));
        Assert.Equal(TechniqueTests.Stack(r, "nc-fill", "neuron-conductance"), TechniqueTests.Stack(r, "nc-file", "neuron-conductance"));
        Assert.NotEqual(TechniqueTests.Stack(r, "dl", "deeplift"), Npy.Read(TestEnv.Fixture("fam_cnn_deeplift.npy")).Data);
    }

    [Fact]
    public void MatchesThePyTorchReferenceOnResNet18()
    {
        var r = ShapleyFamilyTests.ResNet18("  - { id: dl, uses: deeplift }");
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        TechniqueTests.Close(TechniqueTests.Stack(r, "dl", "deeplift", 2), "fam_r18_deeplift.npy", 1e-4);
    }

    /// <summary>Captum DeepLift's <c>eps</c>: where |Δin| &lt; eps a non-linearity keeps its own gradient at the input. With
    /// an eps above every |Δin| of the demo CNN, DeepLift is the plain gradient: (x − 0) ⊙ ∂F/∂x is gradient × input,
    /// and layer-deeplift's multipliers at conv3 are the layer gradient; with Captum's default it is not.</summary>
    [Fact]
    public void EpsAboveEveryChangeGivesThePlainGradient()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: big, uses: deeplift, with: { eps: 1.0e+6 } }
              - { id: dl, uses: deeplift }
              - { id: gxi, uses: gradient-x-input }
              - { id: lbig, uses: layer-deeplift, with: { layer: conv3, eps: 1.0e+6, multiply_by_inputs: false } }
              - { id: lg, uses: layer-gradient-x-activation, with: { layer: conv3, multiply_by_inputs: false } }
            """, batchSize: 3));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        var gxi = TechniqueTests.Stack(r, "gxi", "gradient-x-input");
        Assert.True(TestEnv.RelL2(TechniqueTests.Stack(r, "big", "deeplift"), gxi) < 1e-5);
        Assert.True(TestEnv.RelL2(TechniqueTests.Stack(r, "dl", "deeplift"), gxi) > 1e-2, "the default eps gave the plain gradient too");
        var lg = TechniqueTests.Stack(r, "lg", "layer-gradient-x-activation-layer");
        Assert.True(TestEnv.RelL2(TechniqueTests.Stack(r, "lbig", "layer-deeplift-layer"), lg) < 1e-5);
    }
}
