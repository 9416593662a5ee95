using Loupe.Abstractions;
using SkiaSharp;
using static TorchSharp.torch;

namespace Loupe.Analysis.Concepts;

/// <summary>Concept example folders and mask files: PNG/JPEG/BMP/GIF/WebP decoded with SkiaSharp to 8-bit RGB (or
/// BT.709 luminance for 1-channel models), stretched to the model's size with a linear filter when the size differs,
/// then ÷ 255. The host's data sources read the dataset; these folders are the concept sets a technique is given.</summary>
public static class ConceptImages
{
    static readonly string[] Extensions = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"];
    const long MaxPixels = 64L << 20;

    /// <summary>Image files of a folder, sorted by name (ordinal).</summary>
    public static List<string> Files(string folder, string what)
    {
        if (!Directory.Exists(folder)) throw new LoupeException($"{what}: folder not found: {folder}");
        var files = Directory.EnumerateFiles(folder).Where(f => Extensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
            .OrderBy(f => f, StringComparer.Ordinal).ToList();
        if (files.Count == 0) throw new LoupeException($"{what}: no images in {folder} ({string.Join(", ", Extensions)})");
        return files;
    }

    /// <summary>Subfolders of <paramref name="folder"/>, sorted by name: the concept (or random set) names.</summary>
    public static List<string> Subfolders(string folder, string what)
    {
        if (!Directory.Exists(folder)) throw new LoupeException($"{what}: folder not found: {folder}");
        var dirs = Directory.EnumerateDirectories(folder).OrderBy(d => d, StringComparer.Ordinal).ToList();
        if (dirs.Count == 0) throw new LoupeException($"{what}: {folder} has no subfolders (one per concept / set is expected)");
        return dirs;
    }

    /// <summary>Decodes one file to C×H×W floats in [0,1] at the model's size.</summary>
    public static float[] Load(string file, InputSpec spec)
    {
        using var codec = SKCodec.Create(file) ?? throw new LoupeException($"{file}: not a readable image");
        if ((long)codec.Info.Width * codec.Info.Height > MaxPixels) throw new LoupeException($"{file}: image is {codec.Info.Width}×{codec.Info.Height}, over {MaxPixels} pixels");
        using var decoded = SKBitmap.Decode(codec) ?? throw new LoupeException($"{file}: cannot decode image");
        using var rgba = new SKBitmap(new SKImageInfo(spec.Width, spec.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        if (decoded.Width == spec.Width && decoded.Height == spec.Height && decoded.ColorType == SKColorType.Rgba8888) decoded.CopyTo(rgba);
        else using (var canvas = new SKCanvas(rgba))
        {
            canvas.Clear(SKColors.Black);
            using var img = SKImage.FromBitmap(decoded);
            canvas.DrawImage(img, new SKRect(0, 0, spec.Width, spec.Height), new SKSamplingOptions(SKFilterMode.Linear));
        }
        var src = rgba.GetPixelSpan();
        int hw = spec.Width * spec.Height;
        var result = new float[spec.Channels * hw];
        for (int i = 0; i < hw; i++)
        {
            byte r = src[4 * i], g = src[4 * i + 1], b = src[4 * i + 2];
            if (spec.Channels == 1)
                result[i] = r == g && g == b ? r / 255f : (float)Math.Round(0.2126 * r + 0.7152 * g + 0.0722 * b) / 255f;
            else { result[i] = r / 255f; result[hw + i] = g / 255f; result[2 * hw + i] = b / 255f; }
        }
        return result;
    }

    /// <summary>The files as an N×C×H×W tensor of display pixels in [0,1] (owned by the caller).</summary>
    public static Tensor Pixels(IReadOnlyList<string> files, InputSpec spec)
    {
        var all = new float[files.Count * spec.Channels * spec.Height * spec.Width];
        for (int i = 0; i < files.Count; i++) Load(files[i], spec).CopyTo(all, (long)i * spec.Channels * spec.Height * spec.Width);
        return tensor(all, [files.Count, spec.Channels, spec.Height, spec.Width]);
    }

    /// <summary>A mask file as H×W booleans (a pixel belongs to the concept when its value is ≥ 128).</summary>
    public static bool[] Mask(string file, InputSpec spec)
    {
        var grey = Load(file, spec with { Channels = 1, Mean = [0f], Std = [1f] });
        return grey.Select(v => v >= 0.5f).ToArray();
    }
}
