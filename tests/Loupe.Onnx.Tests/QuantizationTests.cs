using Loupe.Abstractions;
using Loupe.Models.Onnx;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Onnx.Tests;

/// <summary>Quantised graphs in QDQ form (tests/fixtures/onnx/make_quant_fixtures.py): forward values equal ONNX
/// Runtime's operator-by-operator run, the gradient through a QuantizeLinear → DequantizeLinear pair is PyTorch's fake
/// quantisation's (straight-through inside the range), and torchvision's quantised MobileNetV2 as torch.onnx.export
/// writes it gives PyTorch's quantised predictions.</summary>
public class QuantizationTests
{
    static string Fixture(string name) => Env.Fixture($"ops-quant/{name}.onnx");

    public static TheoryData<string> Forms() => Env.ModelsIn("ops-quant");

    [Theory]
    [MemberData(nameof(Forms))]
    public void ValuesEqualOnnxRuntimesOperatorByOperatorRun(string name)
    {
        var input = name.StartsWith("tq_", StringComparison.Ordinal) ? Npy.Read(Env.Fixture("ops-quant/tq_input.npy")) : null;
        long[] shape = input?.Shape ?? [2, 3, 8, 8];
        var x = input?.Data ?? Env.SinInput(2 * 3 * 8 * 8, 2, 0.1);
        using var scope = NewDisposeScope();
        var (model, xt, y, expected) = Env.ForwardBesideOrt(Fixture(name), x, shape);
        using var _ = model;
        double err = Env.RelL2(Env.Data(y), expected);
        // A convolution quantised after: ONNX Runtime's float Conv sums in another order, and a value near a rounding
        // boundary may then quantise one step apart (qdq_grad: 1.2e-3), which the layers after carry on; the
        // predictions agree.
        bool network = name.StartsWith("tq_", StringComparison.Ordinal) || name == "qdq_grad";
        Assert.True(err <= (network ? 2e-2 : 1e-5), $"{name}: rel L2 {err:E2} from ONNX Runtime");
        if (name.StartsWith("tq_", StringComparison.Ordinal)) Assert.Equal(Env.Data(y.argmax(1)), Env.Data(tensor(expected).view(y.shape).argmax(1)));
        if (name is "q_standalone" or "q_then_other_dq" or "q_cast_other_type") return;   // integers in between: nothing to differentiate
        var g = CheckedOps.Grad([y.to(ScalarType.Float32).sum()], [xt], allowUnused: true)[0];
        Assert.True(g is not null && !g.IsInvalid && g.abs().sum().item<float>() > 0, $"{name}: no gradient reaches the input");
    }

    /// <summary>The onnx backend's output and input gradient of Σ y·cos(0.7 k) for <paramref name="model"/> (a file) on
    /// <paramref name="input"/> (an .npy) against PyTorch's (<paramref name="reference"/>.y.npy and .grad.npy); returns
    /// the model (the caller disposes it) and PyTorch's gradient.</summary>
    internal static (IModel Model, float[] Gradient) AssertPyTorchsFakeQuantisation(string model, string input, string reference)
    {
        var m = Env.LoadOnnx(new OnnxOptions { Path = model, FlattenOutput = false });
        using var scope = NewDisposeScope();
        var x = Npy.Read(input).ToTensor().requires_grad_(true);
        var y = m.Forward(x);
        var expectedY = Npy.Read(reference + ".y.npy").Data;
        Assert.True(Env.RelL2(Env.Data(y), expectedY) <= 1e-6, $"output: {Env.RelL2(Env.Data(y), expectedY):E2} from PyTorch's");
        var w = arange(y.numel()).to(ScalarType.Float32).mul(0.7).cos().view(y.shape);
        var g = CheckedOps.Grad([(y * w).sum()], [x])[0];
        var expected = Npy.Read(reference + ".grad.npy").Data;
        Assert.True(Env.RelL2(Env.Data(g), expected) <= 1e-5, $"gradient: {Env.RelL2(Env.Data(g), expected):E2} from PyTorch's");
        return (m, expected);
    }

    [Fact]
    public void TheGradientIsPyTorchsFakeQuantisation()
    {
        var (model, expected) = AssertPyTorchsFakeQuantisation(Fixture("qdq_grad"), Env.Fixture("ops-quant/qdq_input.npy"), Env.Fixture("ops-quant/qdq_grad"));
        model.Dispose();
        // Inputs that quantise outside [0, 255] (saturated) get no gradient, as in PyTorch: some do here.
        Assert.Contains(expected, v => v == 0);
    }

    [Fact]
    public void TorchvisionsQuantisedMobileNetGivesPyTorchsPredictions()
    {
        var input = Npy.Read(Env.Fixture("ops-quant/tq_input.npy"));
        var reference = Npy.Read(Env.Fixture("ops-quant/tq_mobilenet_v2.logits.npy")).Data;
        using var model = Env.LoadOnnx(new OnnxOptions { Path = Fixture("tq_mobilenet_v2") });
        using var scope = NewDisposeScope();
        var x = input.ToTensor().requires_grad_(true);
        var y = model.Forward(x);
        // PyTorch runs integer kernels (qnnpack) where the graph has float operators between the pairs: a value may land
        // one quantisation step apart; the predictions agree.
        Assert.Equal(Env.Data(y.argmax(1)), tensor(reference).view(y.shape).argmax(1).to(ScalarType.Float32).data<float>().ToArray());
        Assert.True(Env.RelL2(Env.Data(y), reference) <= 0.05, $"logits: {Env.RelL2(Env.Data(y), reference):E2} from PyTorch's");
        // Gradient-based methods work on it: the input gradient of the predicted class is not zero.
        var g = CheckedOps.Grad([y.max(1).values.sum()], [x])[0];
        Assert.True(g.abs().sum().item<float>() > 0);
        // The onnx-runtime backend runs it with ONNX Runtime's integer kernels: the same predictions.
        using var ort = Env.LoadOrt(new OnnxOptions { Path = Fixture("tq_mobilenet_v2") });
        Assert.Equal(Env.Data(y.argmax(1)), Env.Data(ort.Forward(input.ToTensor()).argmax(1)));
    }

    [Fact]
    public void AZeroPointComputedInTheGraphIsRefused()
    {
        var m = global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixture("qdq_uint8_relu")));
        m.Graph.Node.Insert(0, new global::Onnx.NodeProto { OpType = "Identity", Input = { "z" }, Output = { "z_computed" }, Name = "id" });
        foreach (var n in m.Graph.Node.Where(n => n.OpType == "QuantizeLinear")) n.Input[2] = "z_computed";
        var path = Path.Combine(Env.TempDir(), "qdq_zero_point_computed.onnx");
        File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(m));
        var e = Assert.Throws<LoupeException>(() => Env.LoadOnnx(new OnnxOptions { Path = path }).Dispose());
        Assert.Contains("its zero point is computed in the graph", e.Message);
    }

    /// <summary>A model whose output has no gradient (here the integers of a QuantizeLinear; an argmax output is the same)
    /// fails a gradient method with a message: libtorch's error used to end the process.</summary>
    [Fact]
    public void AGradientMethodOnAnOutputWithoutGradientFailsTheStepNotTheProcess()
    {
        using var model = Env.LoadOnnx(new OnnxOptions { Path = Fixture("q_standalone") });
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(2 * 3 * 8 * 8, 2, 0.1), [2, 3, 8, 8]);
        var ctx = new Loupe.Testing.TensorContext(model, x, 2, new Loupe.Testing.Top1Target());
        var e = Assert.Throws<LoupeException>(() => new Loupe.Analysis.Decisions.Saliency().Attribute(new Loupe.Analysis.Decisions.SaliencyOptions(), new AttributionInput(ctx, x, null)));
        Assert.Contains("the score has no gradient", e.Message);
    }
}
