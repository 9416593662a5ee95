using Loupe.Abstractions.Toolkit;
using Loupe.Analysis.Evaluation;

namespace Loupe.Evaluation.Tests;

/// <summary>Plots are drawn straight onto a bitmap (<see cref="PlotImages.Draw"/>) instead of being encoded to PNG and
/// decoded: the same picture, and the drawing is visibly a plot (a white page with dark ink and the series' colour).</summary>
public class PlotImageTests
{
    static ScottPlot.Plot Sample()
    {
        var plt = new ScottPlot.Plot();
        double[] xs = [10, 30, 50, 70, 90];
        for (int i = 0; i < 6; i++)
        {
            var line = plt.Add.ScatterLine(xs, xs.Select(x => Math.Sin(x / 20 + i)).ToArray(), new ScottPlot.Color(120, 120, 120, 50));
            line.LineWidth = 1;
        }
        var mean = plt.Add.Scatter(xs, xs.Select(x => x / 100).ToArray());
        mean.LegendText = "mean over inputs";
        plt.ShowLegend();
        plt.Title("road of 'saliency'");
        plt.XLabel("pixels imputed, % of the image");
        plt.YLabel("explained class still predicted");
        return plt;
    }

    [Fact]
    public void DrawingOnABitmapGivesThePngRoutesPicture()
    {
        var viaPng = PlotImages.FromPng(Sample().GetImageBytes(640, 420, ScottPlot.ImageFormat.Png));
        var plt = Sample();
        var drawn = PlotImages.Draw(640, 420, canvas => plt.Render(canvas, 640, 420));
        Assert.Equal((viaPng.Width, viaPng.Height), (drawn.Width, drawn.Height));
        int differing = 0;
        for (int i = 0; i < drawn.Pixels.Length; i++)
            if (Math.Abs(drawn.Pixels[i] - viaPng.Pixels[i]) > 2) differing++;
        Assert.True(differing <= drawn.Pixels.Length / 1000, $"{differing} of {drawn.Pixels.Length} values differ by more than 2");
        int white = 0, dark = 0;
        for (int i = 0; i < drawn.Pixels.Length; i += 3)
        {
            int sum = drawn.Pixels[i] + drawn.Pixels[i + 1] + drawn.Pixels[i + 2];
            if (sum == 3 * 255) white++;
            else if (sum < 150) dark++;
        }
        Assert.True(white > drawn.Width * drawn.Height / 2, $"white {white}");
        Assert.True(dark > 500, $"dark (text, axes) {dark}");
    }

    [Fact]
    public void TheMetricsLinePlotHasItsSize()
    {
        var image = Plots.Lines([0, 1, 2], [("mean", new[] { 0.1, 0.5, 0.2 })], "title", "x", "y", faint: [[0.0, 0.2, 0.4]]);
        Assert.Equal((640, 420), (image.Width, image.Height));
        Assert.Equal(640 * 420 * 3, image.Pixels.Length);
    }
}
