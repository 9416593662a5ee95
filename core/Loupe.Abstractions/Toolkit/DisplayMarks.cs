namespace Loupe.Abstractions.Toolkit;

public static partial class Display
{
    /// <summary>Colour of mark outlines (a saturated red-magenta that none of the colour maps uses).</summary>
    static readonly byte[] MarkColour = [255, 0, 160];

    /// <summary>A copy of <paramref name="image"/> (an overlay of an <paramref name="inputHeight"/>×<paramref name="inputWidth"/>
    /// input, possibly upscaled) with the outlines of <paramref name="marks"/> drawn on it: a box as its rectangle, a
    /// region as its boundary pixels (inside, with a neighbour outside), each 1 px wide per 64 px of image.</summary>
    public static RgbImage DrawMarks(RgbImage image, IEnumerable<OverlayMark> marks, int inputHeight, int inputWidth)
    {
        int w = image.Width, h = image.Height;
        var px = (byte[])image.Pixels.Clone();
        int thick = Math.Max(1, Math.Min(w, h) / 64);
        void Set(int x, int y)
        {
            if ((uint)x >= (uint)w || (uint)y >= (uint)h) return;
            int o = (y * w + x) * 3;
            px[o] = MarkColour[0]; px[o + 1] = MarkColour[1]; px[o + 2] = MarkColour[2];
        }
        double sx = w / (double)inputWidth, sy = h / (double)inputHeight;
        foreach (var mark in marks)
        {
            if (mark.Box is { Length: 4 } b)
            {
                int x1 = (int)Math.Round(b[0] * sx), y1 = (int)Math.Round(b[1] * sy), x2 = (int)Math.Round(b[2] * sx) - 1, y2 = (int)Math.Round(b[3] * sy) - 1;
                x1 = Math.Clamp(x1, 0, w - 1); x2 = Math.Clamp(x2, 0, w - 1); y1 = Math.Clamp(y1, 0, h - 1); y2 = Math.Clamp(y2, 0, h - 1);
                for (int t = 0; t < thick; t++)
                {
                    for (int x = x1; x <= x2; x++) { Set(x, y1 + t); Set(x, y2 - t); }
                    for (int y = y1; y <= y2; y++) { Set(x1 + t, y); Set(x2 - t, y); }
                }
            }
            if (mark.Mask is { } m && mark.MaskHeight > 0 && mark.MaskWidth > 0 && m.Length == mark.MaskHeight * mark.MaskWidth)
            {
                // The region at image resolution (nearest neighbour), then every inside pixel within `thick` of outside.
                var inside = new bool[w * h];
                for (int y = 0; y < h; y++)
                {
                    int my = Math.Min(mark.MaskHeight - 1, (int)(y * (long)mark.MaskHeight / h));
                    for (int x = 0; x < w; x++)
                        inside[y * w + x] = m[my * mark.MaskWidth + Math.Min(mark.MaskWidth - 1, (int)(x * (long)mark.MaskWidth / w))];
                }
                bool In(int x, int y) => (uint)x < (uint)w && (uint)y < (uint)h && inside[y * w + x];
                for (int y = 0; y < h; y++)
                    for (int x = 0; x < w; x++)
                    {
                        if (!inside[y * w + x]) continue;
                        bool edge = false;
                        for (int d = 1; d <= thick && !edge; d++)
                            edge = !In(x - d, y) || !In(x + d, y) || !In(x, y - d) || !In(x, y + d);
                        if (edge) Set(x, y);
                    }
            }
        }
        return new RgbImage(w, h, px);
    }
}
