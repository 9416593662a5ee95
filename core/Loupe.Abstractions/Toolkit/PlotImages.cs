using SkiaSharp;

namespace Loupe.Abstractions.Toolkit;

/// <summary>Rendered plots (ScottPlot, SkiaSharp) as Loupe images.</summary>
public static class PlotImages
{
    /// <summary>An RGB image of <paramref name="width"/> × <paramref name="height"/> drawn by <paramref name="render"/> on a
    /// white canvas (a plot's <c>Render(canvas, width, height)</c>): the pixels read straight from the bitmap. A plot taken
    /// as PNG bytes and decoded (<see cref="FromPng"/>) cost ~23 ms for a 640×420 line plot, ~16 of them in the PNG
    /// encoder; drawn here, ~5–7 ms.</summary>
    public static RgbImage Draw(int width, int height, Action<SKCanvas> render)
    {
        using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Premul));
        using (var canvas = new SKCanvas(bitmap))
        {
            canvas.Clear(SKColors.White);
            render(canvas);
            canvas.Flush();
        }
        var src = bitmap.GetPixelSpan();
        var px = new byte[width * height * 3];
        for (int i = 0, j = 0; i < px.Length; i += 3, j += 4) { px[i] = src[j]; px[i + 1] = src[j + 1]; px[i + 2] = src[j + 2]; }
        return new RgbImage(width, height, px);
    }

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
