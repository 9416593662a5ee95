using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using Loupe.Analysis.Cam;
using Loupe.Models.Onnx;
using Loupe.Testing;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>The onnx backend's graph form (what full-grad and LRP run on) of PyTorch's exports of the torchvision
/// families (<see cref="FamilyTests"/>): its logits and input gradients against PyTorch's own — squeeze-and-excitation's
/// products (Mul of two values), SiLU as x · σ(x), HardSigmoid with the exporter's α and β, HardSwish, ConvNeXt's
/// Transpose, LayerNormalization, exact GELU (Div, Erf, Add, Mul, Mul: one operator) and layer scale (Mul by a
/// constant) — and full-grad on it.</summary>
public class GraphFormFamilyTests
{
    /// <summary>The exports with a graph form: every family but the transformers, GoogLeNet and Inception v3 (their
    /// input transform and auxiliary branches), and ShuffleNet (its channel shuffle as Reshape/Transpose of the batch's
    /// own size); ConvNeXt at opset 17 (LayerNormalization) and 13 (its layer norm spelled out in reductions, read back as
    /// one).</summary>
    public static TheoryData<string> WithGraphForm() =>
    [
        "alexnet", "convnext", "convnext_op13", "densenet", "efficientnet", "efficientnet_op13", "efficientnet_v2", "mnasnet", "mobilenet_v2", "mobilenet_v3",
        "mobilenet_v3_op13", "mobilenet_v3_small", "regnet", "resnet", "resnext", "squeezenet", "squeezenet1_1", "vgg", "vgg_bn", "wide_resnet",
    ];

    [Theory]
    [MemberData(nameof(WithGraphForm))]
    public void GraphFormGivesPyTorchsLogitsAndInputGradients(string name)
    {
        var r = FamilyTests.Reference.Read(FamilyTests.Folder, name);
        using var model = Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(FamilyTests.Folder, name + ".onnx") });
        using var scope = NewDisposeScope();
        var graph = ((IModelGraphSource)model).Graph();
        var x = tensor(Env.SinInput(2L * 3 * r.Size * r.Size), [2, 3, r.Size, r.Size]).requires_grad_(true);
        var y = graph.Run(x)[^1];
        Assert.Equal(r.Logits.Shape, y.shape);
        double scale = r.Logits.Data.Max(v => Math.Abs(v));
        double err = Env.Data(y).Zip(r.Logits.Data).Max(p => Math.Abs(p.First - p.Second)) / scale;
        Assert.True(err <= 1e-4, $"{name}: the graph form's logits differ by {err:E2} (relative to the largest)");
        var g = CheckedOps.Grad([y.gather(1, tensor(r.Classes).view(-1, 1)).sum()], [x])[0];
        double gerr = Env.RelL2(Env.Data(g), r.Grad.Data), bound = Math.Max(1e-3, 10 * r.Tolerance);
        Assert.True(gerr <= bound, $"{name}: the graph form's input gradient rel-L2 {gerr:E2} > {bound:E2}");
    }

    /// <summary>full-grad on the exports whose graph form multiplies activations: it validates, runs (its own check
    /// compares the graph with the model's output) and gives finite maps scaled to [0, 1]; LRP under Captum's conventions
    /// is refused naming the first node without a rule (under Zennit's it takes them: LrpSqueezeExcitationTests; ConvNeXt
    /// is refused in both).</summary>
    [Theory]
    [InlineData("efficientnet")]
    [InlineData("efficientnet_v2")]
    [InlineData("mobilenet_v3")]
    [InlineData("mobilenet_v3_op13")]
    [InlineData("convnext")]
    [InlineData("convnext_op13")]
    public void FullGradRunsWhereLrpIsRefused(string name)
    {
        var r = FamilyTests.Reference.Read(FamilyTests.Folder, name);
        using var model = Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(FamilyTests.Folder, name + ".onnx") });
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(2L * 3 * r.Size * r.Size), [2, 3, r.Size, r.Size]);
        var context = new AnalysisValidationContext(model.Layers, model.Capabilities, model);
        Assert.Empty(new FullGrad().Validate(new FullGradOptions(), context));
        var map = Env.Data(new FullGrad().Attribute(new FullGradOptions(), new AttributionInput(new TensorContext(model, x, 2, new Top1Target()), x, null)).Map);
        Assert.All(map, v => Assert.True(v is >= 0 and <= 1.0001f, $"{name}: {v}"));
        Assert.True(map.Max() - map.Min() > 0.5, $"{name}: a flat map");
        var errors = new Loupe.Analysis.Decisions.Lrp().Validate(new Loupe.Analysis.Decisions.LrpOptions { Convention = Loupe.Analysis.Decisions.LrpConvention.Captum }, context).ToList();
        Assert.Contains(errors, e => e.Contains("has no LRP rule here") && e.StartsWith("lrp: node '"));
        // Under Zennit's conventions (the default) LRP takes the graph: finite maps, not all zero.
        var lrp = new Loupe.Analysis.Decisions.Lrp();
        Assert.Empty(lrp.Validate(new Loupe.Analysis.Decisions.LrpOptions(), context));
        var relevance = Env.Data(lrp.Attribute(new Loupe.Analysis.Decisions.LrpOptions(), new AttributionInput(new TensorContext(model, x, 2, new Top1Target()), x, null)).Map);
        Assert.All(relevance, v => Assert.True(float.IsFinite(v), $"{name}: {v}"));
        Assert.Contains(relevance, v => v != 0);
    }
}
