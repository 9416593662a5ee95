using Loupe.Abstractions;
using SkiaSharp;

namespace Loupe.Analysis.Concepts;

/// <summary>Plots of the concept techniques: ScottPlot 5 charts rendered through SkiaSharp, then titled with
/// <see cref="Figure"/>; image crops and heat maps as captioned <see cref="Figure"/> tables.</summary>
public static class ConceptPlots
{
    static readonly ScottPlot.Palettes.Category10 Palette = new();

    /// <summary>Grouped bar chart: one group per class, one bar per concept (mean ± std error bar), "*" over significant
    /// bars and "n.s." over the others; the random baseline grey.</summary>
    public static RgbImage TcavBars(IReadOnlyList<TcavBar> bars, string title)
    {
        var plt = new ScottPlot.Plot();
        var classes = bars.Select(b => b.Class).Distinct().ToList();
        var concepts = bars.Select(b => b.Concept).Distinct().ToList();
        double group = concepts.Count + 1;
        var items = new List<ScottPlot.Bar>();
        foreach (var b in bars)
        {
            int ci = concepts.IndexOf(b.Concept), k = classes.IndexOf(b.Class);
            double x = k * group + ci;
            var colour = b.Significant is null ? new ScottPlot.Color(150, 150, 150) : Palette.GetColor(ci);
            items.Add(new ScottPlot.Bar { Position = x, Value = b.Mean, Error = b.Std, FillColor = colour });
            var mark = b.Significant switch { true => "*", false => "n.s.", null => "" };
            if (mark.Length > 0)
            {
                var text = plt.Add.Text(mark, x, Math.Min(1.12, b.Mean + b.Std + 0.03));
                text.LabelFontSize = mark == "*" ? 22 : 12;
                text.LabelAlignment = ScottPlot.Alignment.LowerCenter;
            }
        }
        plt.Add.Bars(items);
        for (int ci = 0; ci < concepts.Count; ci++)
            plt.Legend.ManualItems.Add(new ScottPlot.LegendItem
            {
                LabelText = concepts[ci],
                FillColor = bars.First(b => b.Concept == concepts[ci]).Significant is null ? new ScottPlot.Color(150, 150, 150) : Palette.GetColor(ci),
            });
        plt.ShowLegend(ScottPlot.Edge.Right);
        var ticks = classes.Select((c, k) => new ScottPlot.Tick(k * group + (concepts.Count - 1) / 2.0, $"class {c}")).ToArray();
        plt.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks);
        plt.Axes.Bottom.MajorTickStyle.Length = 0;
        plt.Axes.SetLimitsY(0, 1.25);
        plt.Axes.SetLimitsX(-0.8, classes.Count * group - 1.2);
        plt.YLabel("TCAV score (fraction of the class's inputs)");
        plt.HideGrid();
        int width = Math.Max(520, 90 * bars.Count + 200);
        return Figure.Titled(PlotImages.Draw(width, 400, canvas => plt.Render(canvas, width, 400)), title);
    }

    /// <summary>Horizontal bar chart of one value per item (e.g. units per concept, concept importances).</summary>
    public static RgbImage Bars(IReadOnlyList<string> labels, IReadOnlyList<double> values, string valueLabel, string title)
    {
        var plt = new ScottPlot.Plot();
        var items = values.Select((v, i) => new ScottPlot.Bar { Position = i, Value = v, FillColor = Palette.GetColor(i % 10) }).ToList();
        plt.Add.Bars(items);
        for (int i = 0; i < values.Count; i++)
        {
            var t = plt.Add.Text(Display.Number(values[i]), i, values[i]);
            t.LabelAlignment = ScottPlot.Alignment.LowerCenter;
            t.LabelFontSize = 12;
        }
        plt.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(labels.Select((l, i) => new ScottPlot.Tick(i, l)).ToArray());
        plt.Axes.Bottom.MajorTickStyle.Length = 0;
        double max = values.DefaultIfEmpty(0).Max(), min = Math.Min(0, values.DefaultIfEmpty(0).Min());
        plt.Axes.SetLimitsY(min, max <= 0 ? 1 : max * 1.2);
        plt.YLabel(valueLabel);
        plt.HideGrid();
        int wide = Math.Max(420, 70 * values.Count + 140);
        return Figure.Titled(PlotImages.Draw(wide, 360, canvas => plt.Render(canvas, wide, 360)), title);
    }

    /// <summary>A display tile of C×H×W pixels in [0,1], upscaled to about <paramref name="size"/> pixels.</summary>
    public static RgbImage Tile(TorchSharp.torch.Tensor chw, int size = 64)
    {
        var img = Display.Image(chw);
        return Display.Scale(img, Display.UpscaleFactor(img.Width, size));
    }
}
