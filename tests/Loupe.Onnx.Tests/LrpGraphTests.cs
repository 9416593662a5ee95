using Loupe.Abstractions;
using Loupe.Analysis.Decisions;
using Loupe.Models.Onnx;
using Loupe.Models.TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Onnx.Tests;

/// <summary><c>lrp</c> on the onnx backend's graph form: the same map as the TorchSharp resnet18 (whose batch norms the
/// canonizer merges, where the export already folded them) and as the PyTorch reference
/// (tests/fixtures/make_lrp_fixtures.py); exported families with concatenations and grouped convolutions; a clear
/// error for operators without a graph form.</summary>
public class LrpGraphTests
{
    static float[] Map(IModel model, Tensor x, LrpOptions options)
    {
        using var scope = NewDisposeScope();
        Tensor y;
        using (no_grad()) y = model.Forward(x);
        var relevance = nn.functional.one_hot(y.argmax(1), y.shape[1]).to(ScalarType.Float32);
        return Env.Data(Lrp.Relevance(model, model.DefaultInput, options, x, relevance, y));
    }

    [Theory]
    [InlineData("epsilon-gamma-box", LrpComposite.EpsilonGammaBox)]
    [InlineData("epsilon-alpha2-beta1", LrpComposite.EpsilonAlpha2Beta1)]
    public void TorchVisionResNet18AndItsOnnxExportGiveTheSameMap(string fixture, LrpComposite composite)
    {
        var path = ModelTests.ResNetWithHashWeights();
        using var onnx = Env.LoadOnnx(new OnnxOptions { Path = path, Mean = [0.485f, 0.456f, 0.406f], Std = [0.229f, 0.224f, 0.225f] });
        using var tv = new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = "resnet18", NumClasses = 10 }, Env.Context);
        ModelTests.SetHashWeights((TorchModel)tv);
        using var scope = NewDisposeScope();
        // Both graph forms: 20 batch norms (merged by the canonizer) and 8 residual sums.
        foreach (var graph in new[] { ((IModelGraphSource)onnx).Graph(), ((IModelGraphSource)tv).Graph() })
        {
            Assert.Equal(20, graph.Nodes.Count(n => n.Op == GraphOp.BatchNorm));
            Assert.Equal(8, graph.Nodes.Count(n => n.Op == GraphOp.Add));
        }
        var x = Npy.Read(Env.LoupeFixture("arch_input_64.npy")).ToTensor();
        var options = new LrpOptions { Composite = composite };
        var fromOnnx = Map(onnx, x, options);
        var fromTv = Map(tv, x, options);
        var reference = Npy.Read(Env.LoupeFixture($"lrp_r18_{fixture}.npy")).Data;
        Assert.True(Env.RelL2(fromOnnx, fromTv) <= 1e-4, $"onnx vs torchvision: {Env.RelL2(fromOnnx, fromTv):E2}");
        Assert.True(Env.RelL2(fromOnnx, reference) <= 1e-4, $"onnx vs PyTorch: {Env.RelL2(fromOnnx, reference):E2}");
    }

    /// <summary>Per-layer rules name layers by module path on both backends: the ONNX export's node names
    /// (<c>/layer1/layer1.0/conv1/Conv</c>) resolve to the same layers as torchvision's modules, under Zennit's
    /// conventions (its batch norms merged) and Captum's (each batch norm a layer of its own, one given IdentityRule).</summary>
    [Theory]
    [InlineData(LrpConvention.Zennit)]
    [InlineData(LrpConvention.Captum)]
    public void PerLayerRulesNameTheSameLayersOnTheOnnxExport(LrpConvention convention)
    {
        var path = ModelTests.ResNetWithHashWeights();
        using var onnx = Env.LoadOnnx(new OnnxOptions { Path = path, Mean = [0.485f, 0.456f, 0.406f], Std = [0.229f, 0.224f, 0.225f] });
        using var tv = new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = "resnet18", NumClasses = 10 }, Env.Context);
        ModelTests.SetHashWeights((TorchModel)tv);
        using var scope = NewDisposeScope();
        var x = Npy.Read(Env.LoupeFixture("arch_input_64.npy")).ToTensor();
        LrpLayerRule[] rules = convention == LrpConvention.Zennit
            ? [new() { Layer = "conv1", Rule = LrpRuleKind.Flat }, new() { Layer = "layer2.0.downsample.0", Rule = LrpRuleKind.Gamma, Gamma = 1 }, new() { Layer = "fc", Rule = LrpRuleKind.Epsilon, Epsilon = 0.5 }]
            : [new() { Layer = "layer1.0.conv1", Rule = LrpRuleKind.Gamma }, new() { Layer = "layer3.1.bn2", Rule = LrpRuleKind.Pass }, new() { Layer = "fc", Rule = LrpRuleKind.Alpha1Beta0, ZeroBias = true }];
        var options = new LrpOptions { Convention = convention, Rules = rules };
        var fromOnnx = Map(onnx, x, options);
        var fromTv = Map(tv, x, options);
        var without = Map(tv, x, options with { Rules = null });
        Assert.True(Env.RelL2(fromOnnx, fromTv) <= 1e-4, $"onnx vs torchvision: {Env.RelL2(fromOnnx, fromTv):E2}");
        Assert.True(Env.RelL2(fromTv, without) > 1e-2, $"the rules changed the map by only {Env.RelL2(fromTv, without):E2}");
    }

    /// <summary>With Captum's conventions (every layer LRP-ε, relevance × the target's output) and ε → 0, LRP of a ReLU
    /// network is gradient × input: each layer's relevance is its activation times the output's gradient at it.</summary>
    [Theory]
    [InlineData("resnext")]        // grouped convolutions, residual sums
    [InlineData("squeezenet")]     // concatenated expand branches
    [InlineData("googlenet")]      // inception branches
    [InlineData("vgg_bn")]
    public void CaptumEpsilonToZeroIsGradientTimesInputOnExportedFamilies(string name)
    {
        var r = FamilyTests.Reference.Read(FamilyTests.Folder, name);
        using var model = Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(FamilyTests.Folder, name + ".onnx") });
        using var scope = NewDisposeScope();
        LrpZeroIsGradientTimesInput(model, tensor(Env.SinInput(2L * 3 * r.Size * r.Size), [2, 3, r.Size, r.Size]), name);
    }

    /// <summary>LRP-ε (Captum's conventions, ε = 1e-12) of the top class on <paramref name="x"/> against gradient × input
    /// (relative L2 ≤ 1e-3).</summary>
    static void LrpZeroIsGradientTimesInput(IModel model, Tensor input, string name)
    {
        var x = input.requires_grad_(true);
        var y = model.Forward(x);
        var top = y.argmax(1, keepdim: true);
        var picked = y.gather(1, top);
        var gxi = Env.Data(x * CheckedOps.Grad([picked.sum()], [x])[0]);
        var relevance = nn.functional.one_hot(top.squeeze(1), y.shape[1]).to(ScalarType.Float32) * picked.detach();
        var map = Env.Data(Lrp.Relevance(model, model.DefaultInput, new LrpOptions { Convention = LrpConvention.Captum, Epsilon = 1e-12 }, x.detach(), relevance, y.detach()));
        Assert.True(Env.RelL2(map, gxi) <= 1e-3, $"{name}: LRP-0 vs gradient × input rel-L2 {Env.RelL2(map, gxi):E2}");
    }

    /// <summary>The same on the graph form Loupe's ShuffleNet v2 module writes on the torchvision backend (a ReLU
    /// network): each unit's channel halves are narrows and its shuffle a permutation, through which the relevance moves
    /// with the values.</summary>
    [Fact]
    public void CaptumEpsilonToZeroIsGradientTimesInputOnShuffleNet()
    {
        using var model = new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = "shufflenet_v2_x0_5", NumClasses = 10 }, Env.Context);
        ModelTests.SetHashWeights((TorchModel)model);
        using var scope = NewDisposeScope();
        LrpZeroIsGradientTimesInput(model, Npy.Read(Env.LoupeFixture("arch_input_64.npy")).ToTensor(), "shufflenet");
    }

    [Fact]
    public void AnOperatorWithoutAGraphFormIsNamed()
    {
        // ViT's attention: a MatMul of two activations, a Softmax, ...
        using var model = Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(FamilyTests.Folder, "vit.onnx") });
        var e = Assert.Throws<LoupeException>(() => ((IModelGraphSource)model).Graph());
        Assert.Contains("has no model-graph form", e.Message);
        Assert.Contains("vit.onnx", e.Message);
    }
}
