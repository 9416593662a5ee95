using SkiaSharp;

namespace Loupe.Abstractions.Toolkit;

/// <summary>Rendered plots (ScottPlot, SkiaSharp) as Loupe images.</summary>
public static class PlotImages
{
    /// <summary>Decodes a PNG to an RGB image, composited over white (transparent pixels become white).</summary>
    public static RgbImage FromPng(byte[] png)
    {
        using var decoded = SKBitmap.Decode(png) ?? throw new LoupeException("could not decode the rendered plot");
        using var rgba = new SKBitmap(new SKImageInfo(decoded.Width, decoded.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        using (var canvas = new SKCanvas(rgba))
        {
            canvas.Clear(SKColors.White);
            canvas.DrawBitmap(decoded, 0, 0);
        }
        var src = rgba.GetPixelSpan();
        var px = new byte[decoded.Width * decoded.Height * 3];
        for (int i = 0, j = 0; i < px.Length; i += 3, j += 4) { px[i] = src[j]; px[i + 1] = src[j + 1]; px[i + 2] = src[j + 2]; }
        return new RgbImage(decoded.Width, decoded.Height, px);
    }
}
