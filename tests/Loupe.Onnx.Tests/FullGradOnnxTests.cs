using Loupe.Abstractions;
using Loupe.Analysis.Cam;
using Loupe.Models.Onnx;
using Loupe.Models.TorchSharp;
using Loupe.Testing;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary><c>full-grad</c> on the onnx backend: the biases come from the graph form (the export keeps resnet18's 20
/// batch norms), so the map is the PyTorch reference's (tests/fixtures/make_cams_fixtures.py) and the TorchSharp
/// model's; ONNX Runtime has no gradients and no graph and is refused.</summary>
public class FullGradOnnxTests
{
    static float[] Map(IModel model, Tensor x)
    {
        using var scope = NewDisposeScope();
        var ctx = new TensorContext(model, x, 2, new Top1Target());
        Assert.Empty(new FullGrad().Validate(new FullGradOptions(), new AnalysisValidationContext(model.Layers, model.Capabilities, model)));
        return Env.Data(new FullGrad().Attribute(new FullGradOptions(), new AttributionInput(ctx, x, null)).Map);
    }

    [Fact]
    public void ResNet18ExportGivesThePyTorchMap()
    {
        var path = ModelTests.ResNetWithHashWeights();
        using var onnx = Env.LoadOnnx(new OnnxOptions { Path = path, Mean = [0.485f, 0.456f, 0.406f], Std = [0.229f, 0.224f, 0.225f] });
        using var tv = new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = "resnet18", NumClasses = 10 }, Env.Context);
        ModelTests.SetHashWeights((TorchModel)tv);
        using var scope = NewDisposeScope();
        var x = Npy.Read(Env.LoupeFixture("arch_input_64.npy")).ToTensor();
        var fromOnnx = Map(onnx, x);
        var fromTv = Map(tv, x);
        var reference = Npy.Read(Env.LoupeFixture("cams_r18_fullgrad.npy")).Data;
        Assert.True(Env.RelL2(fromOnnx, reference) <= 1e-4, $"onnx vs PyTorch: {Env.RelL2(fromOnnx, reference):E2}");
        Assert.True(Env.RelL2(fromOnnx, fromTv) <= 1e-4, $"onnx vs torchvision: {Env.RelL2(fromOnnx, fromTv):E2}");
    }

    [Fact]
    public void OnnxRuntimeIsRefusedForWantOfGradientsAndAGraph()
    {
        using var ort = Env.LoadOrt(new OnnxOptions { Path = Path.Combine(Env.RepoRoot, "samples", "models", "fashion-cnn", "fashion-cnn.onnx"), Channels = 1, Height = 28, Width = 28 });
        var needed = new FullGrad().Requirements.Capabilities;
        Assert.NotEqual(needed, needed & ort.Capabilities);
        Assert.False(ort is IModelGraphSource);
    }
}
