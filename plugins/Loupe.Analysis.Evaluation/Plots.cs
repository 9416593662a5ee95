using Loupe.Abstractions;

namespace Loupe.Analysis.Evaluation;

/// <summary>Line plots (ScottPlot 5, rendered to PNG and decoded with SkiaSharp 3 to an <see cref="RgbImage"/>).</summary>
public static class Plots
{
    /// <summary>One line per series (name, ys); optional faint background lines.</summary>
    public static RgbImage Lines(double[] xs, IReadOnlyList<(string Name, double[] Ys)> series, string title, string xLabel, string yLabel,
        IReadOnlyList<double[]>? faint = null, string[]? xTicks = null, (double Min, double Max)? yRange = null, bool legendLow = false,
        int width = 640, int height = 420)
    {
        var plt = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        if (faint is not null)
            foreach (var ys in faint)
            {
                var l = plt.Add.ScatterLine(xs, ys, new ScottPlot.Color(120, 120, 120, 50));
                l.LineWidth = 1;
            }
        for (int i = 0; i < series.Count; i++)
        {
            var s = plt.Add.Scatter(xs, series[i].Ys, palette.GetColor(i));
            s.LineWidth = 2;
            s.MarkerSize = xs.Length <= 20 ? 6 : 0;
            s.LegendText = series[i].Name;
        }
        if (faint is { Count: > 0 })
        {
            var proxy = plt.Add.ScatterLine(new[] { xs[0] }, new[] { double.NaN }, new ScottPlot.Color(120, 120, 120, 120));
            proxy.LegendText = "each input";
        }
        plt.ShowLegend(legendLow ? ScottPlot.Alignment.LowerRight : ScottPlot.Alignment.UpperRight);
        if (yRange is { } yr) plt.Axes.SetLimitsY(yr.Min, yr.Max);
        if (xTicks is not null)
        {
            var ticks = xTicks.Select((t, i) => new ScottPlot.Tick(xs[i], t)).ToArray();
            plt.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks);
            plt.Axes.Bottom.TickLabelStyle.Rotation = 45;
            plt.Axes.Bottom.TickLabelStyle.Alignment = ScottPlot.Alignment.MiddleLeft;
            plt.Axes.Bottom.MinimumSize = 20 + 6 * Math.Min(24, xTicks.Max(t => t.Length));
        }
        plt.Title(xTicks is null ? title : $"{title}\n({xLabel})");
        if (xTicks is null) plt.XLabel(xLabel);
        plt.YLabel(yLabel);
        return PlotImages.Draw(width, height, canvas => plt.Render(canvas, width, height));
    }
}
