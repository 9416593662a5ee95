using System.Diagnostics;
using Loupe.Abstractions;
using Loupe.Core;
using Loupe.Models.Onnx;
using static TorchSharp.torch;
using Xunit.Abstractions;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Onnx.Tests;

/// <summary>Inputs that must be refused with a clear message, at load.</summary>
public class BadInputTests
{
    static LoupeException Refused(string path, OnnxOptions? o = null) =>
        Assert.Throws<LoupeException>(() => Env.LoadOnnx((o ?? new OnnxOptions()) with { Path = path }));

    [Fact]
    public void TruncatedAndGarbageFilesNameTheFile()
    {
        var dir = Env.TempDir();
        var bytes = File.ReadAllBytes(Env.Fixture("ops/small_cnn_opset17.onnx"));
        var truncated = Path.Combine(dir, "truncated.onnx");
        File.WriteAllBytes(truncated, bytes[..(bytes.Length / 2)]);
        var e = Refused(truncated);
        Assert.Contains(truncated, e.Message);
        Assert.Contains("not a valid ONNX model", e.Message);
        var garbage = Path.Combine(dir, "garbage.onnx");
        File.WriteAllBytes(garbage, Enumerable.Range(0, 4096).Select(i => (byte)(i * 7919 % 251)).ToArray());
        Assert.Contains(garbage, Refused(garbage).Message);
        var text = Path.Combine(dir, "text.onnx");
        File.WriteAllText(text, "this is not a model\n");
        Assert.Contains(text, Refused(text).Message);
        var empty = Path.Combine(dir, "empty.onnx");
        File.WriteAllBytes(empty, []);
        Assert.Contains("empty", Refused(empty).Message);
        // Also through onnx-runtime (same checks before ONNX Runtime sees the file).
        Assert.Contains(truncated, Assert.Throws<LoupeException>(() => Env.LoadOrt(new OnnxOptions { Path = truncated })).Message);
    }

    [Fact]
    public void ExternalDataWithAMissingFileIsRefused()
    {
        var e = Refused(Env.Fixture("bad/external_missing.onnx"));
        Assert.Contains("external_missing.bin", e.Message);
        Assert.Contains("missing", e.Message);
        // A location outside the model's folder is refused too.
        var dir = Env.TempDir();
        var m = global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Env.Fixture("bad/external_missing.onnx")));
        m.Graph.Initializer.First(t => t.ExternalData.Count > 0).ExternalData.Single(kv => kv.Key == "location").Value = "../../etc/passwd";
        var path = Path.Combine(dir, "escape.onnx");
        File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(m));
        Assert.Contains("outside the model's folder", Refused(path).Message);
    }

    [Fact]
    public void UnsupportedOperatorIsNamedWithNodeAndOpset()
    {
        var e = Refused(Env.Fixture("bad/unsupported_op.onnx"));
        Assert.Contains("unsupported ONNX operator 'Det'", e.Message);
        Assert.Contains("my_det", e.Message);
        Assert.Contains("opset 13", e.Message);
    }

    [Fact]
    public void InputShapesAreChecked()
    {
        // One C×H×W image (no batch dimension, as torchvision's detectors export): both backends run it image by image
        // (a Relu: each image's output gains the batch dimension), the differentiable one with the gradient.
        foreach (var load in new Func<OnnxOptions, IModel>[] { Env.LoadOrt, Env.LoadOnnx })
        {
            using var m = load(new OnnxOptions { Path = Env.Fixture("bad/rank3_input.onnx"), FlattenOutput = false });
            using var s = NewDisposeScope();
            var x = randn(2, 3, 8, 8).requires_grad_(m.Capabilities.HasFlag(ModelCapabilities.Gradients));
            var y = m.Forward(x);
            Assert.Equal(Env.Data(x.relu()), Env.Data(y));
            if (x.requires_grad) Assert.Equal(Env.Data(x.gt(0).to(ScalarType.Float32)), Env.Data(CheckedOps.Grad([y.sum()], [x])[0]));
        }
        Assert.Contains("5 channels", Refused(Env.Fixture("bad/five_channels.onnx")).Message);
        Assert.Contains("option height", Refused(Env.Fixture("ops/relu.onnx"), new OnnxOptions { Height = 16 }).Message);
        using var model = Env.LoadOnnx(new OnnxOptions { Path = Env.Fixture("ops/relu.onnx") });
        using var scope = NewDisposeScope();
        var e = Assert.Throws<LoupeException>(() => model.Forward(zeros(1, 3, 9, 8)));
        Assert.Contains("N×3×8×8", e.Message);
        Assert.Contains("(1×3×9×8)", e.Message);
    }

    [Fact]
    public void UnbatchedOutputsThatPadPastTheBudgetAreRefused()
    {
        // One image's output is 1×16384×1, the other's 1×1×16384: one padded batch would be 2×16384×16384 floats.
        foreach (var load in new Func<OnnxOptions, IModel>[] { Env.LoadOrt, Env.LoadOnnx })
        {
            using var m = load(new OnnxOptions { Path = Env.Fixture("unbatched/padding_bomb.onnx"), FlattenOutput = false });
            using var s = NewDisposeScope();
            Assert.Equal(new long[] { 2, 1, 16384, 1 }, m.Forward(ones(2, 1, 128, 128)).shape);   // same shapes: no padding
            var e = Assert.Throws<LoupeException>(() => m.Forward(cat([ones(1, 1, 128, 128), -ones(1, 1, 128, 128)])));
            Assert.Contains("padding_bomb.onnx: the images' outputs", e.Message);
            Assert.Contains("padded to one batch would be over the memory budget", e.Message);
        }
    }

    [Fact]
    public void TwoImageInputsNeedImageInputAndTheOtherASource()
    {
        // Two N×C×H×W inputs: which one the data source feeds must be said (issue 18 item 10).
        var e = Refused(Env.Fixture("bad/two_inputs.onnx"));
        Assert.Contains("2 N×C×H×W inputs", e.Message);
        Assert.Contains("'x2'", e.Message);
        Assert.Contains("image_input", e.Message);
        // Once it is, the other is a side input that needs values.
        e = Refused(Env.Fixture("bad/two_inputs.onnx"), new OnnxOptions { ImageInput = "x" });
        Assert.Contains("side input 'x2'", e.Message);
        Assert.Contains("side_inputs", e.Message);
        e = Refused(Env.Fixture("bad/two_inputs.onnx"), new OnnxOptions { ImageInput = "x3" });
        Assert.Contains("image_input 'x3' is not an input of the model", e.Message);
    }

    [Fact]
    public void FilesAboveTheSizeLimitAreRefusedBeforeParsing()
    {
        var e = Assert.Throws<LoupeException>(() => Env.LoadOnnx(new OnnxOptions { Model = "mlnet-resnet18", MaxFileMb = 10 }));
        Assert.Contains("above the limit of 10 MB", e.Message);
    }

    [Fact]
    public void OptionsAreChecked()
    {
        Assert.Contains("exactly one", Assert.Throws<LoupeException>(() => Env.LoadOnnx(new OnnxOptions())).Message);
        Assert.Contains("did you mean", Assert.Throws<LoupeException>(() => Env.LoadOnnx(new OnnxOptions { Model = "mlnet-resnet81" })).Message, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("mean/std", Assert.Throws<LoupeException>(() => Env.LoadOnnx(new OnnxOptions { Model = "mlnet-resnet18", Mean = [0.5f] })).Message);
        Assert.Contains("std", Assert.Throws<LoupeException>(() => Env.LoadOnnx(new OnnxOptions { Path = Env.Fixture("ops/relu.onnx"), Std = [1, 0, 1] })).Message);
    }
}

/// <summary>The onnx-runtime backend, and loading the plugin from its folder as the host does.</summary>
public class RuntimeBackendTests
{
    [Fact]
    public void DeclaresNoGradientsAndCapturesActivations()
    {
        using var ort = Env.LoadOrt(new OnnxOptions { Model = "mlnet-resnet18" });
        Assert.Equal(ModelCapabilities.Forward | ModelCapabilities.LayerActivations, ort.Capabilities);
        Assert.Throws<LoupeException>(() => ort.Capture(["ReLU393"], forGradients: true));
        using var onnx = Env.LoadOnnx(new OnnxOptions { Model = "mlnet-resnet18" });
        using var scope = NewDisposeScope();
        // Batch 3 on a model whose input fixes batch 1: rows are run one at a time.
        var x = tensor(Env.SinInput(3 * 3 * 224 * 224, 0.5, 0.5), [3, 3, 224, 224]);
        using var capOrt = ort.Capture(["ReLU393", "Convolution249_Output_0"], forGradients: false);
        using var capOnnx = onnx.Capture(["ReLU393", "Convolution249_Output_0"], forGradients: false);
        var yOrt = ort.Forward(x);
        using (no_grad()) onnx.Forward(x);
        Assert.Equal([3L, 512], yOrt.shape);
        foreach (var layer in new[] { "ReLU393", "Convolution249_Output_0" })
        {
            var err = Env.RelL2(Env.Data(capOrt[layer]), Env.Data(capOnnx[layer]));
            Assert.True(err <= 1e-4, $"{layer}: rel L2 {err:E2}");
        }
    }

    [Fact]
    public void HostLoadsThePluginFromItsFolderAndOnnxRuntimeRunsInThePluginContext()
    {
        Assert.True(File.Exists(Path.Combine(Env.PluginDirectory, "runtimes", "linux-x64", "native", "libonnxruntime.so")) || !OperatingSystem.IsLinux());
        Assert.True(File.Exists(Path.Combine(Env.PluginDirectory, "models", "mlnet-resnet18", "ResNet18.onnx")));
        using var registry = ComponentRegistry.Load([Env.PluginDirectory]);
        Assert.Contains("onnx", registry.Ids(ComponentKind.Model));
        Assert.Contains("onnx-runtime", registry.Ids(ComponentKind.Model));
        var adapter = registry.Create<IModelAdapter>("onnx-runtime");
        Assert.NotEqual(typeof(OnnxRuntimeAdapter).Assembly, adapter.GetType().Assembly);   // the plugin's own load context
        var options = Activator.CreateInstance(adapter.OptionsType)!;
        adapter.OptionsType.GetProperty("Model")!.SetValue(options, "mlnet-resnet18");
        using var model = adapter.Load(options, Env.Context);
        using var scope = NewDisposeScope();
        var y = model.Forward(tensor(Env.SinInput(3 * 224 * 224, 0.5, 0.5), [1, 3, 224, 224]));
        Assert.Equal([1L, 512], y.shape);
    }
}
