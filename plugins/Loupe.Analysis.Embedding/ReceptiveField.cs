using Loupe.Abstractions;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Embedding;

/// <summary>The receptive field of a layer's units in input pixels. Unit (y, x) sees rows
/// [<see cref="Y0"/> + (y − <see cref="RefY"/>)·<see cref="StrideY"/>, <see cref="Y1"/> + (y − RefY)·StrideY) (end-exclusive)
/// and likewise for columns, before clipping to the image.</summary>
public sealed record ReceptiveField(int RefY, int RefX, int Y0, int X0, int Y1, int X1, int StrideY, int StrideX, int LayerHeight, int LayerWidth, string Method)
{
    /// <summary>Field height in pixels (unclipped).</summary>
    public int Height => Y1 - Y0;
    /// <summary>Field width in pixels (unclipped).</summary>
    public int Width => X1 - X0;

    /// <summary>Unclipped box of unit (y, x): (y0, x0, y1, x1), end-exclusive; may extend past the image.</summary>
    public (int Y0, int X0, int Y1, int X1) Unclipped(int y, int x) =>
        (Y0 + (y - RefY) * StrideY, X0 + (x - RefX) * StrideX, Y1 + (y - RefY) * StrideY, X1 + (x - RefX) * StrideX);

    /// <summary>Box of unit (y, x) clipped to an <paramref name="h"/>×<paramref name="w"/> image, end-exclusive.</summary>
    public (int Y0, int X0, int Y1, int X1) Box(int y, int x, int h, int w)
    {
        var (a, b, c, d) = Unclipped(y, x);
        return (Math.Clamp(a, 0, h), Math.Clamp(b, 0, w), Math.Clamp(c, 0, h), Math.Clamp(d, 0, w));
    }
}

/// <summary>Measures receptive fields numerically and exactly by gradient support: for a unit (y, x) of the layer, the
/// input pixels where ∂(Σ_c A[c, y, x])/∂input ≠ 0 for random probe inputs (union over a few probes, so ReLUs that are
/// off and max-pool arg-maxes for one probe do not hide pixels; summing over channels has the same effect). Measured
/// once per layer for a central reference unit and its diagonal neighbour (which gives the stride); every other unit's
/// field is the reference field shifted by the stride. When the reference field touches the border of the probe, the
/// probe is enlarged (fully convolutional models) so the field is not clipped.</summary>
public static class ReceptiveFields
{
    /// <summary>Gradient support (H×W bool) of Σ_c A[c, y, x] over <paramref name="probes"/> random inputs of size h×w.</summary>
    public static bool[,] Support(IModel model, string layer, int channels, int h, int w, int y, int x, int probes, int seed, bool? sumChannels = null, int channel = 0,
        LayerReshape reshape = LayerReshape.Auto)
    {
        using var scope = NewDisposeScope();
        using var gen = new Generator((ulong)seed);
        var input = randn([probes, channels, h, w], generator: gen).requires_grad_(true);
        using var capture = model.Capture([layer], forGradients: true);
        model.Forward(input);
        var a = LayerReshapes.ToGrid(capture[layer], reshape, layer, (h, w));
        if (y >= a.shape[2] || x >= a.shape[3]) throw new ArgumentOutOfRangeException(nameof(y), $"unit ({y},{x}) is outside the {a.shape[2]}×{a.shape[3]} map");
        var unit = sumChannels == false ? a[.., channel, y, x] : a[.., .., y, x];
        var g = CheckedOps.Grad([unit.sum()], [input])[0];
        var mask = (g.abs().sum([0, 1]) > 0).contiguous();
        var flat = mask.ToArray<bool>();
        var result = new bool[h, w];
        for (int i = 0; i < h; i++) for (int j = 0; j < w; j++) result[i, j] = flat[i * w + j];
        return result;
    }

    /// <summary>Bounding box (y0, x0, y1, x1), end-exclusive, of a support mask; null when empty.</summary>
    public static (int Y0, int X0, int Y1, int X1)? Bounds(bool[,] m)
    {
        int h = m.GetLength(0), w = m.GetLength(1), y0 = h, x0 = w, y1 = -1, x1 = -1;
        for (int i = 0; i < h; i++) for (int j = 0; j < w; j++)
            if (m[i, j]) { y0 = Math.Min(y0, i); y1 = Math.Max(y1, i); x0 = Math.Min(x0, j); x1 = Math.Max(x1, j); }
        return y1 < 0 ? null : (y0, x0, y1 + 1, x1 + 1);
    }

    static (int H, int W) LayerSize(IModel model, string layer, int c, int h, int w, LayerReshape reshape)
    {
        using var scope = NewDisposeScope();
        using var capture = model.Capture([layer], forGradients: false);
        using (no_grad()) model.Forward(zeros(1, c, h, w));
        var a = LayerReshapes.ToGrid(capture[layer], reshape, layer, (h, w));
        return ((int)a.shape[2], (int)a.shape[3]);
    }

    /// <summary>Measures the layer's receptive field for inputs of <paramref name="spec"/>'s size, on the layer laid out
    /// as N×C×h×w per <paramref name="reshape"/>.</summary>
    public static ReceptiveField Measure(IModel model, string layer, InputSpec spec, int seed, int probes = 4, Action<string>? warn = null,
        LayerReshape reshape = LayerReshape.Auto)
    {
        if (!model.Capabilities.HasFlag(ModelCapabilities.Gradients))
            throw new LoupeException("max-patches measures receptive fields by gradient support and needs a backend with gradients; this backend is forward-only");
        var (lh, lw) = LayerSize(model, layer, spec.Channels, spec.Height, spec.Width, reshape);
        ReceptiveField? best = null;
        for (int factor = 1; factor <= 8; factor *= 2)
        {
            int h = spec.Height * factor, w = spec.Width * factor;
            ReceptiveField rf;
            try
            {
                var (ph, pw) = factor == 1 ? (lh, lw) : LayerSize(model, layer, spec.Channels, h, w, reshape);
                rf = MeasureAt(model, layer, spec.Channels, h, w, ph, pw, probes, seed, reshape);
            }
            catch (Exception e) when (factor > 1 && e is not OperationCanceledException)
            {
                warn?.Invoke($"receptive field of '{layer}' may be clipped: the model does not accept a {h}×{w} probe ({e.Message.Split('\n')[0]})");
                break;
            }
            // Re-anchor so the reference unit is expressed in the real layer's coordinates (same origin, same stride).
            best = rf with { LayerHeight = lh, LayerWidth = lw };
            bool touches = rf.Y0 == 0 || rf.X0 == 0 || rf.Y1 == h || rf.X1 == w;
            if (!touches) break;
            if (factor == 8) warn?.Invoke($"receptive field of '{layer}' reaches the border of an {h}×{w} probe; it may be clipped");
        }
        return best!;
    }

    static ReceptiveField MeasureAt(IModel model, string layer, int c, int h, int w, int lh, int lw, int probes, int seed, LayerReshape reshape)
    {
        int ry = (lh - 1) / 2, rx = (lw - 1) / 2;
        var b = Bounds(Support(model, layer, c, h, w, ry, rx, probes, seed, reshape: reshape))
            ?? Bounds(Support(model, layer, c, h, w, ry, rx, probes * 8, seed + 1, reshape: reshape))
            ?? throw new LoupeException($"layer '{layer}': unit ({ry},{rx}) has no gradient support for random probes (dead unit?)");
        int sy = 0, sx = 0;
        if (lh > 1 || lw > 1)
        {
            int ny = Math.Min(ry + 1, lh - 1), nx = Math.Min(rx + 1, lw - 1);
            var nb = Bounds(Support(model, layer, c, h, w, ny, nx, probes, seed + 2, reshape: reshape))
                ?? throw new LoupeException($"layer '{layer}': unit ({ny},{nx}) has no gradient support for random probes");
            // Use the far edges when the near edges are clipped (they cannot both be, with the reference centred).
            if (ny != ry) sy = nb.Y1 - b.Y1 != 0 ? nb.Y1 - b.Y1 : nb.Y0 - b.Y0;
            if (nx != rx) sx = nb.X1 - b.X1 != 0 ? nb.X1 - b.X1 : nb.X0 - b.X0;
        }
        return new ReceptiveField(ry, rx, b.Y0, b.X0, b.Y1, b.X1, sy, sx, lh, lw, "gradient-support");
    }
}
