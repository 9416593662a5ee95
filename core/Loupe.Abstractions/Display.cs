using static TorchSharp.torch;

namespace Loupe.Abstractions;

/// <summary>Display helpers for plugins: colormaps, overlays, grids. Display images are for people;
/// raw <c>.npy</c> results are what tests compare.</summary>
public static class Display
{
    // Viridis (perceptually uniform, colour-blind friendly) sampled at 0, 1/8, ..., 1; linear in between.
    static readonly float[,] ViridisAnchors =
    {
        { 0x44, 0x01, 0x54 }, { 0x47, 0x2d, 0x7b }, { 0x3b, 0x52, 0x8b }, { 0x2c, 0x72, 0x8e }, { 0x21, 0x91, 0x8c },
        { 0x28, 0xae, 0x80 }, { 0x5e, 0xc9, 0x62 }, { 0xad, 0xdc, 0x30 }, { 0xfd, 0xe7, 0x25 },
    };

    static readonly Lazy<byte[]> ViridisLut = new(() =>
    {
        var lut = new byte[256 * 3];
        int n = ViridisAnchors.GetLength(0) - 1;
        for (int i = 0; i < 256; i++)
        {
            double t = i / 255.0 * n;
            int a = Math.Min((int)t, n - 1);
            double f = t - a;
            for (int c = 0; c < 3; c++)
                lut[i * 3 + c] = (byte)Math.Round(ViridisAnchors[a, c] * (1 - f) + ViridisAnchors[a + 1, c] * f);
        }
        return lut;
    });

    /// <summary>The 256-entry viridis lookup table (RGB interleaved).</summary>
    public static ReadOnlySpan<byte> Viridis => ViridisLut.Value;

    /// <summary>Min-max normalises to [0,1]; a constant map becomes zeros.</summary>
    public static Tensor MinMax(Tensor t)
    {
        using var scope = NewDisposeScope();
        var min = t.min();
        var range = t.max() - min;
        var r = range.item<float>() > 0 ? (t - min) / range : zeros_like(t);
        return scope.MoveToOuter(r);
    }

    /// <summary>Bilinear resize (align_corners = false) of an H×W or N×H×W or N×C×H×W map.</summary>
    public static Tensor Resize(Tensor map, long height, long width)
    {
        using var scope = NewDisposeScope();
        var x = map.dim() switch { 2 => map.unsqueeze(0).unsqueeze(0), 3 => map.unsqueeze(1), _ => map };
        var r = nn.functional.interpolate(x.to(ScalarType.Float32), [height, width], mode: InterpolationMode.Bilinear, align_corners: false);
        r = map.dim() switch { 2 => r[0, 0], 3 => r[.., 0], _ => r };
        return scope.MoveToOuter(r);
    }

    /// <summary>Pixels C×H×W in [0,1] (C = 1 or 3) to an RGB image.</summary>
    public static RgbImage Image(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var p = pixels.dim() == 2 ? pixels.unsqueeze(0) : pixels;
        if (p.shape[0] == 1) p = p.expand(3, -1, -1);
        var hwc = (p.clamp(0, 1) * 255).round().to(ScalarType.Byte).permute(1, 2, 0).contiguous();
        return new RgbImage((int)hwc.shape[1], (int)hwc.shape[0], hwc.data<byte>().ToArray());
    }

    /// <summary>A map H×W coloured with viridis after min-max scaling (or as given when already in [0,1] and <paramref name="normalize"/> is false).</summary>
    public static RgbImage Colorize(Tensor map, bool normalize = true)
    {
        using var scope = NewDisposeScope();
        var m = normalize ? MinMax(map) : map.clamp(0, 1);
        var idx = (m * 255).round().to(ScalarType.Int64).contiguous();
        var lut = tensor(ViridisLut.Value.ToArray()).view(256, 3);
        var rgb = lut.index_select(0, idx.flatten()).view(m.shape[0], m.shape[1], 3).contiguous();
        return new RgbImage((int)m.shape[1], (int)m.shape[0], rgb.data<byte>().ToArray());
    }

    /// <summary>Heatmap overlay: <paramref name="map"/> (h×w, any resolution) is resized to the image, min-max scaled,
    /// coloured with viridis and alpha-blended over <paramref name="pixels"/> (C×H×W in [0,1]).</summary>
    public static RgbImage Overlay(Tensor pixels, Tensor map, double alpha = 0.55, bool normalize = true)
    {
        using var scope = NewDisposeScope();
        var p = pixels.dim() == 2 ? pixels.unsqueeze(0) : pixels;
        var h = p.shape[1]; var w = p.shape[2];
        var m = map.shape[0] == h && map.shape[1] == w ? map : Resize(map, h, w);
        m = normalize ? MinMax(m) : m.clamp(0, 1);
        var idx = (m * 255).round().to(ScalarType.Int64).flatten();
        var lut = tensor(ViridisLut.Value.ToArray()).view(256, 3).to(ScalarType.Float32) / 255f;
        var heat = lut.index_select(0, idx).view(h, w, 3).permute(2, 0, 1);
        var bg = p.shape[0] == 1 ? p.expand(3, -1, -1) : p;
        var blended = bg * (1 - alpha) + heat * alpha;
        return Image(blended);
    }

    /// <summary>Batched <see cref="Overlay"/>: one overlay per row of <paramref name="pixels"/> (N×C×H×W in [0,1]) and
    /// <paramref name="maps"/> (N×h×w, any resolution), each map min-max scaled on its own. One pass of tensor ops.</summary>
    public static RgbImage[] Overlays(Tensor pixels, Tensor maps, double alpha = 0.55)
    {
        using var scope = NewDisposeScope();
        long n = pixels.shape[0], h = pixels.shape[2], w = pixels.shape[3];
        var m = maps.shape[1] == h && maps.shape[2] == w ? maps.to(ScalarType.Float32) : Resize(maps, h, w);
        var flat = m.reshape(n, -1);
        var min = flat.amin([1], keepdim: true);
        var range = flat.amax([1], keepdim: true) - min;
        var scaled = where(range > 0, (flat - min) / range.clamp_min(1e-30f), zeros_like(flat));
        var idx = (scaled * 255).round().to(ScalarType.Int64).flatten();
        var lut = tensor(ViridisLut.Value.ToArray()).view(256, 3).to(ScalarType.Float32) / 255f;
        var heat = lut.index_select(0, idx).view(n, h, w, 3);
        var bg = (pixels.shape[1] == 1 ? pixels.expand(-1, 3, -1, -1) : pixels).permute(0, 2, 3, 1);
        var rgb = ((bg.clamp(0, 1) * (1 - alpha) + heat * alpha) * 255).round().to(ScalarType.Byte).contiguous();
        var bytes = rgb.data<byte>().ToArray();
        int size = (int)(h * w * 3);
        return Enumerable.Range(0, (int)n).Select(i => new RgbImage((int)w, (int)h, bytes.AsSpan(i * size, size).ToArray())).ToArray();
    }

    /// <summary>Scales an image by an integer factor with nearest-neighbour sampling (keeps pixels crisp).</summary>
    public static RgbImage Scale(RgbImage img, int factor)
    {
        if (factor <= 1) return img;
        int w = img.Width * factor, h = img.Height * factor;
        var px = new byte[w * h * 3];
        for (int y = 0; y < h; y++)
        {
            int sy = y / factor;
            for (int x = 0; x < w; x++)
            {
                int s = (sy * img.Width + x / factor) * 3, d = (y * w + x) * 3;
                px[d] = img.Pixels[s]; px[d + 1] = img.Pixels[s + 1]; px[d + 2] = img.Pixels[s + 2];
            }
        }
        return new RgbImage(w, h, px);
    }

    /// <summary>Integer factor that makes a small image at least <paramref name="target"/> pixels wide for display.</summary>
    public static int UpscaleFactor(int size, int target = 112) => Math.Max(1, (int)Math.Ceiling(target / (double)Math.Max(1, size)));

    /// <summary>Tiles images (all the same size or not) into a grid with <paramref name="columns"/> columns.</summary>
    public static RgbImage Grid(IReadOnlyList<RgbImage> tiles, int columns, int padding = 2, byte background = 255)
    {
        if (tiles.Count == 0) return RgbImage.Blank(1, 1, background);
        columns = Math.Max(1, Math.Min(columns, tiles.Count));
        int rows = (tiles.Count + columns - 1) / columns;
        int cw = tiles.Max(t => t.Width), ch = tiles.Max(t => t.Height);
        int w = columns * cw + (columns + 1) * padding, h = rows * ch + (rows + 1) * padding;
        var grid = RgbImage.Blank(w, h, background);
        for (int i = 0; i < tiles.Count; i++)
        {
            int ox = padding + (i % columns) * (cw + padding), oy = padding + (i / columns) * (ch + padding);
            var t = tiles[i];
            for (int y = 0; y < t.Height; y++)
                Buffer.BlockCopy(t.Pixels, y * t.Width * 3, grid.Pixels, ((oy + y) * w + ox) * 3, t.Width * 3);
        }
        return grid;
    }
}
