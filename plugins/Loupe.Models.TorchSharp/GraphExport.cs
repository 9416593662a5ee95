using Loupe.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Loupe.Models.TorchSharp;

/// <summary>Describes a TorchSharp module tree as a <see cref="ModelGraph"/>. Leaf modules map to their operator;
/// containers whose forward is known are unrolled: <see cref="Sequential"/> (in order), TorchVision's ResNet
/// (stem, layers, average pool, flatten, fc), BasicBlock and Bottleneck (the residual sum is an explicit
/// <see cref="GraphOp.Add"/> node followed by the block's final ReLU), VGG and AlexNet (features, average pool, flatten,
/// classifier) and the demo CNN; Loupe's own torchvision modules describe themselves (<see cref="IGraphForm"/>: RegNet,
/// DenseNet, MNASNet, SqueezeNet, ShuffleNet v2, EfficientNet, ConvNeXt); squeeze-and-excitation (a <see cref="GraphOp.Mul"/> of the input and
/// its scale) and TorchVision for .NET's MobileNet v2 and v3 are unrolled by type name. The registered modules are read, never the rewrites that run in their place, so the
/// graph holds the model's own weights (batch norms unfolded). Anything else is refused, naming the module.</summary>
static class GraphExport
{
    public static ModelGraph Export(nn.Module root)
    {
        var nodes = new List<GraphNode>();
        Emit(root, "", -1, nodes);
        return new ModelGraph(nodes);
    }

    static Dictionary<string, nn.Module> Children(nn.Module m) => m.named_children().ToDictionary(c => c.name, c => c.module);

    static nn.Module Child(Dictionary<string, nn.Module> children, string name, string owner) =>
        children.GetValueOrDefault(name) ?? throw new LoupeException($"model graph: module '{owner}' has no child '{name}'");

    internal static string Join(string prefix, string name) => prefix.Length == 0 ? name : prefix + "." + name;

    internal static int Add(List<GraphNode> nodes, GraphNode node) { nodes.Add(node); return nodes.Count - 1; }

    /// <summary>The nodes of <paramref name="module"/>'s child <paramref name="child"/> (module path
    /// <paramref name="name"/>.<paramref name="child"/>) reading node <paramref name="input"/>.</summary>
    internal static int Child(nn.Module module, string name, string child, int input, List<GraphNode> nodes) =>
        Emit(Child(Children(module), child, name), Join(name, child), input, nodes);

    static long[] Pair(long[]? v, long[] fallback) => v is null || v.Length == 0 ? fallback : v.Length == 1 ? [v[0], v[0]] : v;

    /// <summary>Appends the nodes of <paramref name="module"/> reading <paramref name="input"/>; returns its output node.</summary>
    internal static int Emit(nn.Module module, string name, int input, List<GraphNode> nodes)
    {
        var type = module.GetType().Name;
        switch (module)
        {
            case IGraphForm own:
                return own.EmitGraph(name, input, nodes);
            case Sequential seq:
                foreach (var (child, m) in seq.named_children()) input = Emit(m, Join(name, child), input, nodes);
                return input;
            case Conv2d c:
                if (c.padding is null) throw new LoupeException($"model graph: convolution '{name}' uses a padding mode without explicit sizes");
                return Add(nodes, new GraphNode(name, GraphOp.Conv, [input])
                {
                    Weight = c.weight, Bias = c.bias, Stride = Pair(c.stride, [1, 1]), Padding = Pair(c.padding, [0, 0]),
                    Dilation = Pair(c.dilation, [1, 1]), Groups = c.groups,
                });
            case Linear l:
                return Add(nodes, new GraphNode(name, GraphOp.Linear, [input]) { Weight = l.weight, Bias = l.bias });
            case BatchNorm2d bn:
                if (bn.weight is null || bn.bias is null || bn.running_mean is null || bn.running_var is null)
                    throw new LoupeException($"model graph: batch norm '{name}' needs affine parameters and running statistics");
                return Add(nodes, new GraphNode(name, GraphOp.BatchNorm, [input]) { Weight = bn.weight, Bias = bn.bias, Mean = bn.running_mean, Var = bn.running_var, Eps = bn.eps });
            case ReLU:
                return Add(nodes, new GraphNode(name, GraphOp.Relu, [input]));
            case ReLU6:
                return Add(nodes, new GraphNode(name, GraphOp.Clip, [input]) { Min = 0, Max = 6 });
            case Sigmoid:
                return Add(nodes, new GraphNode(name, GraphOp.Sigmoid, [input]));
            case SiLU:
                return Add(nodes, new GraphNode(name, GraphOp.Silu, [input]));
            case Hardswish:
                return Add(nodes, new GraphNode(name, GraphOp.Hardswish, [input]));
            case Hardsigmoid:
                return Add(nodes, new GraphNode(name, GraphOp.Hardsigmoid, [input]));
            case GELU g:
                return Add(nodes, new GraphNode(name, GraphOp.Gelu, [input]) { Tanh = g.approximate == GELU.Approximate.tanh });
            case LayerNorm ln:
                if (ln.normalized_shape.Length != 1) throw new LoupeException($"model graph: layer norm '{name}' normalises {ln.normalized_shape.Length} dimensions (the graph form: the last one)");
                return Add(nodes, new GraphNode(name, GraphOp.LayerNorm, [input]) { Weight = ln.weight, Bias = ln.bias, Eps = ln.eps });
            case Permute p:
                return Add(nodes, new GraphNode(name, GraphOp.Permute, [input]) { Dims = p.Dims });
            case MaxPool2d p:
            {
                var k = Pair(p.kernel_size, [1, 1]);
                return Add(nodes, new GraphNode(name, GraphOp.MaxPool, [input])
                {
                    Kernel = k, Stride = Pair(p.stride, k), Padding = Pair(p.padding, [0, 0]), Dilation = Pair(p.dilation, [1, 1]), CeilMode = p.ceil_mode,
                });
            }
            case AvgPool2d p:
            {
                var k = Pair(p.kernel_size, [1, 1]);
                return Add(nodes, new GraphNode(name, GraphOp.AvgPool, [input])
                {
                    Kernel = k, Stride = Pair(p.stride, k), Padding = Pair(p.padding, [0, 0]), CeilMode = p.ceil_mode, CountIncludePad = p.count_include_pad,
                });
            }
            case AdaptiveAvgPool2d p:
                return Add(nodes, new GraphNode(name, GraphOp.AdaptiveAvgPool, [input]) { Kernel = Pair(p.output_size, [1, 1]) });
            case Flatten:
                return Add(nodes, new GraphNode(name, GraphOp.Flatten, [input]));
            case Dropout or Identity:
                return Add(nodes, new GraphNode(name, GraphOp.Identity, [input]));
        }
        var children = Children(module);
        int Run(string child, int from) => Emit(Child(children, child, name), Join(name, child), from, nodes);
        switch (type)
        {
            case "ResNet":
            {
                var h = Run("conv1", input); h = Run("bn1", h); h = Run("relu", h); h = Run("maxpool", h);
                for (int i = 1; i <= 4; i++) h = Run("layer" + i, h);
                h = Run("avgpool", h);
                h = Add(nodes, new GraphNode(Join(name, "flatten"), GraphOp.Flatten, [h]));
                return Run("fc", h);
            }
            case "BasicBlock" or "Bottleneck":
            {
                int stages = type == "BasicBlock" ? 2 : 3;
                var h = input;
                for (int s = 1; s <= stages; s++)
                {
                    h = Run("conv" + s, h);
                    h = Run("bn" + s, h);
                    if (s < stages) h = Add(nodes, new GraphNode(Join(name, "relu" + s), GraphOp.Relu, [h]));
                }
                var identity = children.ContainsKey("downsample") ? Run("downsample", input) : input;
                var sum = Add(nodes, new GraphNode(Join(name, "add"), GraphOp.Add, [h, identity]));
                return Add(nodes, new GraphNode(name, GraphOp.Relu, [sum]));
            }
            case "VGG" or "AlexNet":
            {
                var h = Run("features", input);
                h = Run("avgpool", h);
                h = Add(nodes, new GraphNode(Join(name, "flatten"), GraphOp.Flatten, [h]));
                return Run("classifier", h);
            }
            case "SqueezeExcitation":
            {
                // x · scale_activation(fc2(activation(fc1(avgpool(x))))): Loupe's (EfficientNet, RegNet Y) and TorchVision
                // for .NET's (MobileNet v3); the product takes the module's name.
                var h = input;
                foreach (var child in new[] { "avgpool", "fc1", "activation", "fc2", "scale_activation" }) h = Run(child, h);
                return Add(nodes, new GraphNode(name, GraphOp.Mul, [input, h]));
            }
            case "InvertedResidual":
            {
                // TorchVision for .NET's MobileNet v2 (body "conv") and v3 (body "block") blocks: x + body(x) where the
                // block keeps its shape (its use_res_connect), the sum under the block's name.
                var body = Run(children.ContainsKey("block") ? "block" : "conv", input);
                return Residual(module) ? Add(nodes, new GraphNode(name, GraphOp.Add, [body, input])) : body;
            }
            case "MobileNetV2" or "MobileNetV3":
            {
                // features, global average pool (v2: functional; v3: the avgpool module), flatten, classifier
                var h = Run("features", input);
                h = children.ContainsKey("avgpool") ? Run("avgpool", h) : Add(nodes, new GraphNode(Join(name, "avgpool"), GraphOp.AdaptiveAvgPool, [h]) { Kernel = [1, 1] });
                h = Add(nodes, new GraphNode(Join(name, "flatten"), GraphOp.Flatten, [h]));
                return Run("classifier", h);
            }
            case "FashionCnn":
            {
                var h = input;
                foreach (var child in new[] { "conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "pool2", "conv3", "bn3", "relu3", "gap", "flatten", "fc" })
                    h = Run(child, h);
                return h;
            }
        }
        throw new LoupeException($"model graph: module '{(name.Length == 0 ? "(root)" : name)}' of type {type} has no graph form; supported: Conv2d, Linear, BatchNorm2d, ReLU, ReLU6, Sigmoid, SiLU, Hardswish, Hardsigmoid, GELU, LayerNorm (of the last dimension), Permute, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout, Identity, Sequential, ResNet/BasicBlock/Bottleneck, VGG, AlexNet, RegNet X and Y, DenseNet, MNASNet, SqueezeNet, ShuffleNet v2, MobileNet v2 and v3, EfficientNet v1 and v2, ConvNeXt and the demo CNN");
    }

    /// <summary>Whether a TorchVision for .NET inverted residual block adds its input (its private <c>use_res_connect</c>,
    /// read by reflection: TorchSharp is pinned, and the tests fail loudly if the field moves).</summary>
    static bool Residual(nn.Module block) =>
        block.GetType().GetField("use_res_connect", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance)?.GetValue(block) is bool b
            ? b : throw new LoupeException($"model graph: {block.GetType().Name} has no use_res_connect field this version of Loupe knows");
}

/// <summary>A module that writes its own graph form (its forward as graph nodes over its children).</summary>
interface IGraphForm
{
    /// <summary>Appends the module's nodes (module path <paramref name="name"/>) reading node <paramref name="input"/>;
    /// returns its output node.</summary>
    int EmitGraph(string name, int input, List<GraphNode> nodes);
}
