using Loupe.Abstractions;

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
        int shown = series <= 12 ? width + width / 3 : width;
        return PlotImages.Draw(shown, height, canvas => plt.Render(canvas, shown, height));
    }
}
