using Loupe.Abstractions;
using Loupe.Analysis.Decisions;
using Loupe.Models.Onnx;
using Loupe.Models.TorchSharp;
using Loupe.Testing;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>The β-smooth ReLU rule on the onnx interpreter (every Relu node) gives the torchvision backend's smoothed
/// gradient on the shipped demo CNN (samples/models/fashion-cnn: the same weights in both formats), which
/// Loupe.Tests/BetaSmoothTests holds to Zennit's rule written out in PyTorch.</summary>
public class BetaSmoothOnnxTests
{
    static float[] Gradient(IModel model, Tensor x, double? beta)
    {
        using var scope = NewDisposeScope();
        var ctx = new TensorContext(model, x, (int)x.shape[0], new Top1Target());
        using var rule = beta is { } b ? ((IModelInterventions)model).OverrideRelu(ReluRule.BetaSmooth, b) : null;
        var r = new Saliency().Attribute(new SaliencyOptions { Abs = false }, new AttributionInput(ctx, x, null));
        return Env.Data(r.Map);
    }

    [Fact]
    public void TheDemoCnnExportGivesTheTorchVisionSmoothedGradient()
    {
        var dir = Path.Combine(Env.RepoRoot, "samples", "models", "fashion-cnn");
        var spec = TorchVisionAdapter.FashionMnist;
        using var onnx = Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(dir, "fashion-cnn.onnx"), Mean = spec.Mean, Std = spec.Std });
        using var tv = new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = "fashion-cnn", Weights = Path.Combine(dir, "fashion-cnn.safetensors") }, Env.Context);
        using var scope = NewDisposeScope();
        var x = Npy.Read(Env.LoupeFixture("fashion_input.npy")).ToTensor();
        foreach (var beta in new[] { 10.0, 2.0 })
        {
            var fromTv = Gradient(tv, x, beta);
            var fromOnnx = Gradient(onnx, x, beta);
            Assert.True(Env.RelL2(fromOnnx, fromTv) <= 1e-4, $"β = {beta}: onnx vs torchvision {Env.RelL2(fromOnnx, fromTv):E2}");
            Assert.True(Env.RelL2(fromOnnx, Gradient(onnx, x, null)) > 0.01, $"β = {beta}: the smoothed gradient equals the plain one");
        }
    }
}
