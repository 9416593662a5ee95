using Loupe.Abstractions;

namespace Loupe.Tests;

/// <summary>Issue 18 item 9: attribution to a layer's input (Captum's attribute_to_layer_input=True) on both backends,
/// against PyTorch implementations of Captum's layer methods with forward pre-hooks
/// (tests/fixtures/make_layer_input_fixtures.py).</summary>
public class LayerInputTests
{
    /// <summary>Every layer method at the input of <paramref name="layer"/>, 4 Gauss-Legendre steps, zero baseline.</summary>
    static string Steps(string layer) => $$"""
          - { id: la, uses: layer-activation, with: { layer: {{layer}}, attribute_to_layer_input: true } }
          - { id: gxa, uses: layer-gradient-x-activation, with: { layer: {{layer}}, attribute_to_layer_input: true } }
          - { id: ii, uses: internal-influence, with: { layer: {{layer}}, steps: 4, attribute_to_layer_input: true } }
          - { id: lc, uses: layer-conductance, with: { layer: {{layer}}, steps: 4, attribute_to_layer_input: true } }
          - { id: lig, uses: layer-integrated-gradients, with: { layer: {{layer}}, steps: 4, attribute_to_layer_input: true, internal_batch_size: 3 } }
          - { id: gc, uses: grad-cam, with: { layer: {{layer}}, attribute_to_layer_input: true } }
          - { id: out, uses: layer-activation, with: { layer: {{layer}} } }
        """;

    static void CheckAll(Loupe.Core.RunResult r, string prefix, int n)
    {
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.All(r.Manifest!["steps"]!.AsArray(), s => Assert.True(s!["liveTensorDelta"]!.GetValue<long>() == 0, $"{s["id"]}: {s["liveTensorDelta"]}"));
        TechniqueTests.Close(TechniqueTests.Stack(r, "la", "layer-activation", n), prefix + "_activation.npy", 1e-5);
        TechniqueTests.Close(TechniqueTests.Stack(r, "gxa", "layer-gradient-x-activation-layer", n), prefix + "_gxa.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "ii", "internal-influence-layer", n), prefix + "_influence.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "lc", "layer-conductance-layer", n), prefix + "_conductance.npy", 1e-3);
        TechniqueTests.Close(TechniqueTests.Stack(r, "lig", "layer-integrated-gradients-layer", n), prefix + "_lig.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "gc", "grad-cam-layer", n), prefix + "_gradcam.npy", 1e-4);
        // The layer's output is another tensor (the ReLU zeroes the negative inputs): the option is not ignored.
        var output = TechniqueTests.Stack(r, "out", "layer-activation", n);
        Assert.True(TestEnv.RelL2(output, Npy.Read(TestEnv.Fixture(prefix + "_activation.npy")).Data) > 1e-2);
    }

    [Fact]
    public void LayerMethodsAttributeToTheInputOfATorchSharpModule()
    {
        // relu3's input is bn3's output: with the batch norm folded into conv3, the pre-hook sees the fused output.
        var r = TestEnv.Run(TestEnv.FixturePipeline(Steps("relu3") + "\n" + """
              - { id: bnin, uses: layer-activation, with: { layer: bn3, attribute_to_layer_input: true } }
              - { id: conv, uses: layer-activation, with: { layer: conv3 } }
            """, batchSize: 3));
        CheckAll(r, "lin_cnn_relu3", 4);
        // A folded batch norm's input is its convolution's own output (the pair is unfolded while the hook lives).
        Assert.True(TestEnv.RelL2(TechniqueTests.Stack(r, "bnin", "layer-activation"), TechniqueTests.Stack(r, "conv", "layer-activation")) < 1e-6);
    }

    internal static string OnnxPipeline(string model, string input, string steps, int batchSize = 2) => TestEnv.Pipeline($$"""
        version: 1
        model:
          uses: onnx
          with: { path: {{TestEnv.Yaml(TestEnv.Fixture(model))}} }
        data:
          uses: npy
          with: { path: {{TestEnv.Yaml(TestEnv.Fixture(input))}} }
        settings: { batch_size: {{batchSize}} }
        steps:
        {{steps}}
        """);

    [Fact]
    public void LayerMethodsAttributeToTheValueAnOnnxNodeReads()
    {
        var r = TestEnv.Run(OnnxPipeline("conv_cnn3.onnx", "conv_input_3x16.npy", Steps("relu2")));
        CheckAll(r, "lin_cnn3_relu2", 2);
    }

    [Fact]
    public void ABackendWithoutLayerInputsIsAValidationError()
    {
        var r = TestEnv.Run(TestEnv.Pipeline($$"""
            version: 1
            model:
              uses: onnx-runtime
              with: { path: {{TestEnv.Yaml(TestEnv.Fixture("conv_cnn3.onnx"))}} }
            data:
              uses: npy
              with: { path: {{TestEnv.Yaml(TestEnv.Fixture("conv_input_3x16.npy"))}} }
            steps:
              - { id: la, uses: layer-activation, with: { layer: relu2, attribute_to_layer_input: true } }
            """));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("attribute_to_layer_input: this model backend", string.Join("\n", r.Errors));
    }
}
