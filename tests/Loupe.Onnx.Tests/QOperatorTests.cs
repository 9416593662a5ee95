using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using Loupe.Models.Onnx;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>Quantised graphs in QOperator form (tests/fixtures/onnx/make_qop_fixtures.py, and torchvision's quantised
/// MobileNetV2 as ONNX Runtime saves it after optimising): the onnx backend rewrites the integer operators into QDQ form
/// at load and gives ONNX Runtime's integer kernels' values (a quantisation step apart at most), PyTorch's fake
/// quantisation's values and input gradient on a network, and on the saved MobileNetV2 the same logits and input
/// gradients as on the QDQ graph it was saved from.</summary>
public class QOperatorTests
{
    static string Fixture(string name) => Env.Fixture($"ops-qop/{name}.onnx");

    public static TheoryData<string> Forms() => Env.ModelsIn("ops-qop");

    /// <summary>The scale of the DequantizeLinear that writes y (one step of the output), or null for a float output.</summary>
    static float? OutputStep(string path)
    {
        var g = global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)).Graph;
        var last = g.Node.Single(n => n.Output.Contains("y"));
        if (last.OpType != "DequantizeLinear") return null;
        var scale = g.Initializer.Single(t => t.Name == last.Input[1]);
        return OnnxFile.ToTensor(scale, path).item<float>();
    }

    [Theory]
    [MemberData(nameof(Forms))]
    public void ValuesAreOnnxRuntimesIntegerKernelsWithinAStepAndGradientsReachTheInput(string name)
    {
        long[] shape = [2, 3, 8, 8];
        var x = Env.SinInput(2 * 3 * 8 * 8, 2, 0.1);
        using var scope = NewDisposeScope();
        // ONNX Runtime runs an exact copy of the file where its uint8×int8 products would saturate (OrtExactIntegers).
        string folder = Path.Combine(Path.GetTempPath(), $"loupe-qop-{Environment.ProcessId}");
        var (model, xt, y, expected) = Env.ForwardBesideOrt(Fixture(name), x, shape, OrtExactIntegers.Reference(Fixture(name), folder));
        using var _ = model;
        var actual = Env.Data(y);
        if (OutputStep(Fixture(name)) is { } step)
        {
            // ONNX Runtime's integer kernels requantise with their own fixed-point or float arithmetic: a value at a
            // rounding boundary lands a step apart (a network carries such a step on through its layers).
            double allowed = step * (name == "qop_chain" ? 3.01 : 1.01);
            double worst = actual.Zip(expected, (a, b) => Math.Abs(a - b)).Max();
            Assert.True(worst <= allowed, $"{name}: {worst:G4} from ONNX Runtime's integer kernels (one step is {step:G4})");
            // Most are equal — but ONNX Runtime's integer linear Resize rounds its interpolation its own way (within a step).
            int same = actual.Zip(expected, (a, b) => Math.Abs(a - b) <= step * 1e-3).Count(v => v);
            Assert.True(same >= (name == "int_resize_linear" ? 0.5 : 0.8) * actual.Length, $"{name}: only {same} of {actual.Length} values equal ONNX Runtime's");
        }
        else Assert.True(Env.RelL2(actual, expected) <= 1e-5, $"{name}: rel L2 {Env.RelL2(actual, expected):E2} from ONNX Runtime");
        var g = CheckedOps.Grad([(y * cos(arange(y.numel()).to(ScalarType.Float32)).view(y.shape)).sum()], [xt], allowUnused: true)[0];
        Assert.True(g is not null && !g.IsInvalid && g.abs().sum().item<float>() > 0, $"{name}: no gradient reaches the input");
    }

    [Fact]
    public void ANetworkGivesPyTorchsFakeQuantisationAndItsInputGradient()
    {
        var (model, _) = QuantizationTests.AssertPyTorchsFakeQuantisation(Fixture("qop_chain"), Env.Fixture("ops-qop/qop_input.npy"), Env.Fixture("ops-qop/qop_chain"));
        using (model)
            // The integer operators are float layers: convolutions, the pool between them, the sum, the classifier.
            Assert.Superset(new HashSet<string> { "Conv", "MaxPool", "Add", "GlobalAveragePool", "Flatten", "Reshape", "Gemm" }, model.Layers.Select(l => l.Kind).ToHashSet());
    }

    /// <summary>Dynamic quantisation (DynamicQuantizeLinear → MatMulInteger → Cast → Mul by the scales): the values and
    /// the input gradient of PyTorch's fake quantisation with the scale and zero point of ONNX's formula.</summary>
    [Fact]
    public void DynamicQuantisationGivesPyTorchsFakeQuantisationAndItsInputGradient() =>
        QuantizationTests.AssertPyTorchsFakeQuantisation(Fixture("dyn_matmulinteger"), Env.Fixture("ops-qop/qop_input.npy"), Env.Fixture("ops-qop/dyn_matmulinteger")).Model.Dispose();

    /// <summary>torchvision's quantised MobileNetV2 (QDQ, as torch.onnx.export writes it) saved by ONNX Runtime after
    /// optimising at ORT_ENABLE_EXTENDED: QLinearConv, QLinearAdd, QLinearGlobalAveragePool, QGemm and an integer Flatten.</summary>
    [Fact]
    public void OnnxRuntimesSavedQuantisedMobileNetGivesTheQdqGraphsLogitsAndGradients()
    {
        string qdq = Env.Fixture("ops-quant/tq_mobilenet_v2.onnx");
        string saved = OrtOptimisedGraphTests.Optimised(qdq, GraphOptimizationLevel.ORT_ENABLE_EXTENDED);
        var ops = global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(saved)).Graph.Node.Select(n => n.OpType).ToHashSet();
        Assert.Superset(new HashSet<string> { "QLinearConv", "QLinearAdd", "QLinearGlobalAveragePool", "QGemm" }, ops);
        Assert.DoesNotContain("Conv", ops);
        var input = Npy.Read(Env.Fixture("ops-quant/tq_input.npy"));
        using var exported = Env.LoadOnnx(new OnnxOptions { Path = qdq });
        using var optimised = Env.LoadOnnx(new OnnxOptions { Path = saved });
        using var scope = NewDisposeScope();
        var x1 = input.ToTensor().requires_grad_(true);
        var x2 = input.ToTensor().requires_grad_(true);
        var y1 = exported.Forward(x1);
        var y2 = optimised.Forward(x2);
        Assert.True(Env.RelL2(Env.Data(y2), Env.Data(y1)) <= 1e-5, $"logits: {Env.RelL2(Env.Data(y2), Env.Data(y1)):E2} from the QDQ graph's");
        var g1 = CheckedOps.Grad([y1.max(1).values.sum()], [x1])[0];
        var g2 = CheckedOps.Grad([y2.max(1).values.sum()], [x2])[0];
        Assert.True(g2.abs().sum().item<float>() > 0);
        Assert.True(Env.RelL2(Env.Data(g2), Env.Data(g1)) <= 1e-4, $"input gradient: {Env.RelL2(Env.Data(g2), Env.Data(g1)):E2} from the QDQ graph's");
        // ONNX Runtime's integer kernels on the saved graph: the same predictions.
        var (ort, _) = Env.OrtRun(saved, input.Data, input.Shape);
        Assert.Equal(Env.Data(y2.argmax(1)), Env.Data(tensor(ort).view(y2.shape).argmax(1)));
        // The layers are the exported graph's, names and kinds (ONNX Runtime kept the exporter's names on its integer
        // operators; the ReLUs it removed before a quantisation starting at 0 are back).
        Assert.Equal(exported.Layers.Select(l => (l.Name, l.Kind)), optimised.Layers.Select(l => (l.Name, l.Kind)));
    }

    static string Edited(string fixture, string name, Action<global::Onnx.ModelProto> edit)
    {
        var m = global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixture(fixture)));
        edit(m);
        var path = Path.Combine(Env.TempDir(), name + ".onnx");
        File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(m));
        return path;
    }

    [Fact]
    public void OnnxRuntimesNhwcLayoutIsRefusedByName()
    {
        var path = Edited("qlinearglobalaveragepool", "qop_channels_last", m =>
            m.Graph.Node.Single(n => n.OpType == "QLinearGlobalAveragePool").Attribute.Single(a => a.Name == "channels_last").I = 1);
        var message = Env.Refusal(path);
        Assert.Contains("com.microsoft.QLinearGlobalAveragePool", message);
        Assert.Contains("channels_last", message);
    }

    [Fact]
    public void ASoftmaxOfAnotherOpsetsAxisSemanticsIsRefusedByName()
    {
        var path = Edited("qlinearsoftmax", "qop_softmax_opset", m =>
            m.Graph.Node.Single(n => n.OpType == "QLinearSoftmax").Attribute.Single(a => a.Name == "opset").I = 11);
        Assert.Contains("QLinearSoftmax", Env.Refusal(path));
    }

    [Fact]
    public void TheOnnxRuntimeBackendRunsOnnxRuntimesIntegerOperatorsOnlyWhenAllowed()
    {
        var e = Assert.Throws<LoupeException>(() => Env.LoadOrt(new OnnxOptions { Path = Fixture("qlinearadd_broadcast") }).Dispose());
        Assert.Contains("contrib_operators", e.Message);
        using var ort = Env.LoadOrt(new OnnxOptions { Path = Fixture("qlinearadd_broadcast"), ContribOperators = true, FlattenOutput = false });
        using var scope = NewDisposeScope();
        var x = Env.SinInput(2 * 3 * 8 * 8, 2, 0.1);
        var y = ort.Forward(tensor(x, [2, 3, 8, 8]));
        var expected = Env.OrtRunAsWritten(Fixture("qlinearadd_broadcast"), x, [2, 3, 8, 8]).Data;
        Assert.True(Env.Data(y).Zip(expected, (a, b) => Math.Abs(a - b)).Max() <= 0.03 * 1.01);   // ONNX Runtime's own kernels (a step: 0.03)
    }
}
