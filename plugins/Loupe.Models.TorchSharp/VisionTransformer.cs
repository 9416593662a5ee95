using Loupe.Abstractions.Toolkit;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Loupe.Models.TorchSharp;

/// <summary>torchvision's Vision Transformer (Dosovitskiy et al. 2021; <c>vit_b_16</c>, <c>vit_b_32</c>, <c>vit_l_16</c>,
/// <c>vit_l_32</c>, <c>vit_h_14</c>), which TorchVision for .NET does not have, with torchvision 0.14's module tree and
/// state_dict names (<c>conv_proj</c>, <c>class_token</c>, <c>encoder.pos_embedding</c>,
/// <c>encoder.layers.encoder_layer_i.{ln_1, self_attention.in_proj_weight/in_proj_bias/out_proj, ln_2, mlp.0, mlp.3}</c>,
/// <c>encoder.ln</c>, <c>heads.head</c>) and its eval-mode forward. The attention is written out (PyTorch's
/// MultiheadAttention: q, k, v from one in-projection, softmax(q·kᵀ/√d)·v per head, out-projection) with its softmax
/// as a parameterless child module, <c>self_attention.softmax</c>, whose output (N×heads×T×T) attention rollout reads.</summary>
public sealed class VisionTransformer : Module<Tensor, Tensor>
{
    readonly Module<Tensor, Tensor> conv_proj;
    readonly Parameter class_token;
    readonly ViTEncoder encoder;
    readonly Module<Tensor, Tensor> heads;
    readonly long _patch, _hidden;

    /// <summary>A ViT for <paramref name="imageSize"/>² images.</summary>
    public VisionTransformer(int imageSize, int patch, int layers, int numHeads, long hidden, long mlp, int numClasses) : base("VisionTransformer")
    {
        _patch = patch;
        _hidden = hidden;
        conv_proj = Conv2d(3, hidden, patch, stride: patch);
        class_token = new Parameter(zeros(1, 1, hidden));
        encoder = new ViTEncoder((imageSize / patch) * (imageSize / patch) + 1, layers, numHeads, hidden, mlp);
        heads = Sequential(("head", Linear(hidden, numClasses)));
        RegisterComponents();
    }

    /// <summary>The torchvision configurations by name, or null.</summary>
    public static VisionTransformer? Build(string architecture, int numClasses) => architecture switch
    {
        "vit_b_16" => new VisionTransformer(224, 16, 12, 12, 768, 3072, numClasses),
        "vit_b_32" => new VisionTransformer(224, 32, 12, 12, 768, 3072, numClasses),
        "vit_l_16" => new VisionTransformer(224, 16, 24, 16, 1024, 4096, numClasses),
        "vit_l_32" => new VisionTransformer(224, 32, 24, 16, 1024, 4096, numClasses),
        "vit_h_14" => new VisionTransformer(224, 14, 32, 16, 1280, 5120, numClasses),
        _ => null,
    };

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long n = x.shape[0];
        var tokens = conv_proj.call(x).reshape(n, _hidden, -1).permute(0, 2, 1);
        tokens = cat([class_token.expand(n, -1, -1), tokens], 1);
        var encoded = encoder.call(tokens);
        return scope.MoveToOuter(heads.call(encoded[.., 0]));
    }
}

/// <summary>The ViT encoder: position embedding added, the blocks (<c>layers.encoder_layer_i</c>), a final LayerNorm.</summary>
public sealed class ViTEncoder : Module<Tensor, Tensor>
{
    readonly Parameter pos_embedding;
    readonly Module<Tensor, Tensor> layers, ln;

    public ViTEncoder(long tokens, int count, int numHeads, long hidden, long mlp) : base("Encoder")
    {
        pos_embedding = new Parameter(zeros(1, tokens, hidden));
        layers = Sequential(Enumerable.Range(0, count).Select(i => ($"encoder_layer_{i}", (Module<Tensor, Tensor>)new EncoderBlock(numHeads, hidden, mlp))).ToArray());
        ln = LayerNorm(hidden, eps: 1e-6);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        if (x.shape[1] != pos_embedding.shape[1])
            throw new Loupe.Abstractions.LoupeException($"vision transformer: {x.shape[1]} tokens, its position embedding has {pos_embedding.shape[1]} (give the input size it was built for)");
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(ln.call(layers.call(x + pos_embedding)));
    }
}

/// <summary>A ViT block: x + attention(ln_1(x)), then + mlp(ln_2(·)) (MLP: Linear, GELU, Dropout, Linear, Dropout).</summary>
public sealed class EncoderBlock : Module<Tensor, Tensor>
{
    readonly Module<Tensor, Tensor> ln_1, ln_2, mlp;
    readonly SelfAttention self_attention;

    public EncoderBlock(int numHeads, long hidden, long mlpDim) : base("EncoderBlock")
    {
        ln_1 = LayerNorm(hidden, eps: 1e-6);
        self_attention = new SelfAttention(hidden, numHeads);
        ln_2 = LayerNorm(hidden, eps: 1e-6);
        mlp = Sequential(Linear(hidden, mlpDim), GELU(), Dropout(0.0), Linear(mlpDim, hidden), Dropout(0.0));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = self_attention.call(ln_1.call(input)) + input;
        return scope.MoveToOuter(x + mlp.call(ln_2.call(x)));
    }
}

/// <summary>PyTorch's MultiheadAttention (batch first, self-attention, no mask) with its parameters' names
/// (<c>in_proj_weight</c>, <c>in_proj_bias</c>, <c>out_proj</c>) and its softmax as a child module.</summary>
public sealed class SelfAttention : Module<Tensor, Tensor>
{
    readonly Parameter in_proj_weight, in_proj_bias;
    readonly Module<Tensor, Tensor> out_proj, softmax;
    readonly int _heads;

    public SelfAttention(long hidden, int numHeads) : base("MultiheadAttention")
    {
        _heads = numHeads;
        in_proj_weight = new Parameter(empty(3 * hidden, hidden));
        init.xavier_uniform_(in_proj_weight);
        in_proj_bias = new Parameter(zeros(3 * hidden));
        out_proj = Linear(hidden, hidden);
        softmax = Softmax(-1);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long n = x.shape[0], t = x.shape[1], d = x.shape[2], h = _heads, hd = d / h;
        var qkv = functional.linear(x, in_proj_weight, in_proj_bias).view(n, t, 3, h, hd).permute(2, 0, 3, 1, 4);   // 3×N×h×T×hd
        var q = qkv[0] / Math.Sqrt(hd);
        var attention = softmax.call(q.MatMul(qkv[1].transpose(-2, -1)));                                        // N×h×T×T
        var mixed = attention.MatMul(qkv[2]).transpose(1, 2).reshape(n, t, d);
        return scope.MoveToOuter(out_proj.call(mixed));
    }
}
