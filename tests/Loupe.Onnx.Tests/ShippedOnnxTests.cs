using Loupe.Abstractions;
using Loupe.Models.Onnx;
using Loupe.Models.TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>samples/models/fashion-cnn/fashion-cnn.onnx (export_onnx.py: the shipped weights exported by PyTorch, each
/// BatchNorm folded into its convolution) is the same model as the TorchSharp demo CNN, so forward-only steps can swap
/// to the onnx-runtime backend.</summary>
public class ShippedOnnxTests
{
    [Fact]
    public void DemoCnnExportGivesTheTorchVisionLogitsAndActivations()
    {
        using var scope = NewDisposeScope();
        var dir = Path.Combine(Env.RepoRoot, "samples", "models", "fashion-cnn");
        var spec = TorchVisionAdapter.FashionMnist;
        using var ort = Env.LoadOrt(new OnnxOptions
        {
            Path = Path.Combine(dir, "fashion-cnn.onnx"), Channels = spec.Channels, Height = spec.Height, Width = spec.Width,
            Mean = spec.Mean, Std = spec.Std,
        });
        using var tv = new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = "fashion-cnn", Weights = Path.Combine(dir, "fashion-cnn.safetensors") }, Env.Context);
        Assert.Equal(spec, ort.DefaultInput with { Mean = spec.Mean, Std = spec.Std });
        var x = randn([16, 1, 28, 28], generator: new Generator(11));
        using var _ = no_grad();
        using var capOrt = ort.Capture(["/relu3/Relu"], forGradients: false);
        using var capTv = tv.Capture(["relu3"], forGradients: false);
        var a = Env.Data(ort.Forward(x));
        var b = Env.Data(tv.Forward(x));
        Assert.Equal(16 * 10, a.Length);
        Assert.True(a.Zip(b).Max(p => Math.Abs(p.First - p.Second)) < 1e-4, "logits differ");
        var ra = Env.Data(capOrt["/relu3/Relu"]);
        var rb = Env.Data(capTv["relu3"]);
        Assert.Equal(16 * 128 * 7 * 7, ra.Length);
        Assert.True(Env.RelL2(ra, rb) < 1e-5, $"relu3 differs: {Env.RelL2(ra, rb):E2}");
    }
}
