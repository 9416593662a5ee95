using Loupe.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Loupe.Models.TorchSharp;

/// <summary>torchvision's ConvNeXt (Liu et al. 2022), EfficientNet V1/V2 (Tan &amp; Le 2019, 2021) and DenseNet (Huang et
/// al. 2017), which TorchVision for .NET does not have, written for TorchSharp with torchvision 0.14's module tree: the same state_dict names and
/// shapes, so PyTorch checkpoints load by name, and the same forward in eval mode (stochastic depth and dropout are
/// identities there and have no parameters; tests compare the logits with PyTorch's on formula weights). DenseNet's
/// modules are in DenseNet.cs.</summary>
public static class ModernCnns
{
    /// <summary>The architectures of this file.</summary>
    public static readonly string[] Architectures =
    [
        "convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
        "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
        "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
        "densenet121", "densenet161", "densenet169", "densenet201",
    ];

    /// <summary>Builds <paramref name="architecture"/> (one of <see cref="Architectures"/>) with
    /// <paramref name="numClasses"/> outputs, or null for another name.</summary>
    public static Module<Tensor, Tensor>? Build(string architecture, int numClasses) => architecture switch
    {
        "convnext_tiny" => new ConvNeXt([96, 192, 384, 768], [3, 3, 9, 3], numClasses),
        "convnext_small" => new ConvNeXt([96, 192, 384, 768], [3, 3, 27, 3], numClasses),
        "convnext_base" => new ConvNeXt([128, 256, 512, 1024], [3, 3, 27, 3], numClasses),
        "convnext_large" => new ConvNeXt([192, 384, 768, 1536], [3, 3, 27, 3], numClasses),
        "efficientnet_b0" => EfficientNet.V1(1.0, 1.0, 1e-5, numClasses),
        "efficientnet_b1" => EfficientNet.V1(1.0, 1.1, 1e-5, numClasses),
        "efficientnet_b2" => EfficientNet.V1(1.1, 1.2, 1e-5, numClasses),
        "efficientnet_b3" => EfficientNet.V1(1.2, 1.4, 1e-5, numClasses),
        "efficientnet_b4" => EfficientNet.V1(1.4, 1.8, 1e-5, numClasses),
        "efficientnet_b5" => EfficientNet.V1(1.6, 2.2, 1e-3, numClasses),
        "efficientnet_b6" => EfficientNet.V1(1.8, 2.6, 1e-3, numClasses),
        "efficientnet_b7" => EfficientNet.V1(2.0, 3.1, 1e-3, numClasses),
        "efficientnet_v2_s" => EfficientNet.V2(EfficientNet.V2Small, numClasses),
        "efficientnet_v2_m" => EfficientNet.V2(EfficientNet.V2Medium, numClasses),
        "efficientnet_v2_l" => EfficientNet.V2(EfficientNet.V2Large, numClasses),
        "densenet121" => new DenseNet(32, [6, 12, 24, 16], 64, numClasses),
        "densenet161" => new DenseNet(48, [6, 12, 36, 24], 96, numClasses),
        "densenet169" => new DenseNet(32, [6, 12, 32, 32], 64, numClasses),
        "densenet201" => new DenseNet(32, [6, 12, 48, 32], 64, numClasses),
        _ => null,
    };

    /// <summary><paramref name="body"/>(x), plus x when <paramref name="residual"/> (an inverted residual block's sum).</summary>
    internal static Tensor Residual(Module<Tensor, Tensor> body, Tensor x, bool residual)
    {
        if (!residual) return body.call(x);
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(body.call(x) + x);
    }

    /// <summary>Conv → norm (→ activation) as torchvision's Conv2dNormActivation (a Sequential: "0", "1", "2"), padding
    /// (k − 1)/2, no convolution bias when there is a norm.</summary>
    internal static Sequential ConvNormActivation(long input, long output, long kernel, long stride, long groups, Module<Tensor, Tensor> norm, Module<Tensor, Tensor>? activation)
    {
        var layers = new List<Module<Tensor, Tensor>> { Conv2d(input, output, kernel, stride: stride, padding: (kernel - 1) / 2, groups: groups, bias: false), norm };
        if (activation is not null) layers.Add(activation);
        return Sequential(layers.ToArray());
    }
}

/// <summary>LayerNorm over the channels of an N×C×H×W tensor (torchvision's LayerNorm2d: a LayerNorm of the channels-last
/// view); parameters <c>weight</c> and <c>bias</c>.</summary>
public sealed class LayerNorm2d : Module<Tensor, Tensor>, IGraphForm
{
    readonly Parameter weight, bias;
    readonly long _channels;
    readonly double _eps;

    public LayerNorm2d(long channels, double eps = 1e-6) : base("LayerNorm2d")
    {
        _channels = channels;
        _eps = eps;
        weight = new Parameter(ones(channels));
        bias = new Parameter(zeros(channels));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = functional.layer_norm(x.permute(0, 2, 3, 1), [_channels], weight, bias, _eps).permute(0, 3, 1, 2);
        return scope.MoveToOuter(y);
    }

    /// <summary>Channels last, the layer norm (<c>norm</c>), channels first again under the module's name.</summary>
    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        var h = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "channels_last"), GraphOp.Permute, [input]) { Dims = [0, 2, 3, 1] });
        h = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "norm"), GraphOp.LayerNorm, [h]) { Weight = weight, Bias = bias, Eps = _eps });
        return GraphExport.Add(nodes, new GraphNode(name, GraphOp.Permute, [h]) { Dims = [0, 3, 1, 2] });
    }
}

/// <summary>torchvision's Permute module.</summary>
public sealed class Permute(long[] dims) : Module<Tensor, Tensor>("Permute")
{
    /// <summary>The new order of the dimensions.</summary>
    public long[] Dims => dims;

    /// <inheritdoc/>
    public override Tensor forward(Tensor x) => x.permute(dims);
}

/// <summary>ConvNeXt's block: x + γ · (7×7 depthwise conv → LayerNorm → Linear 4C → GELU → Linear C), channels last
/// between the permutes; <c>block</c> (Sequential 0–6) and <c>layer_scale</c> (C×1×1) as torchvision names them.</summary>
public sealed class CNBlock : Module<Tensor, Tensor>, IGraphForm
{
    readonly Module<Tensor, Tensor> block;
    readonly Parameter layer_scale;

    public CNBlock(long dim) : base("CNBlock")
    {
        block = Sequential(
            Conv2d(dim, dim, 7, padding: 3, groups: dim, bias: true), new Permute([0, 2, 3, 1]), LayerNorm(dim, eps: 1e-6),
            Linear(dim, 4 * dim), GELU(), Linear(4 * dim, dim), new Permute([0, 3, 1, 2]));
        layer_scale = new Parameter(full(dim, 1, 1, 1e-6f));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(layer_scale * block.call(x) + x);
    }

    /// <summary>The block, its product by <c>layer_scale</c> (a constant factor) and the sum with the input under the
    /// module's name.</summary>
    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        var h = GraphExport.Child(this, name, "block", input, nodes);
        h = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "layer_scale"), GraphOp.Mul, [h]) { Weight = layer_scale });
        return GraphExport.Add(nodes, new GraphNode(name, GraphOp.Add, [h, input]));
    }
}

/// <summary>ConvNeXt: stem (4×4 conv, stride 4, LayerNorm2d), four stages of <see cref="CNBlock"/>s with LayerNorm2d +
/// 2×2 stride-2 conv between them (<c>features.0</c>–<c>features.7</c>), global average pool, classifier
/// (LayerNorm2d, Flatten, Linear).</summary>
public sealed class ConvNeXt : Module<Tensor, Tensor>, IGraphForm
{
    readonly Module<Tensor, Tensor> features, avgpool, classifier;

    public ConvNeXt(long[] dims, int[] depths, int numClasses) : base("ConvNeXt")
    {
        // the stem: torchvision's Conv2dNormActivation with padding 0 and a bias, no activation
        var layers = new List<Module<Tensor, Tensor>> { Sequential(Conv2d(3, dims[0], 4, stride: 4, padding: 0L, bias: true), new LayerNorm2d(dims[0])) };
        for (int i = 0; i < dims.Length; i++)
        {
            layers.Add(Sequential(Enumerable.Range(0, depths[i]).Select(_ => (Module<Tensor, Tensor>)new CNBlock(dims[i])).ToArray()));
            if (i + 1 < dims.Length) layers.Add(Sequential(new LayerNorm2d(dims[i]), Conv2d(dims[i], dims[i + 1], 2, stride: 2)));
        }
        features = Sequential(layers.ToArray());
        avgpool = AdaptiveAvgPool2d(1);
        classifier = Sequential(new LayerNorm2d(dims[^1]), Flatten(1), Linear(dims[^1], numClasses));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(classifier.call(avgpool.call(features.call(x))));
    }

    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        var h = GraphExport.Child(this, name, "features", input, nodes);
        h = GraphExport.Child(this, name, "avgpool", h, nodes);
        return GraphExport.Child(this, name, "classifier", h, nodes);
    }
}

/// <summary>torchvision's SqueezeExcitation: x · σ(fc2(act(fc1(avgpool(x))))), <c>fc1</c>, <c>fc2</c> 1×1 convolutions
/// (act: SiLU in EfficientNet, ReLU in RegNet).</summary>
public sealed class SqueezeExcitation : Module<Tensor, Tensor>
{
    readonly Module<Tensor, Tensor> avgpool, fc1, fc2, activation, scale_activation;

    /// <summary>SE over <paramref name="channels"/> through <paramref name="squeeze"/>, with SiLU between the two
    /// convolutions (EfficientNet's) or, <paramref name="relu"/>, ReLU (RegNet's).</summary>
    public SqueezeExcitation(long channels, long squeeze, bool relu = false) : base("SqueezeExcitation")
    {
        avgpool = AdaptiveAvgPool2d(1);
        fc1 = Conv2d(channels, squeeze, 1);
        fc2 = Conv2d(squeeze, channels, 1);
        activation = relu ? ReLU() : SiLU();
        scale_activation = Sigmoid();
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var scale = scale_activation.call(fc2.call(activation.call(fc1.call(avgpool.call(x)))));
        return scope.MoveToOuter(scale * x);
    }
}

/// <summary>EfficientNet's MBConv (expand 1×1 → depthwise k×k → squeeze-and-excitation → project 1×1) and
/// EfficientNet V2's FusedMBConv (expand k×k → project 1×1, or one k×k), with the residual sum where stride is 1 and
/// the channels match; <c>block</c> as torchvision names it.</summary>
public sealed class MBConv : Module<Tensor, Tensor>, IGraphForm
{
    readonly Module<Tensor, Tensor> block;
    readonly bool _residual;

    public MBConv(EfficientNet.Stage cnf, long input, long stride, double eps) : base(cnf.Fused ? "FusedMBConv" : "MBConv")
    {
        _residual = stride == 1 && input == cnf.Output;
        long expanded = EfficientNet.Divisible(input * cnf.Expand);
        BatchNorm2d Norm(long c) => BatchNorm2d(c, eps: eps);
        var layers = new List<Module<Tensor, Tensor>>();
        if (cnf.Fused)
        {
            if (expanded != input)
            {
                layers.Add(ModernCnns.ConvNormActivation(input, expanded, cnf.Kernel, stride, 1, Norm(expanded), SiLU()));
                layers.Add(ModernCnns.ConvNormActivation(expanded, cnf.Output, 1, 1, 1, Norm(cnf.Output), null));
            }
            else layers.Add(ModernCnns.ConvNormActivation(input, cnf.Output, cnf.Kernel, stride, 1, Norm(cnf.Output), SiLU()));
        }
        else
        {
            if (expanded != input) layers.Add(ModernCnns.ConvNormActivation(input, expanded, 1, 1, 1, Norm(expanded), SiLU()));
            layers.Add(ModernCnns.ConvNormActivation(expanded, expanded, cnf.Kernel, stride, expanded, Norm(expanded), SiLU()));
            layers.Add(new SqueezeExcitation(expanded, Math.Max(1, input / 4)));
            layers.Add(ModernCnns.ConvNormActivation(expanded, cnf.Output, 1, 1, 1, Norm(cnf.Output), null));
        }
        block = Sequential(layers.ToArray());
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x) => ModernCnns.Residual(block, x, _residual);

    /// <summary>The block, and its sum with the input under the module's name where the block is residual.</summary>
    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        var h = GraphExport.Child(this, name, "block", input, nodes);
        return _residual ? GraphExport.Add(nodes, new GraphNode(name, GraphOp.Add, [h, input])) : h;
    }
}

/// <summary>EfficientNet V1 (b0–b7: width and depth multipliers of the b0 table) and V2 (s, m, l): stem 3×3 stride 2
/// (<c>features.0</c>), one Sequential of blocks per stage, head 1×1 conv (<c>features.N</c>), global average pool,
/// classifier (Dropout, Linear).</summary>
public sealed class EfficientNet : Module<Tensor, Tensor>, IGraphForm
{
    /// <summary>One stage: expansion ratio, kernel, stride, input and output channels, number of blocks, fused (V2).</summary>
    public sealed record Stage(double Expand, long Kernel, long Stride, long Input, long Output, int Layers, bool Fused = false);

    static readonly Stage[] B0 =
    [
        new(1, 3, 1, 32, 16, 1), new(6, 3, 2, 16, 24, 2), new(6, 5, 2, 24, 40, 2), new(6, 3, 2, 40, 80, 3),
        new(6, 5, 1, 80, 112, 3), new(6, 5, 2, 112, 192, 4), new(6, 3, 1, 192, 320, 1),
    ];

    internal static readonly Stage[] V2Small =
    [
        new(1, 3, 1, 24, 24, 2, true), new(4, 3, 2, 24, 48, 4, true), new(4, 3, 2, 48, 64, 4, true),
        new(4, 3, 2, 64, 128, 6), new(6, 3, 1, 128, 160, 9), new(6, 3, 2, 160, 256, 15),
    ];

    internal static readonly Stage[] V2Medium =
    [
        new(1, 3, 1, 24, 24, 3, true), new(4, 3, 2, 24, 48, 5, true), new(4, 3, 2, 48, 80, 5, true),
        new(4, 3, 2, 80, 160, 7), new(6, 3, 1, 160, 176, 14), new(6, 3, 2, 176, 304, 18), new(6, 3, 1, 304, 512, 5),
    ];

    internal static readonly Stage[] V2Large =
    [
        new(1, 3, 1, 32, 32, 4, true), new(4, 3, 2, 32, 64, 7, true), new(4, 3, 2, 64, 96, 7, true),
        new(4, 3, 2, 96, 192, 10), new(6, 3, 1, 192, 224, 19), new(6, 3, 2, 224, 384, 25), new(6, 3, 1, 384, 640, 7),
    ];

    /// <summary>The nearest multiple of 8 (at least 8, and not 10 % below <paramref name="v"/>): the channel rounding of
    /// the TensorFlow original that torchvision keeps.</summary>
    internal static long Divisible(double v)
    {
        long rounded = Math.Max(8, (long)(v + 4) / 8 * 8);
        return rounded < 0.9 * v ? rounded + 8 : rounded;
    }

    /// <summary>V1 with width and depth multipliers of the b0 table; BatchNorm ε (1e-3 for b5–b7).</summary>
    public static EfficientNet V1(double width, double depth, double eps, int numClasses) =>
        new(B0.Select(s => s with { Input = Divisible(s.Input * width), Output = Divisible(s.Output * width), Layers = (int)Math.Ceiling(s.Layers * depth) }).ToArray(), null, eps, numClasses);

    /// <summary>V2 (BatchNorm ε 1e-3, head of 1280 channels).</summary>
    public static EfficientNet V2(Stage[] stages, int numClasses) => new(stages, 1280, 1e-3, numClasses);

    readonly Module<Tensor, Tensor> features, avgpool, classifier;

    EfficientNet(Stage[] stages, long? lastChannel, double eps, int numClasses) : base("EfficientNet")
    {
        var layers = new List<Module<Tensor, Tensor>> { ModernCnns.ConvNormActivation(3, stages[0].Input, 3, 2, 1, BatchNorm2d(stages[0].Input, eps: eps), SiLU()) };
        foreach (var s in stages)
            layers.Add(Sequential(Enumerable.Range(0, s.Layers).Select(k => (Module<Tensor, Tensor>)new MBConv(s, k == 0 ? s.Input : s.Output, k == 0 ? s.Stride : 1, eps)).ToArray()));
        long last = lastChannel ?? 4 * stages[^1].Output;
        layers.Add(ModernCnns.ConvNormActivation(stages[^1].Output, last, 1, 1, 1, BatchNorm2d(last, eps: eps), SiLU()));
        features = Sequential(layers.ToArray());
        avgpool = AdaptiveAvgPool2d(1);
        classifier = Sequential(Dropout(0.2), Linear(last, numClasses));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(classifier.call(avgpool.call(features.call(x)).flatten(1)));
    }

    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        var h = GraphExport.Child(this, name, "features", input, nodes);
        h = GraphExport.Child(this, name, "avgpool", h, nodes);
        h = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "flatten"), GraphOp.Flatten, [h]));
        return GraphExport.Child(this, name, "classifier", h, nodes);
    }
}
