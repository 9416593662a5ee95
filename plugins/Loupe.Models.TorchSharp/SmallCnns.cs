using Loupe.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Loupe.Models.TorchSharp;

/// <summary>torchvision's SqueezeNet 1.0/1.1 (Iandola et al. 2016), ShuffleNet v2 ×0.5/×1.0/×1.5/×2.0 (Ma et al.
/// 2018) and MNASNet 0.5/0.75/1.0/1.3 (Tan et al. 2019, its B1 variant), which TorchVision for .NET does not have, with torchvision 0.14's module trees and state_dict names and its
/// eval-mode forward (tests compare the logits with PyTorch's on formula weights).</summary>
public static class SmallCnns
{
    /// <summary>The architectures of this file.</summary>
    public static readonly string[] Architectures =
        ["squeezenet1_0", "squeezenet1_1", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
         "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3"];

    /// <summary>Builds <paramref name="architecture"/> with <paramref name="numClasses"/> outputs, or null for another name.</summary>
    public static Module<Tensor, Tensor>? Build(string architecture, int numClasses) => architecture switch
    {
        "squeezenet1_0" => new SqueezeNet(false, numClasses),
        "squeezenet1_1" => new SqueezeNet(true, numClasses),
        "shufflenet_v2_x0_5" => new ShuffleNetV2([24, 48, 96, 192, 1024], numClasses),
        "shufflenet_v2_x1_0" => new ShuffleNetV2([24, 116, 232, 464, 1024], numClasses),
        "shufflenet_v2_x1_5" => new ShuffleNetV2([24, 176, 352, 704, 1024], numClasses),
        "shufflenet_v2_x2_0" => new ShuffleNetV2([24, 244, 488, 976, 2048], numClasses),
        "mnasnet0_5" => new MnasNet(0.5, numClasses),
        "mnasnet0_75" => new MnasNet(0.75, numClasses),
        "mnasnet1_0" => new MnasNet(1.0, numClasses),
        "mnasnet1_3" => new MnasNet(1.3, numClasses),
        _ => null,
    };
}

/// <summary>SqueezeNet's Fire module: squeeze 1×1 + ReLU, then the concatenation of expand 1×1 and expand 3×3, each + ReLU.</summary>
public sealed class Fire : Module<Tensor, Tensor>, IGraphForm
{
    readonly Module<Tensor, Tensor> squeeze, squeeze_activation, expand1x1, expand1x1_activation, expand3x3, expand3x3_activation;

    public Fire(long input, long squeezed, long expand1, long expand3) : base("Fire")
    {
        squeeze = Conv2d(input, squeezed, 1); squeeze_activation = ReLU();
        expand1x1 = Conv2d(squeezed, expand1, 1); expand1x1_activation = ReLU();
        expand3x3 = Conv2d(squeezed, expand3, 3, padding: 1); expand3x3_activation = ReLU();
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var s = squeeze_activation.call(squeeze.call(x));
        return scope.MoveToOuter(cat([expand1x1_activation.call(expand1x1.call(s)), expand3x3_activation.call(expand3x3.call(s))], 1));
    }

    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        int Run(string child, int from) => GraphExport.Child(this, name, child, from, nodes);
        var s = Run("squeeze_activation", Run("squeeze", input));
        var e1 = Run("expand1x1_activation", Run("expand1x1", s));
        var e3 = Run("expand3x3_activation", Run("expand3x3", s));
        return GraphExport.Add(nodes, new GraphNode(name, GraphOp.Concat, [e1, e3]) { Axis = 1 });
    }
}

/// <summary>SqueezeNet: <c>features</c> (conv, ReLU, ceil-mode max pools, Fire modules) and <c>classifier</c> (Dropout,
/// 1×1 conv to the classes, ReLU, global average pool), flattened.</summary>
public sealed class SqueezeNet : Module<Tensor, Tensor>, IGraphForm
{
    readonly Module<Tensor, Tensor> features, classifier;

    public SqueezeNet(bool version11, int numClasses) : base("SqueezeNet")
    {
        Module<Tensor, Tensor> Pool() => MaxPool2d(3, stride: 2, ceil_mode: true);
        features = version11
            ? Sequential(Conv2d(3, 64, 3, stride: 2), ReLU(), Pool(), new Fire(64, 16, 64, 64), new Fire(128, 16, 64, 64), Pool(),
                new Fire(128, 32, 128, 128), new Fire(256, 32, 128, 128), Pool(), new Fire(256, 48, 192, 192), new Fire(384, 48, 192, 192),
                new Fire(384, 64, 256, 256), new Fire(512, 64, 256, 256))
            : Sequential(Conv2d(3, 96, 7, stride: 2), ReLU(), Pool(), new Fire(96, 16, 64, 64), new Fire(128, 16, 64, 64),
                new Fire(128, 32, 128, 128), Pool(), new Fire(256, 32, 128, 128), new Fire(256, 48, 192, 192), new Fire(384, 48, 192, 192),
                new Fire(384, 64, 256, 256), Pool(), new Fire(512, 64, 256, 256));
        classifier = Sequential(Dropout(0.5), Conv2d(512, numClasses, 1), ReLU(), AdaptiveAvgPool2d(1));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(classifier.call(features.call(x)).flatten(1));
    }

    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        var h = GraphExport.Child(this, name, "classifier", GraphExport.Child(this, name, "features", input, nodes), nodes);
        return GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "flatten"), GraphOp.Flatten, [h]));
    }
}

/// <summary>ShuffleNet v2's unit: stride 1 — half the channels through <c>branch2</c> (1×1, depthwise 3×3, 1×1), the
/// other half passed on; stride 2 — <c>branch1</c> (depthwise 3×3, 1×1) and <c>branch2</c> both on the input; then the
/// two halves concatenated and their channels shuffled in two groups.</summary>
public sealed class ShuffleUnit : Module<Tensor, Tensor>, IGraphForm
{
    readonly Module<Tensor, Tensor> branch1, branch2;
    readonly long _stride, _half;

    public ShuffleUnit(long input, long output, long stride) : base("InvertedResidual")
    {
        _stride = stride;
        long half = _half = output / 2;
        Module<Tensor, Tensor> Depthwise(long c) => Conv2d(c, c, 3, stride: stride, padding: 1, groups: c, bias: false);
        branch1 = stride > 1
            ? Sequential(Depthwise(input), BatchNorm2d(input), Conv2d(input, half, 1, bias: false), BatchNorm2d(half), ReLU())
            : Sequential();
        branch2 = Sequential(Conv2d(stride > 1 ? input : half, half, 1, bias: false), BatchNorm2d(half), ReLU(),
            Depthwise(half), BatchNorm2d(half), Conv2d(half, half, 1, bias: false), BatchNorm2d(half), ReLU());
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        Tensor joined;
        if (_stride == 1)
        {
            var halves = x.chunk(2, 1);
            joined = cat([halves[0], branch2.call(halves[1])], 1);
        }
        else joined = cat([branch1.call(x), branch2.call(x)], 1);
        long n = joined.shape[0], c = joined.shape[1], h = joined.shape[2], w = joined.shape[3];
        return scope.MoveToOuter(joined.view(n, 2, c / 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w));
    }

    /// <summary>The halves (<c>chunk0</c>, <c>chunk1</c>: narrows of the channels) or the two branches, their
    /// concatenation (<c>cat</c>) and the shuffle, which takes the unit's name.</summary>
    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        int first, second;
        if (_stride == 1)
        {
            long half = _half;
            first = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "chunk0"), GraphOp.Narrow, [input]) { Axis = 1, Start = 0, Length = half });
            int rest = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "chunk1"), GraphOp.Narrow, [input]) { Axis = 1, Start = half, Length = half });
            second = GraphExport.Child(this, name, "branch2", rest, nodes);
        }
        else
        {
            first = GraphExport.Child(this, name, "branch1", input, nodes);
            second = GraphExport.Child(this, name, "branch2", input, nodes);
        }
        int joined = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "cat"), GraphOp.Concat, [first, second]) { Axis = 1 });
        return GraphExport.Add(nodes, new GraphNode(name, GraphOp.ChannelShuffle, [joined]) { Groups = 2 });
    }
}

/// <summary>ShuffleNet v2: <c>conv1</c>, max pool, <c>stage2</c>–<c>stage4</c> (4, 8, 4 units), <c>conv5</c>, the mean over
/// positions, <c>fc</c>.</summary>
public sealed class ShuffleNetV2 : Module<Tensor, Tensor>, IGraphForm
{
    readonly Module<Tensor, Tensor> conv1, maxpool, stage2, stage3, stage4, conv5, fc;

    public ShuffleNetV2(long[] channels, int numClasses) : base("ShuffleNetV2")
    {
        conv1 = Sequential(Conv2d(3, channels[0], 3, stride: 2, padding: 1, bias: false), BatchNorm2d(channels[0]), ReLU());
        maxpool = MaxPool2d(3, stride: 2, padding: 1);
        Module<Tensor, Tensor> Stage(long input, long output, int repeats) =>
            Sequential(Enumerable.Range(0, repeats).Select(i => (Module<Tensor, Tensor>)new ShuffleUnit(i == 0 ? input : output, output, i == 0 ? 2 : 1)).ToArray());
        stage2 = Stage(channels[0], channels[1], 4);
        stage3 = Stage(channels[1], channels[2], 8);
        stage4 = Stage(channels[2], channels[3], 4);
        conv5 = Sequential(Conv2d(channels[3], channels[4], 1, bias: false), BatchNorm2d(channels[4]), ReLU());
        fc = Linear(channels[4], numClasses);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = conv5.call(stage4.call(stage3.call(stage2.call(maxpool.call(conv1.call(x))))));
        return scope.MoveToOuter(fc.call(y.mean([2, 3])));
    }

    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        var h = input;
        foreach (var child in new[] { "conv1", "maxpool", "stage2", "stage3", "stage4", "conv5" }) h = GraphExport.Child(this, name, child, h, nodes);
        h = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "mean"), GraphOp.AdaptiveAvgPool, [h]) { Kernel = [1, 1] });
        h = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "flatten"), GraphOp.Flatten, [h]));
        return GraphExport.Child(this, name, "fc", h, nodes);
    }
}

/// <summary>MNASNet's inverted residual: 1×1 expand + BN + ReLU, k×k depthwise + BN + ReLU, 1×1 project + BN
/// (<c>layers</c>), plus the input when the shape is kept.</summary>
public sealed class MnasResidual : Module<Tensor, Tensor>, IGraphForm
{
    readonly Module<Tensor, Tensor> layers;
    readonly bool _residual;

    public MnasResidual(long input, long output, long kernel, long stride, long expansion) : base("_InvertedResidual")
    {
        long mid = input * expansion;
        _residual = input == output && stride == 1;
        layers = Sequential(Conv2d(input, mid, 1, bias: false), BatchNorm2d(mid), ReLU(),
            Conv2d(mid, mid, kernel, stride: stride, padding: kernel / 2, groups: mid, bias: false), BatchNorm2d(mid), ReLU(),
            Conv2d(mid, output, 1, bias: false), BatchNorm2d(output));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x) => ModernCnns.Residual(layers, x, _residual);

    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        var h = GraphExport.Child(this, name, "layers", input, nodes);
        return _residual ? GraphExport.Add(nodes, new GraphNode(name, GraphOp.Add, [h, input])) : h;
    }
}

/// <summary>MNASNet (B1): <c>layers</c> (stem, separable conv, six stacks of inverted residuals, 1×1 conv to 1280),
/// the mean over positions, <c>classifier</c> (Dropout, Linear). Depths scaled by α and rounded to multiples of 8 as
/// torchvision's (up unless within 10 %).</summary>
public sealed class MnasNet : Module<Tensor, Tensor>, IGraphForm
{
    readonly Module<Tensor, Tensor> layers, classifier;

    public MnasNet(double alpha, int numClasses) : base("MNASNet")
    {
        var d = new[] { 32, 16, 24, 40, 80, 96, 192, 320 }.Select(v => EfficientNet.Divisible(v * alpha)).ToArray();
        Module<Tensor, Tensor> Stack(long input, long output, long kernel, long stride, long expansion, int repeats) =>
            Sequential(Enumerable.Range(0, repeats).Select(i => (Module<Tensor, Tensor>)new MnasResidual(i == 0 ? input : output, output, kernel, i == 0 ? stride : 1, expansion)).ToArray());
        layers = Sequential(
            Conv2d(3, d[0], 3, stride: 2, padding: 1, bias: false), BatchNorm2d(d[0]), ReLU(),
            Conv2d(d[0], d[0], 3, stride: 1, padding: 1, groups: d[0], bias: false), BatchNorm2d(d[0]), ReLU(),
            Conv2d(d[0], d[1], 1, bias: false), BatchNorm2d(d[1]),
            Stack(d[1], d[2], 3, 2, 3, 3), Stack(d[2], d[3], 5, 2, 3, 3), Stack(d[3], d[4], 5, 2, 6, 3),
            Stack(d[4], d[5], 3, 1, 6, 2), Stack(d[5], d[6], 5, 2, 6, 4), Stack(d[6], d[7], 3, 1, 6, 1),
            Conv2d(d[7], 1280, 1, bias: false), BatchNorm2d(1280), ReLU());
        classifier = Sequential(Dropout(0.2), Linear(1280, numClasses));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(classifier.call(layers.call(x).mean([2, 3])));
    }

    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        var h = GraphExport.Child(this, name, "layers", input, nodes);
        h = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "mean"), GraphOp.AdaptiveAvgPool, [h]) { Kernel = [1, 1] });
        h = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "flatten"), GraphOp.Flatten, [h]));
        return GraphExport.Child(this, name, "classifier", h, nodes);
    }
}
