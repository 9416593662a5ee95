using Loupe.Models.Onnx;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>PyTorch module paths resolve to the ONNX values their modules output (graphs from torch.onnx.export).</summary>
public class ModulePathTests
{
    [Fact]
    public void ResNetModulesHaveTorchvisionsOutputShapesAndFcIsTheLogits()
    {
        // families/resnet.onnx: ResNet(BasicBlock, [1, 1, 1, 1]) at 1/16 width, 64×64 input.
        using var model = Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(FamilyTests.Folder, "resnet.onnx") });
        var byName = model.Layers.ToDictionary(l => l.Name);
        Assert.Equal("module (Relu) = /layer4/layer4.0/relu_1/Relu_output_0", byName["layer4"].Kind);
        Assert.Equal("module (Relu) = /layer1/layer1.0/relu_1/Relu_output_0", byName["layer1.0"].Kind);
        using var scope = NewDisposeScope();
        using var cap = model.Capture(["layer1", "layer2", "layer3", "layer4", "maxpool", "fc", "layer1.0.conv2"], forGradients: false);
        var x = tensor(Env.SinInput(2 * 3 * 64 * 64), [2, 3, 64, 64]);
        var y = model.Forward(x);
        Assert.Equal([2L, 4, 16, 16], cap["layer1"].shape);
        Assert.Equal([2L, 8, 8, 8], cap["layer2"].shape);
        Assert.Equal([2L, 16, 4, 4], cap["layer3"].shape);
        Assert.Equal([2L, 32, 2, 2], cap["layer4"].shape);
        Assert.Equal([2L, 4, 16, 16], cap["maxpool"].shape);
        Assert.Equal([2L, 4, 16, 16], cap["layer1.0.conv2"].shape);
        Assert.Equal(Env.Data(y), Env.Data(cap["fc"]));
    }

    [Fact]
    public void NamesInsideUnnamedScopesAndAttentionBlocksAreQualified()
    {
        using var model = Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(FamilyTests.Folder, "swin.onnx") });
        var names = model.Layers.Select(l => l.Name).ToHashSet();
        Assert.Contains("features.1.1.attn", names);       // "/features/features.1/features.1.1/attn/..." → features.1.1.attn
        Assert.Contains("features.1.1.norm1", names);
        Assert.Contains("head", names);
        Assert.DoesNotContain("features.1.features.1.1", names);
    }

    [Fact]
    public void ChildrenOfANestedSequentialAreQualifiedByTheirParentsOwnName()
    {
        // ConvNeXt: "/features/features.1/features.1.0/block/block.2/LayerNormalization" → features.1.0.block.2.
        using var model = Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(FamilyTests.Folder, "convnext.onnx") });
        var layers = model.Layers.ToDictionary(l => l.Name, l => l.Kind);
        Assert.Equal("module (LayerNormalization) = /features/features.1/features.1.0/block/block.2/LayerNormalization_output_0", layers["features.1.0.block.2"]);
        Assert.Contains("features.1.0.block", layers.Keys);
        Assert.DoesNotContain("features.1.0.block.block.2", layers.Keys);
    }
}
