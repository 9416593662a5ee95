using Loupe.Abstractions;
using Loupe.Core;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>Labelled figures (Figure), colour maps and Captum's overlay scaling.</summary>
public class FigureTests
{
    static string Golden(string name) => TestEnv.Fixture(Path.Combine("figures", name + ".png"));

    /// <summary>Compares with the committed golden image: same size; at most <paramref name="maxFraction"/> of the
    /// pixels differ by more than 48 levels in a channel and the mean absolute difference is at most
    /// <paramref name="maxMean"/> (anti-aliased text may shift by a level or two between builds of the rasteriser).
    /// <c>LOUPE_UPDATE_GOLDEN=1</c> rewrites the golden file first.</summary>
    internal static void AssertGolden(string name, RgbImage img, double maxFraction, double maxMean)
    {
        var path = Golden(name);
        if (Environment.GetEnvironmentVariable("LOUPE_UPDATE_GOLDEN") == "1")
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllBytes(path, Png.Encode(img));
        }
        var gold = Png.Load(path);
        Assert.True(gold.Width == img.Width && gold.Height == img.Height, $"{name}: {img.Width}×{img.Height}, golden {gold.Width}×{gold.Height}");
        long far = 0; double sum = 0;
        for (int p = 0; p < img.Pixels.Length; p += 3)
        {
            int d = 0;
            for (int c = 0; c < 3; c++) d = Math.Max(d, Math.Abs(img.Pixels[p + c] - gold.Pixels[p + c]));
            if (d > 48) far++;
            for (int c = 0; c < 3; c++) sum += Math.Abs(img.Pixels[p + c] - gold.Pixels[p + c]);
        }
        double fraction = far / (img.Pixels.Length / 3.0), mean = sum / img.Pixels.Length;
        Assert.True(fraction <= maxFraction && mean <= maxMean, $"{name}: {fraction:P3} of pixels differ by > 48, mean |diff| {mean:F3} (limits {maxFraction:P3}, {maxMean})");
    }

    /// <summary>A deterministic test tile: a gradient with a diagonal, so any shift or scaling of it shows.</summary>
    static RgbImage Tile(int w, int h, int seed)
    {
        var px = new byte[w * h * 3];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                int p = (y * w + x) * 3;
                px[p] = (byte)(x * 255 / Math.Max(1, w - 1));
                px[p + 1] = (byte)(y * 255 / Math.Max(1, h - 1));
                px[p + 2] = (byte)(x == y ? 255 : (seed * 40) % 256);
            }
        return new RgbImage(w, h, px);
    }

    static bool Contains(RgbImage big, RgbImage small, int x, int y)
    {
        for (int r = 0; r < small.Height; r++)
            if (!big.Pixels.AsSpan(((y + r) * big.Width + x) * 3, small.Width * 3).SequenceEqual(small.Pixels.AsSpan(r * small.Width * 3, small.Width * 3))) return false;
        return true;
    }

    static (int X, int Y)? Find(RgbImage big, RgbImage small)
    {
        for (int y = 0; y + small.Height <= big.Height; y++)
            for (int x = 0; x + small.Width <= big.Width; x++)
                if (big.Pixels[(y * big.Width + x) * 3] == small.Pixels[0] && Contains(big, small, x, y)) return (x, y);
        return null;
    }

    static bool HasInk(RgbImage img, int x0, int y0, int x1, int y1)
    {
        for (int y = Math.Max(0, y0); y < Math.Min(img.Height, y1); y++)
            for (int x = Math.Max(0, x0); x < Math.Min(img.Width, x1); x++)
                if (img.Pixels[(y * img.Width + x) * 3] < 128) return true;
        return false;
    }

    [Fact]
    public void ComparisonTableCopiesImagesUnchangedAndWritesTitlesLeftAndAbove()
    {
        var cells = Enumerable.Range(0, 3).Select(r => (IReadOnlyList<RgbImage?>)Enumerable.Range(0, 3).Select(c => (RgbImage?)Tile(56, 56, r * 3 + c)).ToList()).ToList();
        cells[1] = [cells[1][0], null, cells[1][2]];
        var img = Figure.Table(cells, ["saliency · saliency", "cam · grad-cam", "occ · occlusion"],
            ["00000\npred: ankle-boot 99.6%\ntrue: ankle-boot", "00001\npred: pullover 98.9%", "a-very-long-input-identifier-that-does-not-fit.png\npred: coat 50.0%"], "Methods × images");
        AssertGolden("comparison", img, 0.005, 1.0);
        // Every image is copied bit for bit, to the right of the row labels and below the column titles.
        var at = Find(img, cells[0][0]!);
        Assert.NotNull(at);
        Assert.True(at.Value.X > 40 && at.Value.Y > 30, $"first image at {at}");
        Assert.True(HasInk(img, 0, at.Value.Y, at.Value.X - 2, at.Value.Y + 56), "row label left of the first row");
        Assert.True(HasInk(img, at.Value.X, at.Value.Y - 20, at.Value.X + 56, at.Value.Y - 2), "column title above the first column");
        Assert.True(Contains(img, cells[2][2]!, at.Value.X + 2 * (56 + 4), at.Value.Y + 2 * (56 + 4)));
        // The empty cell stays white.
        Assert.False(HasInk(img, at.Value.X + 60, at.Value.Y + 60, at.Value.X + 116, at.Value.Y + 116));
        // Long labels are cut with an ellipsis, never wider than the limit.
        Assert.True(img.Width < 230 + 3 * 60 + 20, $"width {img.Width}");
    }

    /// <summary>colormap: jet is pytorch-grad-cam's show_cam_on_image colours (OpenCV's COLORMAP_JET, read from OpenCV by
    /// make_sobel_fixtures.py) within one level, and overlays draw with it.</summary>
    [Fact]
    public void JetIsOpenCvsColormapWithinOneLevel()
    {
        var lut = Display.Lut(Colormap.Jet);
        var opencv = Npy.Read(TestEnv.Fixture("opencv_jet.npy")).Data;
        Assert.Equal(opencv.Length, lut.Length);
        Assert.True(Enumerable.Range(0, lut.Length).All(i => Math.Abs(lut[i] - opencv[i]) <= 1), "jet differs from OpenCV's by more than one level");
        using var ramp = arange(256, dtype: ScalarType.Float32).view(1, 1, 256);
        using var pixels = zeros(1, 3, 1, 256);
        var overlay = Display.Overlays(pixels, ramp, alpha: 1, colormap: Colormap.Jet)[0];
        Assert.Equal(lut, overlay.Pixels);
    }

    [Fact]
    public void EachMapsRangeIsItsMinAndMaxOrItsClipValue()
    {
        // Min-max scaling: the ends of the bar are the map's own min and max (NaN ignored).
        Assert.Equal("-0.5 … 2.25", Explain.RangeText([1f, -0.5f, float.NaN, 2.25f], null));
        // Captum's scaling: the clip value where the cumulative sum of the sorted |values| first reaches 100 − outlier %
        // of the total (Captum's _cumulative_sum_threshold). Values 1..100 (total 5050): with no outliers, 100; with 2%,
        // 98% of 5050 = 4949 is first reached at 99 (1 + … + 98 = 4851, 1 + … + 99 = 4950).
        var ramp = Enumerable.Range(1, 100).Select(v => (float)v).ToArray();
        Assert.Equal("0 … 100", Explain.RangeText(ramp, new OverlayStyle { Sign = AttributionSign.Absolute }));
        Assert.Equal("0 … 99", Explain.RangeText(ramp, new OverlayStyle { OutlierPerc = 2 }));
        // Signed: ± the clip value of |map|; negative: the clip value of the negative part.
        Assert.Equal("±3", Explain.RangeText([-3f, 1f, 2f], new OverlayStyle { Sign = AttributionSign.All }));
        Assert.Equal("−3 … 0", Explain.RangeText([-3f, 1f, 2f], new OverlayStyle { Sign = AttributionSign.Negative }));
    }

    [Fact]
    public void OverlaySheetHasCaptionsAndAColourBarWithItsRange()
    {
        var tiles = Enumerable.Range(0, 5).Select(i => Tile(40, 40, i)).ToList();
        var bar = new ColourBar(Display.Lut(Colormap.Viridis).ToArray(), "0", "scale", "|attribution| / 99% cum. threshold");
        // Each caption ends with its map's range (Explain.RangeText): the bar's "scale" differs per tile.
        var img = Figure.Sheet(tiles, 3, tiles.Select((_, i) => (string?)$"{i:D5}\nclass {i}\n0 … {0.0123 * (i + 1):G3}").ToList(), "sal · saliency", bar);
        AssertGolden("overlay-grid", img, 0.005, 1.0);
        // The bar: viridis from the bottom (index 0) to the top (index 255), in one column right of the tiles.
        var lut = Display.Lut(Colormap.Viridis).AsSpan();
        int bx = -1, top = -1;
        for (int y = 0; y < img.Height && bx < 0; y++)
            for (int x = img.Width / 2; x < img.Width; x++)
                if (img.Pixels.AsSpan((y * img.Width + x) * 3, 3).SequenceEqual(lut.Slice(255 * 3, 3))) { bx = x; top = y; break; }
        Assert.True(bx > 3 * 40, $"bar top colour found at x = {bx}");
        int bottom = top;
        while (bottom + 1 < img.Height && !img.Pixels.AsSpan(((bottom + 1) * img.Width + bx) * 3, 3).SequenceEqual(new byte[] { 255, 255, 255 })) bottom++;
        Assert.True(img.Pixels.AsSpan((bottom * img.Width + bx) * 3, 3).SequenceEqual(lut[..3]), "bar bottom is the table's first colour");
        Assert.True(bottom - top >= 40, $"bar {bottom - top} px tall");
        Assert.True(HasInk(img, bx + 14, top, img.Width, top + 16), "high end labelled");
    }

    [Fact]
    public void TitledSheetsOfPatchesNeighboursAndSynthesisAreStable()
    {
        var patches = Enumerable.Range(0, 9).Select(i => Tile(32, 32, i)).ToList();
        AssertGolden("max-patches", Figure.Sheet(patches, 3, patches.Select((_, i) => (string?)$"{i * 7:D5}\nact {Display.Number(6.02 - i * 0.1)}").ToList(),
            "relu3 · channel 3: top 9 patches"), 0.005, 1.0);
        var row = Enumerable.Range(0, 4).Select(i => Tile(28, 28, i)).ToList();
        AssertGolden("neighbours", Figure.Sheet(row, 4, ["query 00000\nankle-boot", "00401 d=8.09e-3", "00456 d=0.0151", "00178 d=0.0154"],
            "gap: 3 nearest neighbours per query (cosine distance; query first, framed)"), 0.005, 1.0);
        AssertGolden("activation-max", Figure.Sheet(row, 2, ["class:sneaker\nobjective 12.3", "class:bag\nobjective 9.87", "channel:relu3:5\nobjective 3.2", "neuron:relu3:5:3:3\nobjective 1.1"],
            "am: images that maximise each objective (64 steps)"), 0.005, 1.0);
        AssertGolden("filters", Figure.Titled(Display.Grid(row, 4), "conv1: 4 of 32 filters (one input channel; each filter scaled on its own)"), 0.005, 1.0);
    }

    [Fact]
    public void WrapKeepsLinesWithinTheWidthAndMarksCutText()
    {
        var lines = Figure.Wrap("class 9 (ankle-boot) with many more words than fit", 90, Figure.TextSize, 2);
        Assert.Equal(2, lines.Count);
        Assert.All(lines, l => Assert.True(Figure.TextWidth(l) <= 90, l));
        Assert.EndsWith("…", lines[1]);
        Assert.Equal(["00000", "pred: coat"], Figure.Wrap("00000\npred: coat", 200));
        Assert.True(Figure.TextWidth("WWWW") > Figure.TextWidth("iiii"));
    }

    [Theory]
    [InlineData(0.0231, "0.0231")]
    [InlineData(12.345, "12.3")]
    [InlineData(1234.5, "1235")]
    [InlineData(0.00809, "8.09e-3")]
    [InlineData(-5.0, "-5")]
    [InlineData(0.0, "0")]
    [InlineData(2.5e6, "2.5e+6")]
    public void NumbersHaveThreeSignificantDigits(double v, string text) => Assert.Equal(text, Display.Number(v));

    [Fact]
    public void ColourMapsRunFromTheirFirstToTheirLastAnchor()
    {
        var d = Display.Lut(Colormap.Diverging).AsSpan();
        Assert.Equal(new byte[] { 0x05, 0x30, 0x61 }, d[..3].ToArray());
        Assert.Equal(new byte[] { 0x67, 0x00, 0x1f }, d[(255 * 3)..].ToArray());
        // Zero (index 127.5) is near white: the anchor 0xf7f7f7 sits exactly halfway.
        Assert.All(d.Slice(127 * 3, 6).ToArray(), b => Assert.InRange(b, 0xee, 0xfa));
        var g = Display.Lut(Colormap.Grey).AsSpan();
        Assert.Equal(new byte[] { 0, 0, 0, 1, 1, 1 }, g[..6].ToArray());
        Assert.Equal(Display.Viridis.ToArray(), Display.Lut(Colormap.Viridis).ToArray());
    }

    [Theory]
    [InlineData("absolute", AttributionSign.Absolute)]
    [InlineData("positive", AttributionSign.Positive)]
    [InlineData("negative", AttributionSign.Negative)]
    [InlineData("all", AttributionSign.All)]
    public void NormalizeAttributionMatchesCaptumsVisualizeImageAttr(string name, AttributionSign sign)
    {
        var input = Npy.Read(TestEnv.Fixture("display/normalize_input.npy"));
        int k = (int)input.Shape[0], hw = (int)(input.Shape[1] * input.Shape[2]);
        foreach (var perc in new[] { 0, 1, 2, 10 })
        {
            var want = Npy.Read(TestEnv.Fixture($"display/normalize_{name}_{perc}.npy"));
            for (int m = 0; m < k; m++)
            {
                var (got, _) = Display.NormalizeAttribution(input.Data.AsSpan(m * hw, hw), sign, perc);
                for (int i = 0; i < hw; i++)
                    Assert.True(Math.Abs(got[i] - want.Data[m * hw + i]) <= 1e-6, $"{name} outlier {perc} map {m} [{i}]: {got[i]} vs {want.Data[m * hw + i]}");
            }
        }
    }

    [Fact]
    public void CumulativeSumThresholdIsTheValueWhereTheSortedSumCrossesThePercentage()
    {
        // Sorted 1, 2, 3, 4 (sum 10): cumulative 1, 3, 6, 10. 60 % → 3; 61 % → 4; 100 % → 4; 10 % → 1.
        float[] v = [4, 1, 3, 2];
        Assert.Equal(3f, Display.CumulativeSumThreshold(v, 60));
        Assert.Equal(4f, Display.CumulativeSumThreshold(v, 61));
        Assert.Equal(4f, Display.CumulativeSumThreshold(v, 100));
        Assert.Equal(1f, Display.CumulativeSumThreshold(v, 10));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void CumulativeSumThresholdEqualsTheSortedScanOnRandomMapsWithTies(int seed)
    {
        // The sorted-scan definition (Captum's: sort, cumulative sum, first index reaching the goal) against the
        // selection the toolkit uses, on maps with many ties (quantised values), zeros and a heavy tail.
        var rng = new Random(seed);
        foreach (int n in new[] { 1, 2, 7, 1000, 50176 })
        {
            var v = new float[n];
            for (int i = 0; i < n; i++)
                v[i] = rng.Next(4) == 0 ? 0 : MathF.Round((float)(-Math.Log(1 - rng.NextDouble()) * 3), seed == 2 ? 0 : 3);
            foreach (double pct in new[] { 0.5, 10, 50, 98, 99.9, 100 })
            {
                var sorted = v.OrderBy(x => x).ToArray();
                double total = sorted.Sum(x => (double)x), goal = total * 0.01 * pct, sum = 0;
                float expected = sorted[^1];
                foreach (var x in sorted) { sum += x; if (sum >= goal) { expected = x; break; } }
                Assert.Equal(expected, Display.CumulativeSumThreshold(v, pct));
            }
        }
    }

    [Fact]
    public void StyledOverlaysClipOutliersSoTheRestIsVisible()
    {
        // One bright pixel (under 1 % of the total): min-max scaling leaves everything else at 0; Captum's
        // cumulative-sum clipping at 99 % scales by 1, so the rest is at the top of the colour map.
        using var map = full(1, 64, 64, 1f);
        map[0, 0, 0] = tensor(30f);
        using var pixels = zeros(1, 1, 64, 64);
        var minmax = Explain.StyledOverlays(pixels, map, null)[0];
        var clipped = Explain.StyledOverlays(pixels, map, OverlayStyle.Gradient)[0];
        var lut = Display.Viridis.ToArray();
        // With a black background and α = 0.55 the colour is round(255 · 0.55 · lut/255).
        byte Expect(int index, int ch) => (byte)Math.Round(lut[index * 3 + ch] * 0.55f);
        Assert.Equal(Expect(0, 1), minmax.Pixels[(64 * 4 + 4) * 3 + 1]);
        Assert.Equal(Expect(255, 1), clipped.Pixels[(64 * 4 + 4) * 3 + 1]);
        // Opacity and grey: a pixel at scale 1 is 0.3 · 255 over black.
        var grey = Explain.StyledOverlays(pixels, map, new OverlayStyle { Sign = AttributionSign.Absolute, OutlierPerc = 1, Opacity = 0.3, Colormap = Colormap.Grey })[0];
        Assert.Equal((byte)Math.Round(255 * 0.3f), grey.Pixels[(64 * 4 + 4) * 3]);
    }
}
