using static TorchSharp.torch;

namespace Loupe.Abstractions;

/// <summary>How a layer's activation is laid out as a spatial N×C×h×w map (pytorch-grad-cam's reshape_transform).</summary>
public enum LayerReshape
{
    /// <summary>Decided from the shape: 4-D N×C×h×w as is, 4-D N×h×w×C (h = w ≠ C) transposed, 3-D N×T×C tokens on a
    /// square grid (T = s², or T = 1 + s² with a leading class token, which is dropped).</summary>
    Auto,
    /// <summary>N×C×h×w, used as is.</summary>
    None,
    /// <summary>Channels last, N×h×w×C (Swin's stages, ConvNeXt's permuted blocks) → N×C×h×w.</summary>
    Nhwc,
    /// <summary>ViT tokens N×(1 + h·w)×C: the class token is dropped, the rest laid on a square grid → N×C×h×w.</summary>
    Vit,
    /// <summary>Tokens N×(h·w)×C, all on a square grid (no class token) → N×C×h×w.</summary>
    Tokens,
}

/// <summary>Options of techniques that accept token or channels-last layers through a <c>reshape</c>.</summary>
public interface IReshapesLayers
{
    /// <summary>The requested reshape.</summary>
    LayerReshape Reshape { get; }
}

/// <summary>Resolving and applying a <see cref="LayerReshape"/>.</summary>
public static class LayerReshapes
{
    static long Root(long t) { var s = (long)Math.Round(Math.Sqrt(t)); return s * s == t ? s : -1; }

    /// <summary>The concrete reshape for a layer of <paramref name="shape"/> (never <see cref="LayerReshape.Auto"/>),
    /// or an explanation why it does not fit.</summary>
    public static (LayerReshape Mode, string? Error) Resolve(LayerReshape requested, long[] shape)
    {
        string S() => string.Join("×", shape);
        switch (requested)
        {
            case LayerReshape.Auto when shape.Length == 4:
                return (shape[2] != shape[3] && shape[1] == shape[2] ? LayerReshape.Nhwc : LayerReshape.None, null);
            case LayerReshape.Auto when shape.Length == 3:
                if (Root(shape[1]) > 0) return (LayerReshape.Tokens, null);
                if (Root(shape[1] - 1) > 0) return (LayerReshape.Vit, null);
                return (requested, $"the layer's {shape[1]} tokens are neither a square grid nor a class token plus a square grid");
            case LayerReshape.Auto:
                return (requested, $"a layer of shape ({S()}) cannot be laid out as N×C×h×w");
            case LayerReshape.None or LayerReshape.Nhwc when shape.Length != 4:
                return (requested, $"reshape '{Name(requested)}' needs a 4-D layer, this one is ({S()})");
            case LayerReshape.Vit or LayerReshape.Tokens when shape.Length != 3:
                return (requested, $"reshape '{Name(requested)}' needs a 3-D token layer N×T×C, this one is ({S()})");
            case LayerReshape.Vit when Root(shape[1] - 1) < 0:
                return (requested, $"reshape 'vit': {shape[1]} tokens are not 1 + a square number");
            case LayerReshape.Tokens when Root(shape[1]) < 0:
                return (requested, $"reshape 'tokens': {shape[1]} tokens are not a square number");
            default:
                return (requested, null);
        }
    }

    /// <summary>The activation (or its gradient) of a layer as N×C×h×w, per a resolved mode.</summary>
    public static Tensor ToGrid(Tensor a, LayerReshape mode)
    {
        switch (mode)
        {
            case LayerReshape.Nhwc: return a.permute(0, 3, 1, 2);
            case LayerReshape.Vit or LayerReshape.Tokens:
            {
                var tokens = mode == LayerReshape.Vit ? a[.., 1..] : a;
                long s = Root(tokens.shape[1]);
                return tokens.reshape(a.shape[0], s, s, a.shape[2]).permute(0, 3, 1, 2);
            }
            default: return a;
        }
    }

    /// <summary>A captured activation of <paramref name="layer"/> as N×C×h×w per the requested reshape, or a
    /// <see cref="LoupeException"/> naming the layer when its shape cannot be laid out so.</summary>
    public static Tensor ToGrid(Tensor a, LayerReshape requested, string layer)
    {
        var (mode, error) = Resolve(requested, a.shape);
        if (error is not null) throw new LoupeException($"layer '{layer}': {error}");
        return ToGrid(a, mode);
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
