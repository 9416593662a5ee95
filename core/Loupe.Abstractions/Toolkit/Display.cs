using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

/// <summary>Display helpers for plugins: colormaps, overlays, grids. Display images are for people;
/// raw <c>.npy</c> results are what tests compare.</summary>
public static partial class Display
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

    /// <summary>Bilinear resize (align_corners = false unless <paramref name="alignCorners"/>, as PyTorch's
    /// <c>UpsamplingBilinear2d</c>) of an H×W or N×H×W or N×C×H×W map.</summary>
    public static Tensor Resize(Tensor map, long height, long width, bool alignCorners = false)
    {
        using var scope = NewDisposeScope();
        var x = map.dim() switch { 2 => map.unsqueeze(0).unsqueeze(0), 3 => map.unsqueeze(1), _ => map };
        var r = nn.functional.interpolate(x.to(ScalarType.Float32), [height, width], mode: InterpolationMode.Bilinear, align_corners: alignCorners);
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
        return new RgbImage((int)hwc.shape[1], (int)hwc.shape[0], hwc.ToArray<byte>());
    }

    /// <summary>A map H×W coloured with viridis after min-max scaling (or as given when already in [0,1] and <paramref name="normalize"/> is false).</summary>
    public static RgbImage Colorize(Tensor map, bool normalize = true)
    {
        int h = (int)map.shape[0], w = (int)map.shape[1];
        var m = map.to(ScalarType.Float32).ToArray<float>();
        var rgb = new byte[h * w * 3];
        var lut = Viridis;
        var idx = new int[h * w];
        ColourIndices(m, normalize, idx);
        for (int p = 0; p < idx.Length; p++) lut.Slice(idx[p] * 3, 3).CopyTo(rgb.AsSpan(p * 3, 3));
        return new RgbImage(w, h, rgb);
    }

    /// <summary>Heatmap overlay: <paramref name="map"/> (h×w, any resolution) is resized to the image, min-max scaled,
    /// coloured with viridis and alpha-blended over <paramref name="pixels"/> (C×H×W or H×W in [0,1]).</summary>
    public static RgbImage Overlay(Tensor pixels, Tensor map, double alpha = 0.55, bool normalize = true)
    {
        using var p = pixels.dim() == 2 ? pixels.unsqueeze(0).unsqueeze(0) : pixels.unsqueeze(0);
        using var m = map.unsqueeze(0);
        return Overlays(p, m, alpha, normalize)[0];
    }

    static readonly Lazy<float[]> ViridisUnit = new(() => ViridisLut.Value.Select(b => b / 255f).ToArray());

    /// <summary>Batched <see cref="Overlay"/>: one overlay per row of <paramref name="pixels"/> (N×C×H×W in [0,1], C = 1
    /// or 3) and <paramref name="maps"/> (N×h×w, any resolution, bilinearly resized), each map min-max scaled on its
    /// own (or clamped to [0,1] when <paramref name="normalize"/> is false): colour = lut[round(255 · m)] (viridis unless
    /// <paramref name="colormap"/> says otherwise), pixel =
    /// round(255 · (clamp(bg, 0, 1) · (1 − α) + colour · α)), in float32 as the equivalent tensor expression
    /// (ties to even). Per-pixel work runs on spans (the blend in SIMD vectors), on the calling thread.</summary>
    public static RgbImage[] Overlays(Tensor pixels, Tensor maps, double alpha = 0.55, bool normalize = true, Colormap colormap = Colormap.Viridis)
    {
        int n = (int)pixels.shape[0], c = (int)pixels.shape[1], h = (int)pixels.shape[2], w = (int)pixels.shape[3];
        if (c != 1 && c != 3) throw new ArgumentException($"overlay pixels need 1 or 3 channels, got {c}", nameof(pixels));
        float[] m, px;
        using (NewDisposeScope())
        {
            m = (maps.shape[1] == h && maps.shape[2] == w ? maps.to(ScalarType.Float32) : Resize(maps, h, w)).ToArray<float>();
            px = pixels.to(ScalarType.Float32).ToArray<float>();
        }
        int hw = h * w;
        float keep = (float)(1 - alpha);
        var heat = HeatTerms((float)alpha, colormap);
        var result = new RgbImage[n];
        var idx = new int[hw];
        for (int i = 0; i < n; i++)
        {
            var rgb = new byte[hw * 3];
            int plane = i * c * hw, step = c == 1 ? 0 : hw;
            ColourIndices(m.AsSpan(i * hw, hw), normalize, idx);
            Blend(px.AsSpan(plane, hw), px.AsSpan(plane + step, hw), px.AsSpan(plane + 2 * step, hw), idx, heat, keep, rgb);
            result[i] = new RgbImage(w, h, rgb);
        }
        return result;
    }

    /// <summary>viridis / 255 · α per table entry and channel (the colour's share of the blend, as the tensor expression computes it).</summary>
    static float[] HeatTerms(float alpha, Colormap colormap)
    {
        var unit = colormap == Colormap.Viridis ? ViridisUnit.Value : Lut(colormap).Select(b => b / 255f).ToArray();
        var terms = new float[unit.Length];
        for (int k = 0; k < unit.Length; k++) terms[k] = unit[k] * alpha;
        return terms;
    }

    /// <summary>rgb[p] = round(255 · (clamp(bg, 0, 1) · keep + heat[idx[p]])) per channel, interleaved. The arithmetic
    /// runs on SIMD vectors of 8 pixels (round ties to even, as torch.round); the table lookup and the interleaving are
    /// scalar, through 8-element stack buffers (no per-image scratch arrays: at 224² those were 400 KB of large-object
    /// allocations per image).</summary>
    static void Blend(ReadOnlySpan<float> r, ReadOnlySpan<float> g, ReadOnlySpan<float> b, ReadOnlySpan<int> idx, float[] heat, float keep, Span<byte> rgb)
    {
        int hw = idx.Length;
        Span<float> term = stackalloc float[8];
        Span<int> value = stackalloc int[8];
        for (int ch = 0; ch < 3; ch++)
        {
            var bg = ch == 0 ? r : ch == 1 ? g : b;
            int q = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                var zero = Vector256<float>.Zero;
                var one = Vector256.Create(1f);
                var k = Vector256.Create(keep);
                var s = Vector256.Create(255f);
                // Indices are 0..255 (ColourIndices guarantees it) and rgb holds 3·hw bytes: no bounds checks inside.
                ref float heat0 = ref MemoryMarshal.GetArrayDataReference(heat);
                ref byte out0 = ref MemoryMarshal.GetReference(rgb);
                ref int idx0 = ref MemoryMarshal.GetReference(idx);
                ref float term0 = ref MemoryMarshal.GetReference(term);
                ref int value0 = ref MemoryMarshal.GetReference(value);
                for (; q + 8 <= hw; q += 8)
                {
                    for (int j = 0; j < 8; j++) Unsafe.Add(ref term0, j) = Unsafe.Add(ref heat0, Unsafe.Add(ref idx0, q + j) * 3 + ch);
                    var x = Vector256.Create(bg.Slice(q, 8));
                    x = Vector256.Min(Vector256.Max(x, zero), one);
                    var v = (x * k + Vector256.LoadUnsafe(ref term0)) * s;
                    Vector256.ConvertToInt32(Vector256.Round(v)).StoreUnsafe(ref value0);
                    for (int j = 0; j < 8; j++) Unsafe.Add(ref out0, (q + j) * 3 + ch) = (byte)Unsafe.Add(ref value0, j);
                }
            }
            for (; q < hw; q++) rgb[q * 3 + ch] = (byte)(int)MathF.Round((Math.Clamp(bg[q], 0f, 1f) * keep + heat[idx[q] * 3 + ch]) * 255f);
        }
    }

    /// <summary>Colour-table index round(255 · scaled) of every value (min-max scaled, or clamped) into
    /// <paramref name="indices"/>; a NaN anywhere makes a normalised map all-minimum (as the tensor expression did), a
    /// NaN value index 0. SIMD where available, with the scalar arithmetic's exact results (IEEE division, ties to even).</summary>
    static void ColourIndices(ReadOnlySpan<float> map, bool normalize, Span<int> indices)
    {
        float min = 0, range = 1;
        if (normalize && map.Length > 0)
        {
            float max = map[0];
            min = map[0];
            bool nan = false;
            int q = 0;
            if (Vector256.IsHardwareAccelerated && map.Length >= 8)
            {
                var vmin = Vector256.Create(map[..8]);
                var vmax = vmin;
                var vnan = Vector256<float>.Zero;
                for (; q + 8 <= map.Length; q += 8)
                {
                    var v = Vector256.Create(map.Slice(q, 8));
                    vnan |= ~Vector256.Equals(v, v);
                    vmin = Vector256.Min(vmin, v);
                    vmax = Vector256.Max(vmax, v);
                }
                nan = vnan != Vector256<float>.Zero;
                for (int j = 0; j < 8; j++) { min = Math.Min(min, vmin[j]); max = Math.Max(max, vmax[j]); }
            }
            for (; q < map.Length; q++)
            {
                var v = map[q];
                nan |= float.IsNaN(v);
                if (v < min) min = v;
                if (v > max) max = v;
            }
            if (nan) { indices.Clear(); return; }
            range = max - min;
        }
        int p = 0;
        if (Vector256.IsHardwareAccelerated && (!normalize || range > 0))
        {
            var vmin = Vector256.Create(min);
            var vrange = Vector256.Create(range);
            var zero = Vector256<float>.Zero;
            var one = Vector256.Create(1f);
            var s255 = Vector256.Create(255f);
            var top = Vector256.Create(255u);
            for (; p + 8 <= map.Length; p += 8)
            {
                var v = Vector256.Create(map.Slice(p, 8));
                var scaled = normalize ? (v - vmin) / vrange : Vector256.Min(Vector256.Max(v, zero), one);
                var k = Vector256.ConvertToInt32(Vector256.Round(scaled * s255));
                Vector256.ConditionalSelect(Vector256.LessThanOrEqual(k.AsUInt32(), top).AsInt32(), k, Vector256<int>.Zero).CopyTo(indices.Slice(p, 8));
            }
        }
        for (; p < map.Length; p++)
        {
            float s = !normalize ? Math.Clamp(map[p], 0f, 1f) : range > 0 ? (map[p] - min) / range : 0f;
            int k = (int)MathF.Round(s * 255f);
            indices[p] = (uint)k <= 255 ? k : 0;
        }
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
