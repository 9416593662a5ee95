using Loupe.Abstractions;
using Loupe.Analysis.Decisions;
using Loupe.Models.Onnx;
using Loupe.Models.TorchSharp;
using Loupe.Testing;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>DeepLift's two implementations of the rescale rule give the same map on resnet18 (hash weights): the
/// torchvision backend's (in-place ReLUs and residual blocks kept in place, multipliers made in the forward on half a
/// batch) and the onnx interpreter's on the export (out-of-place Relu nodes) — within 3e-5 when both run the same
/// operators (the Δout/Δin multipliers magnify last-bit differences), within the 1e-4 with the torchvision backend's folded batch norms and channels-last batches; and
/// the target DeepLift selects on its own [x; x′] forward is the one a separate forward selects.</summary>
public class DeepLiftPathTests
{
    static (float[] Map, long[] Classes) Map(IModel model, Tensor x, TargetSelection? given)
    {
        using var scope = NewDisposeScope();
        var ctx = new TensorContext(model, x, (int)x.shape[0], new Top1Target());
        var r = new DeepLift().Attribute(new DeepLiftOptions(), new AttributionInput(ctx, x, given));
        return (Env.Data(r.Map), r.Selection.Classes!);
    }

    [Fact]
    public void TorchVisionAndOnnxPathsGiveTheSameMap()
    {
        var path = ModelTests.ResNetWithHashWeights();
        using var onnx = Env.LoadOnnx(new OnnxOptions { Path = path, Mean = [0.485f, 0.456f, 0.406f], Std = [0.229f, 0.224f, 0.225f] });
        using var tv = new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = "resnet18", NumClasses = 10 }, Env.Context);
        ModelTests.SetHashWeights((TorchModel)tv);
        using var scope = NewDisposeScope();
        var x = Npy.Read(Env.LoupeFixture("arch_input_64.npy")).ToTensor();
        var (fromTv, classes) = Map(tv, x, null);
        var (fromOnnx, onnxClasses) = Map(onnx, x, null);
        // The same operators on both sides (batch norms unfolded, NCHW, libtorch's own pools): only the rule's two
        // implementations differ.
        using var plain = new TorchVisionAdapter().Load(new TorchVisionOptions
        {
            Architecture = "resnet18", NumClasses = 10, FoldBatchnorm = false, FastKernels = false, Layout = MemoryLayout.Never,
        }, Env.Context);
        ModelTests.SetHashWeights((TorchModel)plain);
        var (fromPlain, _) = Map(plain, x, null);
        // Measured 1.9e-5 on oneDNN's convolutions, 3.8e-5 on ATen's own (TorchNative): the multipliers (Δout/Δin)
        // magnify the backends' last-bit differences where Δin is tiny.
        Assert.True(Env.RelL2(fromPlain, fromOnnx) <= 5e-5, $"torchvision (plain) vs onnx: {Env.RelL2(fromPlain, fromOnnx):E2}");
        long[] separate;
        using (no_grad()) separate = tv.Forward(x).argmax(1).data<long>().ToArray();
        Assert.Equal(separate, classes);
        Assert.Equal(separate, onnxClasses);
        var (given, _) = Map(tv, x, new TargetSelection(separate, separate.Select(c => c.ToString()).ToArray()));
        Assert.True(Env.RelL2(fromTv, given) <= 1e-6, $"own vs given selection: {Env.RelL2(fromTv, given):E2}");
        Assert.Contains(fromTv, v => v != 0);
        // Folded batch norms and channels-last convolutions round differently (~6e-5): the 1e-4 bar.
        Assert.True(Env.RelL2(fromTv, fromOnnx) <= 1e-4, $"torchvision vs onnx: {Env.RelL2(fromTv, fromOnnx):E2}");
    }
}
