using Loupe.Abstractions;

namespace Loupe.Analysis.Embedding;

/// <summary>Plots for embeddings: a ScottPlot 5 scatter coloured by label (PNG through SkiaSharp 3), and a thumbnail
/// map composed directly from <see cref="RgbImage"/> pixels.</summary>
public static class Plots
{
    /// <summary>Category10 colours (also used for the thumbnail frames), by label index.</summary>
    public static byte[] Colour(long label)
    {
        var c = Palette.GetColor((int)(label < 0 ? 0 : label % 10));
        return [c.R, c.G, c.B];
    }

    static readonly ScottPlot.Palettes.Category10 Palette = new();

    /// <summary>Scatter of (xs, ys) coloured by label with a legend (one entry per label).</summary>
    public static RgbImage Scatter(double[] xs, double[] ys, long[]? labels, IReadOnlyList<string> names, string title, string xLabel, string yLabel, int size)
    {
        var plt = new ScottPlot.Plot();
        float marker = xs.Length > 3000 ? 3 : xs.Length > 1000 ? 4 : 6;
        if (labels is null)
        {
            var sp = plt.Add.ScatterPoints(xs, ys, Palette.GetColor(0));
            sp.MarkerSize = marker;
        }
        else
        {
            foreach (var g in Enumerable.Range(0, labels.Length).GroupBy(i => labels[i]).OrderBy(g => g.Key))
            {
                var idx = g.ToArray();
                var c = Colour(g.Key);
                var sp = plt.Add.ScatterPoints(idx.Select(i => xs[i]).ToArray(), idx.Select(i => ys[i]).ToArray(),
                    new ScottPlot.Color(c[0], c[1], c[2], 200));
                sp.MarkerSize = marker;
                sp.LegendText = Features.LabelName(names, g.Key);
            }
            plt.ShowLegend(ScottPlot.Edge.Right);
        }
        plt.Title(title);
        plt.XLabel(xLabel);
        plt.YLabel(yLabel);
        int width = labels is null ? size : size + size / 5;
        return PlotImages.Draw(width, size, canvas => plt.Render(canvas, width, size));
    }

    /// <summary>The scatter as data for the HTML report's interactive plot.</summary>
    public static Points2D Points(string title, string xLabel, string yLabel, FeatureSet fs, double[] xs, double[] ys) =>
        new Points2D(title, xLabel, yLabel, fs.Ids, xs.Select(v => (float)v).ToArray(), ys.Select(v => (float)v).ToArray(), fs.Labels).Validated();

    /// <summary>Chooses which inputs get a thumbnail on a <paramref name="size"/>² canvas with cells of
    /// <paramref name="cell"/> px: the canvas is split into cells and each cell shows the input nearest to its centre
    /// (so thumbnails never overlap). Returns (input index, x, y) top-left positions.</summary>
    public static List<(int Index, int X, int Y)> ThumbnailLayout(double[] xs, double[] ys, int size, int cell)
    {
        int margin = cell;
        double minX = xs.Min(), maxX = xs.Max(), minY = ys.Min(), maxY = ys.Max();
        double span = Math.Max(Math.Max(maxX - minX, maxY - minY), 1e-12);
        double scale = (size - 2 * margin - cell) / span;
        int cells = size / cell;
        var best = new Dictionary<(int, int), (int Index, double D2)>();
        for (int i = 0; i < xs.Length; i++)
        {
            double px = margin + (xs[i] - minX) * scale + cell / 2.0;
            double py = margin + (maxY - ys[i]) * scale + cell / 2.0;     // y up
            int cx = Math.Clamp((int)(px / cell), 0, cells - 1), cy = Math.Clamp((int)(py / cell), 0, cells - 1);
            double dx = px - (cx + 0.5) * cell, dy = py - (cy + 0.5) * cell, d2 = dx * dx + dy * dy;
            if (!best.TryGetValue((cx, cy), out var b) || d2 < b.D2) best[(cx, cy)] = (i, d2);
        }
        return best.OrderBy(kv => kv.Value.Index).Select(kv => (kv.Value.Index, kv.Key.Item1 * cell, kv.Key.Item2 * cell)).ToList();
    }

    /// <summary>Draws thumbnails at their positions on a dark canvas; a frame in the label's colour when labels are known.</summary>
    public static RgbImage ThumbnailMap(int size, int cell, List<(int Index, int X, int Y)> layout, Func<int, RgbImage> thumbnail, long[]? labels)
    {
        var canvas = RgbImage.Blank(size, size, 24);
        foreach (var (index, x0, y0) in layout)
        {
            var t = thumbnail(index);
            if (labels is not null) t = NearestNeighbours.Frame(t, Math.Max(1, cell / 28), Colour(labels[index]));
            int w = Math.Min(t.Width, size - x0), h = Math.Min(t.Height, size - y0);
            for (int y = 0; y < h; y++)
                Buffer.BlockCopy(t.Pixels, y * t.Width * 3, canvas.Pixels, ((y0 + y) * size + x0) * 3, w * 3);
        }
        return canvas;
    }

    /// <summary>Nearest-neighbour resize of an image to exactly <paramref name="size"/>² (thumbnails).</summary>
    public static RgbImage Resize(RgbImage img, int size)
    {
        if (img.Width == size && img.Height == size) return img;
        var px = new byte[size * size * 3];
        for (int y = 0; y < size; y++)
        {
            int sy = y * img.Height / size;
            for (int x = 0; x < size; x++)
            {
                int sx = x * img.Width / size, s = (sy * img.Width + sx) * 3, d = (y * size + x) * 3;
                px[d] = img.Pixels[s]; px[d + 1] = img.Pixels[s + 1]; px[d + 2] = img.Pixels[s + 2];
            }
        }
        return new RgbImage(size, size, px);
    }
}
