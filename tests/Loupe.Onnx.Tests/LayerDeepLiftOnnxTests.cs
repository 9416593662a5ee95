using Loupe.Abstractions;
using Loupe.Analysis.Decisions;
using Loupe.Models.Onnx;
using Loupe.Models.TorchSharp;
using Loupe.Testing;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary><c>layer-deeplift</c> on the onnx interpreter (samples/models/fashion-cnn/fashion-cnn.onnx, the shipped
/// weights exported) gives the torchvision backend's map at a layer's output and at a ReLU's input (each backend's own
/// rescale rule and capture order).</summary>
public class LayerDeepLiftOnnxTests
{
    static float[] Map(IModel model, Tensor x, string layer, bool layerInput)
    {
        using var scope = NewDisposeScope();
        var ctx = new TensorContext(model, x, (int)x.shape[0], new Top1Target());
        var options = new LayerDeepLiftOptions { Layer = layer, AttributeToLayerInput = layerInput };
        var r = new LayerDeepLift().Attribute(options, new AttributionInput(ctx, x, null));
        return Env.Data(r.Raw!);
    }

    [Theory]
    [InlineData("relu3", "/relu3/Relu", false)]
    [InlineData("relu2", "/relu2/Relu", true)]
    public void TheDemoCnnExportGivesTheTorchVisionMap(string tvLayer, string onnxLayer, bool layerInput)
    {
        var dir = Path.Combine(Env.RepoRoot, "samples", "models", "fashion-cnn");
        var spec = TorchVisionAdapter.FashionMnist;
        using var onnx = Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(dir, "fashion-cnn.onnx"), Mean = spec.Mean, Std = spec.Std });
        using var tv = new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = "fashion-cnn", Weights = Path.Combine(dir, "fashion-cnn.safetensors") }, Env.Context);
        using var scope = NewDisposeScope();
        var x = Npy.Read(Env.LoupeFixture("fashion_input.npy")).ToTensor();
        var fromTv = Map(tv, x, tvLayer, layerInput);
        var fromOnnx = Map(onnx, x, onnxLayer, layerInput);
        Assert.Contains(fromTv, v => v != 0);
        Assert.True(Env.RelL2(fromOnnx, fromTv) <= 1e-4, $"onnx vs torchvision: {Env.RelL2(fromOnnx, fromTv):E2}");
    }
}
