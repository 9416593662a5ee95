using Loupe.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Loupe.Models.TorchSharp;

// DenseNet-BC (Huang et al. 2017) with torchvision 0.14's module tree; built by ModernCnns.Build (its architecture table).

/// <summary>DenseNet's layer: BN → ReLU → 1×1 conv (4·growth) → BN → ReLU → 3×3 conv (growth), on the concatenation of
/// the block's input and the earlier layers' outputs (<c>norm1</c>, <c>relu1</c>, <c>conv1</c>, <c>norm2</c>,
/// <c>relu2</c>, <c>conv2</c> as torchvision names them).</summary>
public sealed class DenseLayer : Module<Tensor, Tensor>, IGraphForm
{
    readonly Module<Tensor, Tensor> norm1, relu1, conv1, norm2, relu2, conv2;

    public DenseLayer(long input, long growth) : base("_DenseLayer")
    {
        norm1 = BatchNorm2d(input); relu1 = ReLU(); conv1 = Conv2d(input, 4 * growth, 1, bias: false);
        norm2 = BatchNorm2d(4 * growth); relu2 = ReLU(); conv2 = Conv2d(4 * growth, growth, 3, padding: 1, bias: false);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(conv2.call(relu2.call(norm2.call(conv1.call(relu1.call(norm1.call(x)))))));
    }

    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        foreach (var child in new[] { "norm1", "relu1", "conv1", "norm2", "relu2", "conv2" }) input = GraphExport.Child(this, name, child, input, nodes);
        return input;
    }
}

/// <summary>DenseNet's block: each layer (<c>denselayer1</c>…) reads the concatenation of the block's input and the
/// earlier layers' outputs; the block returns the concatenation of all of them.</summary>
public sealed class DenseBlock : Module<Tensor, Tensor>, IGraphForm
{
    readonly DenseLayer[] _layers;

    public DenseBlock(int layers, long input, long growth) : base("_DenseBlock")
    {
        _layers = Enumerable.Range(0, layers).Select(i => new DenseLayer(input + i * growth, growth)).ToArray();
        for (int i = 0; i < layers; i++) register_module($"denselayer{i + 1}", _layers[i]);
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var features = new List<Tensor> { x };
        foreach (var layer in _layers) features.Add(layer.call(cat(features, 1)));
        return scope.MoveToOuter(cat(features, 1));
    }

    /// <summary>Each layer reads the concatenation (<c>denselayerK.cat</c>) of the block's input and the earlier layers'
    /// outputs; the block's output is the concatenation of all of them, under the block's name.</summary>
    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        var features = new List<int> { input };
        for (int i = 0; i < _layers.Length; i++)
        {
            var layer = GraphExport.Join(name, $"denselayer{i + 1}");
            int joined = features.Count == 1 ? input : GraphExport.Add(nodes, new GraphNode(GraphExport.Join(layer, "cat"), GraphOp.Concat, [.. features]) { Axis = 1 });
            features.Add(GraphExport.Emit(_layers[i], layer, joined, nodes));
        }
        return GraphExport.Add(nodes, new GraphNode(name, GraphOp.Concat, [.. features]) { Axis = 1 });
    }
}

/// <summary>DenseNet-BC: stem (<c>conv0</c>, <c>norm0</c>, <c>relu0</c>, <c>pool0</c>), dense blocks with transitions
/// (BN, ReLU, 1×1 conv halving the channels, 2×2 average pool) between them, <c>norm5</c>, then a ReLU, global average
/// pool and the <c>classifier</c> (as torchvision's forward: the last ReLU is functional, not a module).</summary>
public sealed class DenseNet : Module<Tensor, Tensor>, IGraphForm
{
    readonly Module<Tensor, Tensor> features, classifier;

    public DenseNet(long growth, int[] blocks, long initial, int numClasses) : base("DenseNet")
    {
        var layers = new List<(string, Module<Tensor, Tensor>)>
        {
            ("conv0", Conv2d(3, initial, 7, stride: 2, padding: 3, bias: false)), ("norm0", BatchNorm2d(initial)), ("relu0", ReLU()),
            ("pool0", MaxPool2d(3, stride: 2, padding: 1)),
        };
        long channels = initial;
        for (int i = 0; i < blocks.Length; i++)
        {
            layers.Add(($"denseblock{i + 1}", new DenseBlock(blocks[i], channels, growth)));
            channels += blocks[i] * growth;
            if (i == blocks.Length - 1) break;
            layers.Add(($"transition{i + 1}", Sequential(("norm", BatchNorm2d(channels)), ("relu", ReLU()),
                ("conv", Conv2d(channels, channels / 2, 1, bias: false)), ("pool", AvgPool2d(2, stride: 2)))));
            channels /= 2;
        }
        layers.Add(("norm5", BatchNorm2d(channels)));
        features = Sequential(layers.ToArray());
        classifier = Linear(channels, numClasses);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var pooled = functional.adaptive_avg_pool2d(functional.relu(features.call(x)), [1, 1]).flatten(1);
        return scope.MoveToOuter(classifier.call(pooled));
    }

    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        var h = GraphExport.Child(this, name, "features", input, nodes);
        h = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "relu"), GraphOp.Relu, [h]));
        h = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "avgpool"), GraphOp.AdaptiveAvgPool, [h]) { Kernel = [1, 1] });
        h = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "flatten"), GraphOp.Flatten, [h]));
        return GraphExport.Child(this, name, "classifier", h, nodes);
    }
}
