using SkiaSharp;

namespace Loupe.Abstractions.Toolkit;

/// <summary>A colour bar beside a figure: the colour table from low (bottom) to high (top) and what its ends mean.</summary>
/// <param name="Lut">256-entry RGB table (interleaved), e.g. <see cref="Display.Lut(Colormap)"/>.</param>
/// <param name="Low">Text at the bottom end (e.g. <c>0</c>).</param>
/// <param name="High">Text at the top end (e.g. <c>2.3e-02</c> or <c>99th pct</c>).</param>
/// <param name="Label">What the colour measures, written along the bar (e.g. <c>|attribution|</c>).</param>
public sealed record ColourBar(byte[] Lut, string Low, string High, string? Label = null);

/// <summary>Labelled figures for people: image tables with a title, column titles, row labels, captions under each
/// image and a colour bar. Text is drawn with SkiaSharp in DejaVu Sans (bundled in this assembly, Bitstream Vera
/// licence, <c>Fonts/DejaVu-LICENSE.txt</c>), grey-scale anti-aliased and unhinted, so a figure is the same on every
/// machine. Image pixels are copied unchanged; text never covers them.</summary>
public static class Figure
{
    /// <summary>Size in pixels of body text (labels, captions).</summary>
    public const float TextSize = 13;
    /// <summary>Size in pixels of titles.</summary>
    public const float TitleSize = 15;
    const int Pad = 4;
    const int MaxRowLabelWidth = 220;

    static readonly Lazy<SKTypeface> Face = new(() =>
    {
        using var s = typeof(Figure).Assembly.GetManifestResourceStream("Loupe.Abstractions.Fonts.DejaVuSans.ttf")
            ?? throw new InvalidOperationException("the bundled font Fonts/DejaVuSans.ttf is missing from Loupe.Abstractions");
        return SKTypeface.FromStream(s) ?? throw new InvalidOperationException("the bundled font could not be read");
    });

    static SKFont Font(float size) => new(Face.Value, size) { Edging = SKFontEdging.Antialias, Hinting = SKFontHinting.None, Subpixel = false };

    /// <summary>Width in pixels of <paramref name="text"/> at <paramref name="size"/>.</summary>
    public static float TextWidth(string text, float size = TextSize)
    {
        using var f = Font(size);
        return f.MeasureText(text);
    }

    static int LineHeight(float size) => (int)Math.Ceiling(size * 1.25);

    /// <summary>Splits text into lines (at '\n', then at spaces) no wider than <paramref name="width"/>; at most
    /// <paramref name="maxLines"/>, the last shortened with an ellipsis when text is left over.</summary>
    public static List<string> Wrap(string text, float width, float size = TextSize, int maxLines = 3)
    {
        var lines = new List<string>();
        foreach (var para in text.Split('\n'))
        {
            var line = "";
            // Words break at spaces, and after hyphens when a word is too wide ("integrated-" / "gradients").
            var words = para.Split(' ').SelectMany(w => (TextWidth(w, size) <= width ? [w] : System.Text.RegularExpressions.Regex.Split(w, "(?<=-)"))
                .Where(p => p.Length > 0).Select((p, k) => (Text: p, Glued: k > 0))).ToList();
            foreach (var (word, glued) in words)
            {
                var candidate = line.Length == 0 ? word : line + (glued ? "" : " ") + word;
                if (line.Length > 0 && TextWidth(candidate, size) > width) { lines.Add(line); line = word; }
                else line = candidate;
            }
            lines.Add(line);
        }
        for (int i = 0; i < lines.Count; i++) lines[i] = Ellipsis(lines[i], width, size);
        if (lines.Count > maxLines)
        {
            lines = lines.Take(maxLines).ToList();
            lines[^1] = Ellipsis(lines[^1] + "…", width, size, force: true);
        }
        return lines;
    }

    /// <summary>How much wider than its cell a caption's line may be and still be drawn on one line, smaller.</summary>
    const float MaxCaptionShrink = 1.25f;

    /// <summary>A caption's lines and their sizes: each of its lines ('\n') that is at most
    /// <see cref="MaxCaptionShrink"/> times the cell's width stays one line, drawn smaller to fit; longer ones wrap
    /// (<see cref="Wrap"/>). A value range one digit longer on another machine ("0.000928 … 0.97" against
    /// "0.00093 … 0.97") then changes a few pixels, not the figure's layout.</summary>
    static List<(string Text, float Size)> CaptionLines(string caption, int width)
    {
        var lines = new List<(string, float)>();
        foreach (var line in caption.Split('\n'))
        {
            float w = TextWidth(line);
            if (w <= width) lines.Add((line, TextSize));
            else if (w <= width * MaxCaptionShrink) lines.Add((line, TextSize * width / w));
            else lines.AddRange(Wrap(line, width, TextSize, 4).Select(l => (l, TextSize)));
        }
        return lines.Count > 4 ? [.. lines.Take(3), (Ellipsis(lines[3].Item1 + "…", width, lines[3].Item2, force: true), lines[3].Item2)] : lines;
    }

    static string Ellipsis(string line, float width, float size, bool force = false)
    {
        if (!force && TextWidth(line, size) <= width) return line;
        var s = line.TrimEnd('…');
        while (s.Length > 0 && TextWidth(s + "…", size) > width) s = s[..^1];
        return s + "…";
    }

    /// <summary>A table of images: <paramref name="cells"/>[row][column] (null: empty), with an optional
    /// <paramref name="title"/> on top, a title over each column, a label left of each row, a caption under each cell
    /// and a colour bar on the right. Rows and columns take the size of their largest image.</summary>
    public static RgbImage Table(IReadOnlyList<IReadOnlyList<RgbImage?>> cells, IReadOnlyList<string>? columnTitles = null,
        IReadOnlyList<string>? rowLabels = null, string? title = null, IReadOnlyList<IReadOnlyList<string?>>? captions = null,
        ColourBar? bar = null)
    {
        int rows = cells.Count, cols = cells.Count == 0 ? 0 : cells.Max(r => r.Count);
        var colW = new int[cols];
        var rowH = new int[rows];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cells[r].Count; c++)
                if (cells[r][c] is { } img) { colW[c] = Math.Max(colW[c], img.Width); rowH[r] = Math.Max(rowH[r], img.Height); }
        for (int c = 0; c < cols; c++) colW[c] = Math.Max(colW[c], 24);
        int lh = LineHeight(TextSize), th = LineHeight(TitleSize);

        var headLines = Enumerable.Range(0, cols).Select(c => columnTitles is not null && c < columnTitles.Count ? Wrap(columnTitles[c], colW[c], TextSize, 3) : []).ToList();
        int headH = headLines.Count == 0 ? 0 : headLines.Max(l => l.Count) * lh;
        var labelLines = Enumerable.Range(0, rows).Select(r => rowLabels is not null && r < rowLabels.Count ? Wrap(rowLabels[r], MaxRowLabelWidth, TextSize, Math.Max(1, rowH[r] / lh)) : []).ToList();
        int labelW = labelLines.SelectMany(l => l).Select(l => (int)Math.Ceiling(TextWidth(l))).DefaultIfEmpty(0).Max();
        var capLines = Enumerable.Range(0, rows).Select(r => Enumerable.Range(0, cols).Select(c =>
            captions is not null && r < captions.Count && c < captions[r].Count && captions[r][c] is { } cap ? CaptionLines(cap, colW[c]) : []).ToList()).ToList();
        var capH = capLines.Select(row => row.Select(l => l.Count).DefaultIfEmpty(0).Max() is var n && n > 0 ? n * lh + 2 : 0).ToArray();

        int left = Pad + (labelW > 0 ? labelW + 3 * Pad : 0);
        int gridW = colW.Sum() + Pad * Math.Max(0, cols - 1);
        int gridH = rowH.Zip(capH, (a, b) => a + b).Sum() + Pad * Math.Max(0, rows - 1);
        var titleLines = title is null ? [] : Wrap(title, Math.Max(gridW + left, 320) - Pad, TitleSize, 2);
        int top = Pad + titleLines.Count * th + (titleLines.Count > 0 ? Pad : 0) + headH + (headH > 0 ? Pad : 0);
        var barLayout = bar is null ? default : BarLayout(bar, Math.Max(gridH, 48));
        int width = Math.Max(left + gridW + Pad + barLayout.Width, (int)Math.Ceiling(titleLines.Select(l => TextWidth(l, TitleSize)).DefaultIfEmpty(0).Max()) + 2 * Pad);
        int height = top + Math.Max(gridH, bar is null ? 0 : 48) + Pad;

        var canvas = new Canvas(width, height);
        int y = Pad;
        foreach (var l in titleLines) { canvas.Text(l, Pad, y, TitleSize); y += th; }
        int x = left;
        for (int c = 0; c < cols; c++)
        {
            var lines = headLines[c];
            for (int i = 0; i < lines.Count; i++)
                canvas.Text(lines[i], x + (colW[c] - TextWidth(lines[i])) / 2, top - Pad - (lines.Count - i) * lh, TextSize);
            x += colW[c] + Pad;
        }
        y = top;
        var blits = new List<(RgbImage Img, int X, int Y)>();
        for (int r = 0; r < rows; r++)
        {
            var ll = labelLines[r];
            int ly = y + (rowH[r] - ll.Count * lh) / 2;
            foreach (var l in ll) { canvas.Text(l, Pad, ly, TextSize); ly += lh; }
            x = left;
            for (int c = 0; c < cols; c++)
            {
                if (c < cells[r].Count && cells[r][c] is { } img)
                    blits.Add((img, x + (colW[c] - img.Width) / 2, y + (rowH[r] - img.Height) / 2));
                int cy = y + rowH[r] + 2;
                foreach (var (l, size) in capLines[r][c]) { canvas.Text(l, x + (colW[c] - TextWidth(l, size)) / 2, cy, size); cy += lh; }
                x += colW[c] + Pad;
            }
            y += rowH[r] + capH[r] + Pad;
        }
        if (bar is not null) canvas.Bar(bar, barLayout, left + gridW + Pad, top, Math.Max(gridH, 48));
        var result = canvas.ToImage();
        foreach (var (img, bx, by) in blits) Blit(img, result, bx, by);
        return result;
    }

    /// <summary>A titled sheet of captioned tiles in <paramref name="columns"/> columns (see <see cref="Table"/>).</summary>
    public static RgbImage Sheet(IReadOnlyList<RgbImage> tiles, int columns, IReadOnlyList<string?>? captions = null, string? title = null, ColourBar? bar = null)
    {
        columns = Math.Max(1, Math.Min(columns, Math.Max(1, tiles.Count)));
        var cells = tiles.Chunk(columns).Select(c => (IReadOnlyList<RgbImage?>)c.ToArray<RgbImage?>()).ToList();
        var caps = captions is null ? null : Enumerable.Range(0, cells.Count)
            .Select(r => (IReadOnlyList<string?>)Enumerable.Range(r * columns, columns).Select(i => i < captions.Count ? captions[i] : null).ToList()).ToList();
        return Table(cells, null, null, title, caps, bar);
    }

    /// <summary>An image with a title above it (and an optional colour bar).</summary>
    public static RgbImage Titled(RgbImage image, string title, ColourBar? bar = null) => Table([[image]], null, null, title, null, bar);

    /// <summary>A bar chart of a few signed values (e.g. the attributions of a side input's elements): one bar per value
    /// from a zero line, positive blue, negative red, indices under the bars, <paramref name="title"/> and the largest
    /// |value| above.</summary>
    public static RgbImage Bars(IReadOnlyList<float> values, string title)
    {
        const int barW = 22, gap = 6, plotH = 120;
        int lh = LineHeight(TextSize);
        int n = Math.Max(1, values.Count);
        int width = Math.Max(Pad * 2 + n * (barW + gap), (int)Math.Ceiling(TextWidth(title)) + 2 * Pad);
        int height = Pad + 2 * lh + plotH + lh + Pad;
        var canvas = new Canvas(width, height);
        float max = values.Count == 0 ? 0 : values.Max(v => Math.Abs(v));
        bool signed = values.Any(v => v < 0);
        canvas.Text(title, Pad, Pad, TextSize);
        canvas.Text($"max |value| {max.ToString("G3", System.Globalization.CultureInfo.InvariantCulture)}", Pad, Pad + lh, TextSize);
        int top = Pad + 2 * lh, zero = signed ? top + plotH / 2 : top + plotH;
        float scale = max > 0 ? (signed ? plotH / 2f : plotH) / max : 0;
        canvas.Rect(Pad, zero, n * (barW + gap), 1, SKColors.Gray);
        for (int i = 0; i < values.Count; i++)
        {
            int x = Pad + i * (barW + gap), h = (int)Math.Round(Math.Abs(values[i]) * scale);
            canvas.Rect(x, values[i] >= 0 ? zero - h : zero + 1, barW, h, values[i] >= 0 ? new SKColor(49, 104, 142) : new SKColor(200, 60, 50));
            canvas.Text(i.ToString(System.Globalization.CultureInfo.InvariantCulture), x + 2, top + plotH + 2, TextSize);
        }
        return canvas.ToImage();
    }

    /// <summary>Copies <paramref name="src"/> into <paramref name="dst"/> at (x, y), clipped.</summary>
    static void Blit(RgbImage src, RgbImage dst, int x, int y)
    {
        int w = Math.Min(src.Width, dst.Width - x);
        for (int r = 0; r < src.Height && y + r < dst.Height; r++)
            if (w > 0) Buffer.BlockCopy(src.Pixels, r * src.Width * 3, dst.Pixels, ((y + r) * dst.Width + x) * 3, w * 3);
    }

    readonly record struct BarGeometry(int Width, int TextW);

    static BarGeometry BarLayout(ColourBar bar, int height)
    {
        int textW = (int)Math.Ceiling(Math.Max(TextWidth(bar.Low), TextWidth(bar.High)));
        int labelW = bar.Label is null ? 0 : LineHeight(TextSize) + Pad;
        return new BarGeometry(Pad + 14 + Pad + textW + labelW + Pad, textW);
    }

    /// <summary>A white canvas for text; pixels are read back as RGB.</summary>
    sealed class Canvas(int width, int height)
    {
        readonly SKBitmap bitmap = new(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Premul));
        SKCanvas? canvas;
        SKCanvas C => canvas ??= Clear(new SKCanvas(bitmap));
        static SKCanvas Clear(SKCanvas c) { c.Clear(SKColors.White); return c; }
        readonly List<(int X, int Y, int H, ColourBar Bar)> bars = [];

        /// <summary>Draws a line of text whose top is at <paramref name="y"/>.</summary>
        public void Text(string text, float x, float y, float size)
        {
            using var f = Font(size);
            using var paint = new SKPaint { Color = SKColors.Black, IsAntialias = true };
            C.DrawText(text, MathF.Round(x), MathF.Round(y - f.Metrics.Ascent), SKTextAlign.Left, f, paint);
        }

        /// <summary>A filled rectangle.</summary>
        public void Rect(int x, int y, int w, int h, SKColor colour)
        {
            using var paint = new SKPaint { Color = colour, IsAntialias = false };
            C.DrawRect(x, y, w, h, paint);
        }

        public void Bar(ColourBar bar, BarGeometry g, int x, int y, int h)
        {
            int bx = x + Pad;
            bars.Add((bx, y, h, bar));
            int lh = LineHeight(TextSize);
            Text(bar.High, bx + 14 + Pad, y, TextSize);
            Text(bar.Low, bx + 14 + Pad, y + h - lh, TextSize);
            if (bar.Label is { } label)
            {
                using var f = Font(TextSize);
                using var paint = new SKPaint { Color = SKColors.Black, IsAntialias = true };
                var text = Ellipsis(label, h, TextSize);
                float lx = bx + 14 + Pad + g.TextW + Pad - f.Metrics.Ascent, ly = y + (h + TextWidth(text)) / 2;
                C.Save();
                C.Translate(MathF.Round(lx), MathF.Round(ly));
                C.RotateDegrees(-90);
                C.DrawText(text, 0, 0, SKTextAlign.Left, f, paint);
                C.Restore();
            }
        }

        public RgbImage ToImage()
        {
            _ = C;
            C.Flush();
            var rgba = bitmap.GetPixelSpan();
            var px = new byte[width * height * 3];
            for (int p = 0, q = 0; p < px.Length; p += 3, q += 4) { px[p] = rgba[q]; px[p + 1] = rgba[q + 1]; px[p + 2] = rgba[q + 2]; }
            canvas!.Dispose();
            bitmap.Dispose();
            var img = new RgbImage(width, height, px);
            foreach (var (bx, by, h, bar) in bars)
                for (int r = 0; r < h; r++)
                {
                    int k = (int)Math.Round(255.0 * (h - 1 - r) / Math.Max(1, h - 1));
                    for (int c = 0; c < 14; c++)
                    {
                        int d = ((by + r) * width + bx + c) * 3;
                        img.Pixels[d] = bar.Lut[k * 3]; img.Pixels[d + 1] = bar.Lut[k * 3 + 1]; img.Pixels[d + 2] = bar.Lut[k * 3 + 2];
                    }
                }
            return img;
        }
    }
}
