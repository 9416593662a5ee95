using SkiaSharp;

namespace Loupe.Abstractions.Toolkit;

/// <summary>Images that a technique reads from files it is given (masks, concept images): read through
/// <see cref="SafeFile"/> with a byte cap, the header checked against a pixel limit before anything is decoded, and
/// every failure reported as a <see cref="LoupeException"/> naming the file.</summary>
public static class ImageFiles
{
    /// <summary>Pixel limit: the default of <c>settings.max_image_pixels</c> (<see cref="DataOpenContext.MaxImagePixels"/>).</summary>
    public const long MaxPixels = 64L * 1024 * 1024;
    /// <summary>Byte cap of one image file.</summary>
    public const long MaxBytes = 256L << 20;

    /// <summary>Reads and decodes one image file (PNG, JPEG, BMP, GIF, WebP: SkiaSharp) to RGB, composited over white (transparent pixels become white, as in <see cref="PlotImages.FromPng"/>).
    /// <paramref name="what"/> starts every error message (e.g. <c>option 'masks': /data/masks/00001.png</c>).</summary>
    public static RgbImage Read(string path, string what, long maxBytes = MaxBytes, long maxPixels = MaxPixels)
    {
        var bytes = SafeFile.ReadAllBytes(path, maxBytes, what);
        using var data = SKData.CreateCopy(bytes);
        using var codec = SKCodec.Create(data) ?? throw new LoupeException($"{what}: not a readable image ({bytes.Length} bytes)");
        int w = codec.Info.Width, h = codec.Info.Height;
        if (w <= 0 || h <= 0) throw new LoupeException($"{what}: image has no pixels");
        if ((long)w * h > maxPixels) throw new LoupeException($"{what}: image is {w}×{h} = {(long)w * h} pixels, over the limit of {maxPixels}");
        var info = new SKImageInfo(w, h, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bitmap = new SKBitmap(info);
        // A truncated file decodes as far as it goes (IncompleteInput) with the rest left blank: refused, as PIL does.
        var result = codec.GetPixels(info, bitmap.GetPixels());
        if (result != SKCodecResult.Success) throw new LoupeException($"{what}: the image could not be decoded ({result}: truncated or corrupt)");
        var src = bitmap.GetPixelSpan();
        var px = new byte[w * h * 3];
        for (int i = 0, j = 0; i < px.Length; i += 3, j += 4)
        {
            int a = src[j + 3];
            for (int c = 0; c < 3; c++) px[i + c] = (byte)((src[j + c] * a + 255 * (255 - a) + 127) / 255);
        }
        return new RgbImage(w, h, px);
    }
}
