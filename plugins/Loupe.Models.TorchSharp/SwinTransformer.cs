using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Loupe.Models.TorchSharp;

/// <summary>torchvision's Swin Transformer (Liu et al. 2021: <c>swin_t</c>, <c>swin_s</c>, <c>swin_b</c>) and Swin V2
/// (Liu et al. 2022: <c>swin_v2_t</c>, <c>swin_v2_s</c>, <c>swin_v2_b</c>), which TorchVision for .NET does not have,
/// with torchvision 0.14's module tree, state_dict names and eval-mode forward: <c>features.0</c> the patch embedding
/// (4×4 convolution, channels-last permute, LayerNorm), <c>features.1, 3, 5, 7</c> the stages of blocks,
/// <c>features.2, 4, 6</c> the patch mergings, then <c>norm</c>, <c>permute</c>, average pool, <c>head</c>. Activations
/// stay channels last (N×h×w×C) as in PyTorch, so CAM steps lay them out with <c>reshape: nhwc</c> (found by auto).</summary>
public sealed class SwinTransformer : Module<Tensor, Tensor>
{
    readonly Module<Tensor, Tensor> features, norm, permute, avgpool, flatten, head;

    SwinTransformer(long embed, int[] depths, int[] heads, long window, bool v2, int numClasses) : base("SwinTransformer")
    {
        var layers = new List<Module<Tensor, Tensor>> { Sequential(Conv2d(3, embed, 4, stride: 4), new Permute([0, 2, 3, 1]), LayerNorm(embed, 1e-5)) };
        for (int s = 0; s < depths.Length; s++)
        {
            long dim = embed << s;
            layers.Add(Sequential(Enumerable.Range(0, depths[s])
                .Select(i => (Module<Tensor, Tensor>)new SwinBlock(dim, heads[s], window, i % 2 == 0 ? 0 : window / 2, v2)).ToArray()));
            if (s < depths.Length - 1) layers.Add(new PatchMerging(dim, v2));
        }
        features = Sequential(layers.ToArray());
        long last = embed << (depths.Length - 1);
        norm = LayerNorm(last, 1e-5);
        permute = new Permute([0, 3, 1, 2]);
        avgpool = AdaptiveAvgPool2d(1);
        flatten = Flatten(1);
        head = Linear(last, numClasses);
        RegisterComponents();
    }

    /// <summary>The torchvision configurations by name, or null.</summary>
    public static SwinTransformer? Build(string architecture, int numClasses) => architecture switch
    {
        "swin_t" => new SwinTransformer(96, [2, 2, 6, 2], [3, 6, 12, 24], 7, false, numClasses),
        "swin_s" => new SwinTransformer(96, [2, 2, 18, 2], [3, 6, 12, 24], 7, false, numClasses),
        "swin_b" => new SwinTransformer(128, [2, 2, 18, 2], [4, 8, 16, 32], 7, false, numClasses),
        "swin_v2_t" => new SwinTransformer(96, [2, 2, 6, 2], [3, 6, 12, 24], 8, true, numClasses),
        "swin_v2_s" => new SwinTransformer(96, [2, 2, 18, 2], [3, 6, 12, 24], 8, true, numClasses),
        "swin_v2_b" => new SwinTransformer(128, [2, 2, 18, 2], [4, 8, 16, 32], 8, true, numClasses),
        _ => null,
    };

    /// <summary>The Swin architectures of torchvision 0.14.</summary>
    public static readonly string[] Architectures = ["swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_s", "swin_v2_b"];

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(head.call(flatten.call(avgpool.call(permute.call(norm.call(features.call(x)))))));
    }
}

/// <summary>Swin's patch merging on N×H×W×C: the four pixels of each 2×2 cell (H and W padded to even) concatenated to
/// 4C (order (0,0), (1,0), (0,1), (1,1)), then LayerNorm(4C) → Linear(4C, 2C) (V1) or Linear → LayerNorm(2C) (V2).</summary>
public sealed class PatchMerging : Module<Tensor, Tensor>
{
    readonly Module<Tensor, Tensor> reduction, norm;
    readonly bool _v2;

    public PatchMerging(long dim, bool v2) : base(v2 ? "PatchMergingV2" : "PatchMerging")
    {
        _v2 = v2;
        reduction = Linear(4 * dim, 2 * dim, hasBias: false);
        norm = LayerNorm(v2 ? 2 * dim : 4 * dim, 1e-5);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long h = x.shape[1], w = x.shape[2];
        var p = functional.pad(x, [0, 0, 0, w % 2, 0, h % 2]);
        var merged = cat([p[.., TensorIndex.Slice(0, null, 2), TensorIndex.Slice(0, null, 2)], p[.., TensorIndex.Slice(1, null, 2), TensorIndex.Slice(0, null, 2)],
            p[.., TensorIndex.Slice(0, null, 2), TensorIndex.Slice(1, null, 2)], p[.., TensorIndex.Slice(1, null, 2), TensorIndex.Slice(1, null, 2)]], -1);
        return scope.MoveToOuter(_v2 ? norm.call(reduction.call(merged)) : reduction.call(norm.call(merged)));
    }
}

/// <summary>A Swin block on N×H×W×C: V1 x + attn(norm1(x)), then x + mlp(norm2(x)); V2 (res-post-norm)
/// x + norm1(attn(x)), then x + norm2(mlp(x)); mlp = Linear(C, 4C), GELU, Linear(4C, C) (<c>mlp.0</c>, <c>mlp.3</c>).</summary>
public sealed class SwinBlock : Module<Tensor, Tensor>
{
    readonly Module<Tensor, Tensor> norm1, attn, norm2, mlp;
    readonly bool _v2;

    public SwinBlock(long dim, int heads, long window, long shift, bool v2) : base(v2 ? "SwinTransformerBlockV2" : "SwinTransformerBlock")
    {
        _v2 = v2;
        norm1 = LayerNorm(dim, 1e-5);
        attn = new ShiftedWindowAttention(dim, window, shift, heads, v2);
        norm2 = LayerNorm(dim, 1e-5);
        mlp = Sequential(Linear(dim, 4 * dim), GELU(), Dropout(0.0), Linear(4 * dim, dim), Dropout(0.0));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = _v2 ? input + norm1.call(attn.call(input)) : input + attn.call(norm1.call(input));
        return scope.MoveToOuter(_v2 ? x + norm2.call(mlp.call(x)) : x + mlp.call(norm2.call(x)));
    }
}

/// <summary>Swin's window attention with a relative position bias (torchvision's shifted_window_attention): the input
/// padded to whole windows, cyclically shifted by half a window on odd blocks (not where the window covers the map),
/// attention within each window — scaled dot products (V1) or cosine similarity times exp(min(logit_scale, ln 100))
/// (V2, the key bias zeroed) — plus the bias (V1: a learnt table; V2: 16·σ(cpb_mlp(log-spaced coordinates))), −100 between
/// tokens from different regions of a shifted window, softmax (a child module, <c>softmax</c>), projection, the
/// windows and the shift undone, the padding cut.</summary>
public sealed class ShiftedWindowAttention : Module<Tensor, Tensor>, IChecksLoadedWeights
{
    readonly Module<Tensor, Tensor> qkv, proj, softmax;
    readonly Parameter? relative_position_bias_table, logit_scale;
    readonly Module<Tensor, Tensor>? cpb_mlp;
    readonly Tensor relative_position_index;
    readonly Tensor? relative_coords_table;
    readonly long _window, _shift, _heads;

    public ShiftedWindowAttention(long dim, long window, long shift, long heads, bool v2) : base(v2 ? "ShiftedWindowAttentionV2" : "ShiftedWindowAttention")
    {
        (_window, _shift, _heads) = (window, shift, heads);
        qkv = Linear(dim, 3 * dim);
        proj = Linear(dim, dim);
        softmax = Softmax(-1);
        long span = 2 * window - 1;
        if (v2)
        {
            logit_scale = new Parameter(full([heads, 1, 1], Math.Log(10.0)));
            cpb_mlp = Sequential(Linear(2, 512), ReLU(), Linear(512, heads, hasBias: false));
            // log-spaced relative coordinates, 1 × (2w−1) × (2w−1) × 2
            var c = arange(-(window - 1), window, dtype: ScalarType.Float32) / (float)(window - 1) * 8f;
            var grid = stack(meshgrid([c, c], indexing: "ij"), -1).unsqueeze(0);
            relative_coords_table = grid.sign() * (grid.abs() + 1).log2() / 3f;
            register_buffer("relative_coords_table", relative_coords_table);
        }
        else relative_position_bias_table = new Parameter(zeros(span * span, heads));
        relative_position_index = RelativePositions.Index(window).flatten();
        register_buffer("relative_position_index", relative_position_index);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public void CheckLoaded(string path, string name) => RelativePositions.Check(relative_position_index, _window, path, name);

    /// <summary>The bias per head, 1 × heads × w² × w².</summary>
    Tensor PositionBias()
    {
        long n = _window * _window;
        var table = cpb_mlp is not null ? cpb_mlp.call(relative_coords_table!).view(-1, _heads) : relative_position_bias_table!;
        var bias = table.index_select(0, relative_position_index).view(n, n, -1).permute(2, 0, 1).contiguous().unsqueeze(0);
        return cpb_mlp is not null ? 16 * bias.sigmoid() : bias;
    }

    /// <summary>Python's slice [start:end] of a length-<paramref name="n"/> axis as (from, to), None as null.</summary>
    static (long From, long To) Slice(long? start, long? end, long n)
    {
        static long At(long i, long n) => Math.Clamp(i < 0 ? i + n : i, 0, n);
        return (start is { } s ? At(s, n) : 0, end is { } e ? At(e, n) : n);
    }

    /// <summary>torchvision's attention mask of a shifted window: the padded map cut into nine regions (the slices
    /// [0:−w], [−w:−s], [−s:] of each axis, written in that order), −100 between tokens of different regions.</summary>
    static Tensor ShiftMask(long ph, long pw, long window, long sh, long sw)
    {
        var regions = new float[ph * pw];
        long?[][] hs = [[0, -window], [-window, -sh], [-sh, null]], ws = [[0, -window], [-window, -sw], [-sw, null]];
        int count = 0;
        foreach (var h in hs)
            foreach (var w in ws)
            {
                var (y0, y1) = Slice(h[0], h[1], ph);
                var (x0, x1) = Slice(w[0], w[1], pw);
                for (long y = y0; y < y1; y++)
                    for (long x = x0; x < x1; x++) regions[y * pw + x] = count;
                count++;
            }
        long nw = (ph / window) * (pw / window);
        var m = tensor(regions).view(ph / window, window, pw / window, window).permute(0, 2, 1, 3).reshape(nw, window * window);
        var diff = m.unsqueeze(1) - m.unsqueeze(2);
        return where(diff != 0, full_like(diff, -100f), zeros_like(diff));
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        long b = input.shape[0], h = input.shape[1], w = input.shape[2], c = input.shape[3], win = _window;
        long padR = (win - w % win) % win, padB = (win - h % win) % win;
        var x = functional.pad(input, [0, 0, 0, padR, 0, padB]);
        long ph = h + padB, pw = w + padR;
        long sh = win >= ph ? 0 : _shift, sw = win >= pw ? 0 : _shift;
        if (sh + sw > 0) x = x.roll([-sh, -sw], [1, 2]);
        long nw = (ph / win) * (pw / win), n = win * win, hd = c / _heads;
        x = x.view(b, ph / win, win, pw / win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nw, n, c);
        var weight = ((Linear)qkv).weight!;
        Tensor? bias = ((Linear)qkv).bias;
        if (logit_scale is not null && bias is not null) bias = cat([bias.narrow(0, 0, c), zeros(c), bias.narrow(0, 2 * c, c)]);
        var parts = functional.linear(x, weight, bias).reshape(b * nw, n, 3, _heads, hd).permute(2, 0, 3, 1, 4);
        Tensor q = parts[0], k = parts[1], v = parts[2], attention;
        if (logit_scale is not null)
        {
            attention = functional.normalize(q, dim: -1).MatMul(functional.normalize(k, dim: -1).transpose(-2, -1));
            attention = attention * logit_scale.clamp_max(Math.Log(100.0)).exp();
        }
        else attention = (q * Math.Pow(hd, -0.5)).MatMul(k.transpose(-2, -1));
        attention = attention + PositionBias();
        if (sh + sw > 0)
            attention = (attention.view(b, nw, _heads, n, n) + ShiftMask(ph, pw, win, sh, sw).unsqueeze(1).unsqueeze(0)).view(-1, _heads, n, n);
        attention = softmax.call(attention);
        x = proj.call(attention.MatMul(v).transpose(1, 2).reshape(b * nw, n, c));
        x = x.view(b, ph / win, pw / win, win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c);
        if (sh + sw > 0) x = x.roll([sh, sw], [1, 2]);
        return scope.MoveToOuter(x[.., ..(int)h, ..(int)w, ..].contiguous());
    }
}

/// <summary>The relative position index of a w×w window's tokens that Swin and MaxViT read their position-bias tables
/// with (torchvision's: (Δy + w − 1)·(2w − 1) + Δx + w − 1 for token pairs in row-major order).</summary>
static class RelativePositions
{
    /// <summary>The w²×w² index.</summary>
    public static Tensor Index(long window)
    {
        using var scope = NewDisposeScope();
        var coords = arange(window);
        var flat = stack(meshgrid([coords, coords], indexing: "ij")).flatten(1);              // 2 × w²
        var rel = (flat.unsqueeze(2) - flat.unsqueeze(1)).permute(1, 2, 0) + (window - 1);    // w² × w² × 2
        return scope.MoveToOuter(rel.select(2, 0) * (2 * window - 1) + rel.select(2, 1));
    }

    /// <summary>Throws a <see cref="LoupeException"/> naming the file and the module when a loaded index is not the
    /// window's.</summary>
    public static void Check(Tensor loaded, long window, string path, string name)
    {
        using var scope = NewDisposeScope();
        if (!loaded.contiguous().data<long>().SequenceEqual(Index(window).flatten().data<long>()))
            throw new LoupeException($"{path}: {name}.relative_position_index is not the {window}×{window} window's index torchvision defines (a hostile or damaged file: its values pick the attention's position biases)");
    }
}
