using Loupe.Abstractions;
using SkiaSharp;

namespace Loupe.Analysis.Synthesis;

/// <summary>Line plots (ScottPlot 5, rendered to PNG through SkiaSharp and decoded to an <see cref="RgbImage"/>).</summary>
public static class Plot
{
    /// <summary>One line per column of <paramref name="values"/> (steps × series).</summary>
    public static RgbImage Lines(float[,] values, string[] names, string title, int width, int height)
    {
        var plt = new ScottPlot.Plot();
        int steps = values.GetLength(0), series = values.GetLength(1);
        var xs = Enumerable.Range(1, steps).Select(i => (double)i).ToArray();
        for (int j = 0; j < series; j++)
        {
            var ys = Enumerable.Range(0, steps).Select(i => (double)values[i, j]).ToArray();
            var line = plt.Add.ScatterLine(xs, ys);
            line.LineWidth = 1.5f;
            if (series <= 12) line.LegendText = names[j];
        }
        if (series <= 12) plt.ShowLegend(ScottPlot.Edge.Right);
        plt.Title(title);
        plt.XLabel("step");
        plt.YLabel("objective");
        return FromPng(plt.GetImageBytes(series <= 12 ? width + width / 3 : width, height, ScottPlot.ImageFormat.Png));
    }

    /// <summary>Decodes a PNG to an RGB image (white background).</summary>
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
