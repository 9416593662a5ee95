using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Loupe.Models.TorchSharp;

/// <summary>torchvision's MaxViT (Tu et al. 2022, <c>maxvit_t</c>, 224×224), which TorchVision for .NET does not have,
/// with torchvision 0.14's module tree, state_dict names and eval-mode forward: <c>stem</c> (3×3 stride 2 conv, batch
/// norm, GELU; 3×3 conv), four <c>blocks</c> of <c>layers</c>, each an MBConv (<c>layers.MBconv</c>), then attention
/// within 7×7 windows (<c>layers.window_attention</c>) and across a 7×7 grid (<c>layers.grid_attention</c>), and the
/// <c>classifier</c> (average pool, flatten, LayerNorm, Linear, tanh, Linear). Activations stay N×C×H×W between the
/// layers; each attention's softmax is a module (<c>…attn_layer.1.softmax</c>).</summary>
public sealed class MaxVit : Module<Tensor, Tensor>
{
    readonly Module<Tensor, Tensor> stem, blocks, classifier;

    MaxVit(int numClasses) : base("MaxVit")
    {
        const long Stem = 64, Partition = 7, HeadDim = 32;
        long[] channels = [64, 128, 256, 512];
        int[] layers = [2, 2, 5, 2];
        stem = Sequential(
            ModernCnns.ConvNormActivation(3, Stem, 3, 2, 1, BatchNorm2d(Stem, eps: 1e-3), GELU()),
            Sequential(Conv2d(Stem, Stem, 3, padding: 1)));
        long grid = 112;
        long input = Stem;
        var built = new List<Module<Tensor, Tensor>>();
        for (int b = 0; b < channels.Length; b++)
        {
            grid = (grid - 1) / 2 + 1;   // a 3×3 stride-2 convolution with padding 1
            built.Add(new MaxVitBlock(input, channels[b], layers[b], HeadDim, Partition, grid));
            input = channels[b];
        }
        blocks = Sequential(built.ToArray());
        classifier = Sequential(AdaptiveAvgPool2d(1), Flatten(), LayerNorm(input), Linear(input, input), Tanh(), Linear(input, numClasses, hasBias: false));
        RegisterComponents();
    }

    /// <summary>The torchvision configuration by name, or null.</summary>
    public static Module<Tensor, Tensor>? Build(string architecture, int numClasses) => architecture == "maxvit_t" ? new MaxVit(numClasses) : null;

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(classifier.call(blocks.call(stem.call(x))));
    }
}

/// <summary>A MaxViT block: its <c>layers</c>, the first of stride 2.</summary>
public sealed class MaxVitBlock : Module<Tensor, Tensor>
{
    readonly Module<Tensor, Tensor> layers;

    public MaxVitBlock(long input, long output, int count, long headDim, long partition, long grid) : base("MaxVitBlock")
    {
        layers = Sequential(Enumerable.Range(0, count).Select(i => (Module<Tensor, Tensor>)new MaxVitLayer(i == 0 ? input : output, output, i == 0 ? 2 : 1, headDim, partition, grid)).ToArray());
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x) => layers.call(x);
}

/// <summary>A MaxViT layer: <c>layers</c> = MBconv → window_attention → grid_attention.</summary>
public sealed class MaxVitLayer : Module<Tensor, Tensor>
{
    readonly Module<Tensor, Tensor> layers;

    public MaxVitLayer(long input, long output, long stride, long headDim, long partition, long grid) : base("MaxVitLayer")
    {
        layers = Sequential(
            ("MBconv", new MaxVitMBConv(input, output, stride)),
            ("window_attention", new PartitionAttention(output, headDim, partition, grid, window: true)),
            ("grid_attention", new PartitionAttention(output, headDim, partition, grid, window: false)));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x) => layers.call(x);
}

/// <summary>MaxViT's MBConv: proj(x) + layers(x), layers = pre_norm (batch norm) → conv_a (1×1 to 4C, BN, GELU) →
/// conv_b (depthwise 3×3 of the stride, BN, GELU) → squeeze_excitation (¼ C, SiLU) → conv_c (1×1 with bias); proj is
/// a 3×3 average pool of stride 2 and a 1×1 convolution with bias, the convolution alone, or nothing.</summary>
public sealed class MaxVitMBConv : Module<Tensor, Tensor>
{
    readonly Module<Tensor, Tensor>? proj;
    readonly Module<Tensor, Tensor> layers;

    public MaxVitMBConv(long input, long output, long stride) : base("MBConv")
    {
        if (stride != 1 || input != output)
            proj = stride == 2 ? Sequential(AvgPool2d(3, stride: 2, padding: 1), Conv2d(input, output, 1)) : Sequential(Conv2d(input, output, 1));
        long mid = output * 4, squeeze = output / 4;
        global::TorchSharp.Modules.BatchNorm2d Norm(long c) => BatchNorm2d(c, eps: 1e-3);
        layers = Sequential(
            ("pre_norm", Norm(input)),
            ("conv_a", ModernCnns.ConvNormActivation(input, mid, 1, 1, 1, Norm(mid), GELU())),
            ("conv_b", ModernCnns.ConvNormActivation(mid, mid, 3, stride, mid, Norm(mid), GELU())),
            ("squeeze_excitation", new SqueezeExcitation(mid, squeeze)),
            ("conv_c", Conv2d(mid, output, 1)));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var res = proj is not null ? proj.call(x) : x;
        return scope.MoveToOuter(res + layers.call(x));
    }
}

/// <summary>MaxViT's partition attention on N×C×H×W: the map cut into P×P windows (window: P = 7) or a 7×7 grid of
/// strided positions (grid: P = H/7, the window and group axes swapped), x + attn_layer(x) (LayerNorm, relative
/// positional attention, dropout) and x + mlp_layer(x) (LayerNorm, Linear 4C, GELU, Linear C) on the tokens, the map
/// put back together.</summary>
public sealed class PartitionAttention : Module<Tensor, Tensor>
{
    readonly Module<Tensor, Tensor> attn_layer, mlp_layer;
    readonly long _p;
    readonly bool _grid;

    public PartitionAttention(long channels, long headDim, long partition, long grid, bool window) : base("PartitionAttentionLayer")
    {
        _p = window ? partition : grid / partition;
        _grid = !window;
        attn_layer = Sequential(LayerNorm(channels), new RelativePositionalAttention(channels, headDim, partition), Dropout(0.0));
        mlp_layer = Sequential(LayerNorm(channels), Linear(channels, channels * 4), GELU(), Linear(channels * 4, channels), Dropout(0.0));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        long b = input.shape[0], c = input.shape[1], h = input.shape[2], w = input.shape[3], p = _p;
        if (h % p != 0 || w % p != 0) throw new LoupeException($"MaxViT: a {h}×{w} map does not split into {p}×{p} partitions (maxvit_t takes 224×224 inputs)");
        var x = input.reshape(b, c, h / p, p, w / p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, (h / p) * (w / p), p * p, c);
        if (_grid) x = x.transpose(-2, -3);
        x = x + attn_layer.call(x);
        x = x + mlp_layer.call(x);
        if (_grid) x = x.transpose(-2, -3);
        return scope.MoveToOuter(x.reshape(b, h / p, w / p, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w));
    }
}

/// <summary>MaxViT's relative positional multi-head attention on B×G×P×D tokens: q, k, v from <c>to_qkv</c> (k scaled
/// by D^−½, the feature width as torchvision scales it), softmax(q·kᵀ + bias) per head with the bias read from
/// <c>relative_position_bias_table</c> by <c>relative_position_index</c> (a P×P window's, checked after loading),
/// <c>merge</c>.</summary>
public sealed class RelativePositionalAttention : Module<Tensor, Tensor>, IChecksLoadedWeights
{
    readonly Module<Tensor, Tensor> to_qkv, merge, softmax;
    readonly global::TorchSharp.Modules.Parameter relative_position_bias_table;
    readonly Tensor relative_position_index;
    readonly long _heads, _headDim, _size;
    readonly double _scale;

    public RelativePositionalAttention(long channels, long headDim, long size) : base("RelativePositionalMultiHeadAttention")
    {
        (_heads, _headDim, _size, _scale) = (channels / headDim, headDim, size, Math.Pow(channels, -0.5));
        to_qkv = Linear(channels, 3 * channels);
        merge = Linear(channels, channels);
        softmax = Softmax(-1);
        relative_position_bias_table = new global::TorchSharp.Modules.Parameter(zeros((2 * size - 1) * (2 * size - 1), _heads));
        relative_position_index = RelativePositions.Index(size);   // P²×P²
        register_buffer("relative_position_index", relative_position_index);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public void CheckLoaded(string path, string name) => RelativePositions.Check(relative_position_index, _size, path, name);

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], g = x.shape[1], p = x.shape[2], d = x.shape[3];
        var qkv = to_qkv.call(x).chunk(3, -1);
        Tensor Heads(Tensor t) => t.reshape(b, g, p, _heads, _headDim).permute(0, 1, 3, 2, 4);
        var (q, k, v) = (Heads(qkv[0]), Heads(qkv[1]) * _scale, Heads(qkv[2]));
        long n = _size * _size;
        var bias = relative_position_bias_table.index_select(0, relative_position_index.view(-1)).view(n, n, -1).permute(2, 0, 1).contiguous().unsqueeze(0);
        var attention = softmax.call(q.MatMul(k.transpose(-2, -1)) + bias);
        var mixed = attention.MatMul(v).permute(0, 1, 3, 2, 4).reshape(b, g, p, d);
        return scope.MoveToOuter(merge.call(mixed));
    }
}
