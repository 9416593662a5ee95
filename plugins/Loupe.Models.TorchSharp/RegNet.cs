using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Loupe.Models.TorchSharp;

/// <summary>torchvision's RegNet X and Y (Radosavovic et al. 2020), which TorchVision for .NET does not have, with
/// torchvision 0.14's module tree, state_dict names and eval-mode forward (tests compare the logits with PyTorch's on
/// formula weights). The stage widths, depths and group widths are torchvision's, as its BlockParams computes them from
/// (depth, w₀, w_a, w_m, group width) — a quantisation in float32 written down here per architecture rather than
/// recomputed (tests/fixtures/make_arch_keys.py checks every table against torchvision's modules).</summary>
public sealed class RegNet : Module<Tensor, Tensor>, IGraphForm
{
    /// <summary>One stage: output width, blocks, group width.</summary>
    public readonly record struct Stage(long Width, int Depth, long GroupWidth);

    static readonly Dictionary<string, (Stage[] Stages, bool Se)> Tables = new()
    {
        ["regnet_y_400mf"] = ([new(48, 1, 8), new(104, 3, 8), new(208, 6, 8), new(440, 6, 8)], true),
        ["regnet_y_800mf"] = ([new(64, 1, 16), new(144, 3, 16), new(320, 8, 16), new(784, 2, 16)], true),
        ["regnet_y_1_6gf"] = ([new(48, 2, 24), new(120, 6, 24), new(336, 17, 24), new(888, 2, 24)], true),
        ["regnet_y_3_2gf"] = ([new(72, 2, 24), new(216, 5, 24), new(576, 13, 24), new(1512, 1, 24)], true),
        ["regnet_y_8gf"] = ([new(224, 2, 56), new(448, 4, 56), new(896, 10, 56), new(2016, 1, 56)], true),
        ["regnet_y_16gf"] = ([new(224, 2, 112), new(448, 4, 112), new(1232, 11, 112), new(3024, 1, 112)], true),
        ["regnet_y_32gf"] = ([new(232, 2, 232), new(696, 5, 232), new(1392, 12, 232), new(3712, 1, 232)], true),
        ["regnet_y_128gf"] = ([new(528, 2, 264), new(1056, 7, 264), new(2904, 17, 264), new(7392, 1, 264)], true),
        ["regnet_x_400mf"] = ([new(32, 1, 16), new(64, 2, 16), new(160, 7, 16), new(400, 12, 16)], false),
        ["regnet_x_800mf"] = ([new(64, 1, 16), new(128, 3, 16), new(288, 7, 16), new(672, 5, 16)], false),
        ["regnet_x_1_6gf"] = ([new(72, 2, 24), new(168, 4, 24), new(408, 10, 24), new(912, 2, 24)], false),
        ["regnet_x_3_2gf"] = ([new(96, 2, 48), new(192, 6, 48), new(432, 15, 48), new(1008, 2, 48)], false),
        ["regnet_x_8gf"] = ([new(80, 2, 80), new(240, 5, 120), new(720, 15, 120), new(1920, 1, 120)], false),
        ["regnet_x_16gf"] = ([new(256, 2, 128), new(512, 6, 128), new(896, 13, 128), new(2048, 1, 128)], false),
        ["regnet_x_32gf"] = ([new(336, 2, 168), new(672, 7, 168), new(1344, 13, 168), new(2520, 1, 168)], false),
    };

    /// <summary>The RegNet architectures torchvision 0.14 names.</summary>
    public static readonly string[] Architectures = [.. Tables.Keys];

    /// <summary>Builds <paramref name="architecture"/> with <paramref name="numClasses"/> outputs, or null for another name.</summary>
    public static Module<Tensor, Tensor>? Build(string architecture, int numClasses) =>
        Tables.TryGetValue(architecture, out var t) ? new RegNet(t.Stages, t.Se, numClasses) : null;

    readonly Module<Tensor, Tensor> stem, trunk_output, avgpool, fc;

    RegNet(Stage[] stages, bool se, int numClasses) : base("RegNet")
    {
        const long StemWidth = 32;
        stem = ModernCnns.ConvNormActivation(3, StemWidth, 3, 2, 1, BatchNorm2d(StemWidth), ReLU());
        long width = StemWidth;
        var named = new List<(string, Module<Tensor, Tensor>)>();
        for (int s = 0; s < stages.Length; s++)
        {
            var blocks = new List<(string, Module<Tensor, Tensor>)>();
            for (int i = 0; i < stages[s].Depth; i++)
            {
                blocks.Add(($"block{s + 1}-{i}", new ResBottleneckBlock(i == 0 ? width : stages[s].Width, stages[s].Width, i == 0 ? 2 : 1, stages[s].GroupWidth, se)));
            }
            named.Add(($"block{s + 1}", Sequential(blocks.ToArray())));
            width = stages[s].Width;
        }
        trunk_output = Sequential(named.ToArray());
        avgpool = AdaptiveAvgPool2d(1);
        fc = Linear(width, numClasses);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(fc.call(avgpool.call(trunk_output.call(stem.call(x))).flatten(1)));
    }

    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        var h = GraphExport.Child(this, name, "stem", input, nodes);
        h = GraphExport.Child(this, name, "trunk_output", h, nodes);
        h = GraphExport.Child(this, name, "avgpool", h, nodes);
        h = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "flatten"), GraphOp.Flatten, [h]));
        return GraphExport.Child(this, name, "fc", h, nodes);
    }
}

/// <summary>RegNet's residual bottleneck block: ReLU(proj(x) + f(x)), or ReLU(x + f(x)) when the shape is kept; f is
/// 1×1 (a) → grouped 3×3 of stride s (b) → squeeze-and-excitation of ¼ the block's input width (se, RegNet Y) → 1×1
/// without activation (c), each a Conv2dNormActivation.</summary>
public sealed class ResBottleneckBlock : Module<Tensor, Tensor>, IGraphForm
{
    readonly Module<Tensor, Tensor>? proj;
    readonly Module<Tensor, Tensor> f, activation;

    public ResBottleneckBlock(long input, long output, long stride, long groupWidth, bool se) : base("ResBottleneckBlock")
    {
        if (input != output || stride != 1) proj = ModernCnns.ConvNormActivation(input, output, 1, stride, 1, BatchNorm2d(output), null);
        var layers = new List<(string, Module<Tensor, Tensor>)>
        {
            ("a", ModernCnns.ConvNormActivation(input, output, 1, 1, 1, BatchNorm2d(output), ReLU())),
            ("b", ModernCnns.ConvNormActivation(output, output, 3, stride, output / groupWidth, BatchNorm2d(output), ReLU())),
        };
        if (se) layers.Add(("se", new SqueezeExcitation(output, (long)Math.Round(0.25 * input, MidpointRounding.ToEven), relu: true)));
        layers.Add(("c", ModernCnns.ConvNormActivation(output, output, 1, 1, 1, BatchNorm2d(output), null)));
        f = Sequential(layers.ToArray());
        activation = ReLU();
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var sum = proj is not null ? proj.call(x) + f.call(x) : x + f.call(x);
        return scope.MoveToOuter(activation.call(sum));
    }

    /// <summary>f, the projection (or the input), their sum (<c>add</c>) and the block's ReLU, which takes the block's
    /// name (as a torchvision ResNet block's); RegNet Y's squeeze-and-excitation is a product node (<see cref="GraphExport"/>).</summary>
    int IGraphForm.EmitGraph(string name, int input, List<GraphNode> nodes)
    {
        var h = GraphExport.Child(this, name, "f", input, nodes);
        var identity = proj is not null ? GraphExport.Child(this, name, "proj", input, nodes) : input;
        var sum = GraphExport.Add(nodes, new GraphNode(GraphExport.Join(name, "add"), GraphOp.Add, [h, identity]));
        return GraphExport.Add(nodes, new GraphNode(name, GraphOp.Relu, [sum]));
    }
}
