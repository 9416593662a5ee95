using static TorchSharp.torch;

namespace Loupe.Abstractions;

/// <summary>How a layer's activation is laid out as a spatial N×C×h×w map (pytorch-grad-cam's reshape_transform).</summary>
public enum LayerReshape
{
    /// <summary>Decided from the shape: 4-D N×C×h×w as is, 4-D N×h×w×C (h = w ≠ C) transposed, 3-D N×T×C tokens on a
    /// grid of the image's aspect (T = h·w, or T = k + h·w with k leading tokens that are not patches — a class token,
    /// DeiT's distillation token, registers — which are dropped; a square grid when the image size is not known).</summary>
    Auto,
    /// <summary>N×C×h×w, used as is.</summary>
    None,
    /// <summary>Channels last, N×h×w×C (Swin's stages, ConvNeXt's permuted blocks) → N×C×h×w.</summary>
    Nhwc,
    /// <summary>ViT tokens N×(k + h·w)×C: the k leading tokens that are not patches (the class token; DeiT's
    /// distillation token; registers: k = 1, 2, 5, 9 or 17, the first that leaves a grid of the image's aspect) are
    /// dropped and the rest
    /// laid on that h×w grid (pytorch-grad-cam's reshape_transform with its height and width: tensor[:, k:, :]) →
    /// N×C×h×w.</summary>
    Vit,
    /// <summary>Tokens N×(h·w)×C, all on an h×w grid of the image's aspect (no class token) → N×C×h×w.</summary>
    Tokens,
}

/// <summary>Options of techniques that accept token or channels-last layers through a <c>reshape</c>.</summary>
public interface IReshapesLayers
{
    /// <summary>The requested reshape.</summary>
    LayerReshape Reshape { get; }

    /// <summary>An explicit token grid [height, width] (pytorch-grad-cam's reshape_transform height and width), or null:
    /// the grid of the image's aspect.</summary>
    int[]? TokenGrid => null;

    /// <summary>The description of a <c>token_grid</c> option.</summary>
    public const string TokenGridDescription = "the h×w grid of a token layer, [height, width] (pytorch-grad-cam's reshape_transform height and width, e.g. [14, 14]): a layer of T = h·w tokens is laid on it as is, one of T > h·w tokens drops its T − h·w leading tokens (class, distillation, register tokens); default: the grid of the image's aspect";
}

/// <summary>How a token layer is laid out: an explicit grid, else the image's aspect.</summary>
/// <param name="Image">The input's H×W, or null.</param>
/// <param name="Grid">An explicit h×w token grid, or null.</param>
public readonly record struct TokenLayout((long Height, long Width)? Image, (long Height, long Width)? Grid = null)
{
    /// <summary>The layout of <paramref name="options"/>' token grid over an image of <paramref name="image"/>.</summary>
    public static TokenLayout Of(IReshapesLayers options, (long Height, long Width)? image) =>
        new(image, options.TokenGrid is [var h, var w] ? (h, w) : null);

    /// <summary>The layout of an image alone (or of no image: a square grid).</summary>
    public static implicit operator TokenLayout((long Height, long Width)? image) => new(image);

    /// <summary>Validation of a <c>token_grid</c> option.</summary>
    public static IEnumerable<string> Errors(IReshapesLayers options)
    {
        if (options.TokenGrid is not { } g) yield break;
        if (g.Length != 2 || g.Any(v => v <= 0)) yield return "option 'token_grid': give [height, width], two whole numbers ≥ 1";
        if (options.Reshape is not (LayerReshape.Auto or LayerReshape.Vit or LayerReshape.Tokens))
            yield return $"option 'token_grid' lays out token layers: it does not apply with reshape '{LayerReshapes.Name(options.Reshape)}'";
    }
}

/// <summary>Resolving and applying a <see cref="LayerReshape"/>.</summary>
public static class LayerReshapes
{
    /// <summary>The h×w grid of <paramref name="t"/> tokens: the one with the image's aspect (h = H/p, w = W/p for the
    /// patch side p = √(H·W/t)) when <paramref name="image"/> is given and it fits, else a square one; (−1, −1) when
    /// neither fits.</summary>
    public static (long Height, long Width) Grid(long t, (long Height, long Width)? image = null)
    {
        if (t <= 0) return (-1, -1);
        if (image is { Height: > 0, Width: > 0 } size)
        {
            double side = Math.Sqrt((double)size.Height * size.Width / t);
            long h = (long)Math.Round(size.Height / side), w = (long)Math.Round(size.Width / side);
            if (h > 0 && w > 0 && h * w == t) return (h, w);
        }
        var s = (long)Math.Round(Math.Sqrt(t));
        return s * s == t ? (s, s) : (-1, -1);
    }

    static bool Fits(long t, (long, long)? image) => Grid(t, image).Height > 0;

    /// <summary>Leading tokens to drop and the grid of a layer of <paramref name="t"/> tokens under an explicit grid
    /// (t − h·w, h, w), or null where the grid holds more tokens than the layer.</summary>
    static (long Prefix, long Height, long Width)? Explicit(long t, (long Height, long Width) grid) =>
        grid.Height * grid.Width <= t ? (t - grid.Height * grid.Width, grid.Height, grid.Width) : null;

    /// <summary>The counts of leading non-patch tokens looked for, in order: a class token (ViT), class + distillation
    /// (DeiT), class + 4, 8 or 16 registers (Darcet et al. 2024's ViTs with registers).</summary>
    public static readonly int[] PrefixTokenCounts = [1, 2, 5, 9, 17];

    /// <summary>The first of <see cref="PrefixTokenCounts"/> that leaves <paramref name="t"/> − k tokens on a grid of the
    /// image's aspect, or −1.</summary>
    public static long PrefixTokens(long t, (long Height, long Width)? image = null)
    {
        foreach (var k in PrefixTokenCounts)
            if (k < t && Fits(t - k, image)) return k;
        return -1;
    }

    /// <summary>The concrete reshape for a layer of <paramref name="shape"/> (never <see cref="LayerReshape.Auto"/>),
    /// or an explanation why it does not fit; the layout's image (the input's H×W) lets token layers lie on a
    /// grid of the image's aspect.
    /// Under an explicit grid h×w (<see cref="TokenLayout.Grid"/>) a token layer of h·w tokens is
    /// <see cref="LayerReshape.Tokens"/>, one of more is <see cref="LayerReshape.Vit"/> (its T − h·w leading tokens
    /// dropped), one of fewer an error.</summary>
    public static (LayerReshape Mode, string? Error) Resolve(LayerReshape requested, long[] shape, TokenLayout layout = default)
    {
        if (layout.Grid is { } grid && shape.Length != 3 && requested is LayerReshape.Auto or LayerReshape.Vit or LayerReshape.Tokens)
            return (requested, $"token_grid {grid.Height}×{grid.Width} lays out a token layer N×T×C; this one is ({string.Join("×", shape)})");
        if (layout.Grid is { } g && shape.Length == 3 && requested is LayerReshape.Auto or LayerReshape.Vit or LayerReshape.Tokens)
        {
            long t = shape[1], cells = g.Height * g.Width;
            if (cells > t || requested == LayerReshape.Tokens && cells != t)
                return (requested, $"token_grid {g.Height}×{g.Width} holds {cells} tokens; the layer has {t}{(requested == LayerReshape.Tokens ? " (reshape 'tokens' takes them all: use vit or auto to drop leading tokens)" : "")}");
            if (requested == LayerReshape.Vit && cells == t)
                return (requested, $"reshape 'vit' drops leading tokens, but token_grid {g.Height}×{g.Width} takes all {t}: use tokens or auto");
            return (cells == t ? LayerReshape.Tokens : LayerReshape.Vit, null);
        }
        var image = layout.Image;
        string S() => string.Join("×", shape);
        string Of() => image is { } i ? $" of the image's {i.Height}×{i.Width} aspect" : "";
        switch (requested)
        {
            case LayerReshape.Auto when shape.Length == 4:
                return (shape[2] != shape[3] && shape[1] == shape[2] ? LayerReshape.Nhwc : LayerReshape.None, null);
            case LayerReshape.Auto when shape.Length == 3:
                if (Fits(shape[1], image)) return (LayerReshape.Tokens, null);
                if (PrefixTokens(shape[1], image) > 0) return (LayerReshape.Vit, null);
                return (requested, $"the layer's {shape[1]} tokens are neither a grid{Of()} nor {string.Join(", ", PrefixTokenCounts)} leading tokens (a class token, a distillation token, registers) plus such a grid");
            case LayerReshape.Auto:
                return (requested, $"a layer of shape ({S()}) cannot be laid out as N×C×h×w");
            case LayerReshape.None or LayerReshape.Nhwc when shape.Length != 4:
                return (requested, $"reshape '{Name(requested)}' needs a 4-D layer, this one is ({S()})");
            case LayerReshape.Vit or LayerReshape.Tokens when shape.Length != 3:
                return (requested, $"reshape '{Name(requested)}' needs a 3-D token layer N×T×C, this one is ({S()})");
            case LayerReshape.Vit when PrefixTokens(shape[1], image) < 0:
                return (requested, $"reshape 'vit': {shape[1]} tokens are not {string.Join(", ", PrefixTokenCounts)} leading tokens + a grid{Of()} (or a square number)");
            case LayerReshape.Tokens when !Fits(shape[1], image):
                return (requested, $"reshape 'tokens': {shape[1]} tokens are not a grid{Of()} (or a square number)");
            default:
                return (requested, null);
        }
    }

    /// <summary>The activation (or its gradient) of a layer as N×C×h×w, per a resolved mode.</summary>
    public static Tensor ToGrid(Tensor a, LayerReshape mode, TokenLayout layout = default)
    {
        switch (mode)
        {
            case LayerReshape.Nhwc: return a.permute(0, 3, 1, 2);
            case LayerReshape.Vit or LayerReshape.Tokens:
            {
                long t = a.shape[1];
                var (prefix, h, w) = layout.Grid is { } g
                    ? Explicit(t, g) ?? throw new LoupeException($"token_grid {g.Height}×{g.Width} holds more than the layer's {t} tokens")
                    : (mode == LayerReshape.Vit ? PrefixTokens(t, layout.Image) : 0, 0L, 0L);
                var tokens = prefix > 0 ? a[.., (int)prefix..] : a;
                if (layout.Grid is null) (h, w) = Grid(tokens.shape[1], layout.Image);
                return tokens.reshape(a.shape[0], h, w, a.shape[2]).permute(0, 3, 1, 2);
            }
            default: return a;
        }
    }

    /// <summary>A captured activation of <paramref name="layer"/> as N×C×h×w per the requested reshape, or a
    /// <see cref="LoupeException"/> naming the layer when its shape cannot be laid out so.</summary>
    public static Tensor ToGrid(Tensor a, LayerReshape requested, string layer, TokenLayout layout = default)
    {
        var (mode, error) = Resolve(requested, a.shape, layout);
        if (error is not null) throw new LoupeException($"layer '{layer}': {error}");
        return ToGrid(a, mode, layout);
    }

    /// <summary>Shape to which a per-channel factor (rows × C) is viewed to broadcast over the layer's own layout.</summary>
    public static long[] ChannelShape(LayerReshape mode, long rows, long channels) => mode switch
    {
        LayerReshape.Nhwc => [rows, 1, 1, channels],
        LayerReshape.Vit or LayerReshape.Tokens => [rows, 1, channels],
        _ => [rows, channels, 1, 1],
    };

    /// <summary>kebab-case name, as written in YAML.</summary>
    public static string Name(LayerReshape mode) => mode.ToString().ToLowerInvariant();
}
