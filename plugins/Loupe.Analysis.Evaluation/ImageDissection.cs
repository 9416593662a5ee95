namespace Loupe.Analysis.Evaluation;

/// <summary>One box of the dissection: its pixels [R0, R1) × [C0, C1); a leaf, or cut by row (Horizontal) or
/// column <see cref="Line"/> into halves that precede it in post-order (<see cref="Children"/> of them non-empty).
/// Its own pixels (a leaf's box in raster order, or its line's along it) are <see cref="Count"/> entries of
/// <see cref="ImageDissection.Pixels"/> from <see cref="First"/>; its ring's, <see cref="RingCount"/> from
/// <see cref="Ring"/>.</summary>
internal readonly record struct DissectionBox(int R0, int R1, int C0, int C1, bool Leaf, bool Horizontal, int Line, int Children, int Depth)
{
    public int First { get; init; }
    public int Count { get; init; }
    public int Ring { get; init; }
    public int RingCount { get; init; }
}

/// <summary>The boxes of an H×W image in post-order, and their pixel lists (depends on the size only): the ordering
/// of <see cref="DissectedImputation"/>. A box of more than <c>leafArea</c> pixels is cut by its middle row or column
/// (the longer side) into two halves and that line.
/// <para>Ring order: every ring pixel lies on the line of an enclosing box (a pixel next to a box and outside it is on
/// the line that cut the smallest box holding both); rings are sorted by that line's depth, deepest first, then along
/// the line. A node's front (its line, then its ring) is then in that same order, and so is each child's ring within
/// it: a child's update matrix extends into its parent's lower triangle entry by entry, with no transposition.</para>
/// </summary>
internal sealed class ImageDissection
{
    public readonly DissectionBox[] Boxes;
    public readonly int[] Pixels;
    public int Count => Boxes.Length;

    public ImageDissection(int h, int w, int leafArea)
    {
        var list = new List<DissectionBox>();
        Walk(h, w, leafArea, list.Add);
        int maxDepth = list.Max(b => b.Depth), side = Math.Max(h, w) + 1;
        var key = new long[h * w];
        Array.Fill(key, long.MaxValue);
        foreach (var box in list.Where(b => !b.Leaf))
            for (int i = box.Horizontal ? box.C0 : box.R0; i < (box.Horizontal ? box.C1 : box.R1); i++)
                key[box.Horizontal ? box.Line * w + i : i * w + box.Line] = (long)(maxDepth - box.Depth) * side + i;
        var pixels = new List<int>();
        Boxes = new DissectionBox[list.Count];
        var ring = new List<int>();
        for (int b = 0; b < list.Count; b++)
        {
            var box = list[b];
            int first = pixels.Count;
            if (box.Leaf)
            {
                for (int y = box.R0; y < box.R1; y++)
                    for (int x = box.C0; x < box.C1; x++) pixels.Add(y * w + x);
            }
            else if (box.Horizontal) for (int x = box.C0; x < box.C1; x++) pixels.Add(box.Line * w + x);
            else for (int y = box.R0; y < box.R1; y++) pixels.Add(y * w + box.Line);
            ring.Clear();
            for (int x = Math.Max(box.C0 - 1, 0); x <= Math.Min(box.C1, w - 1); x++)
            {
                if (box.R0 > 0) ring.Add((box.R0 - 1) * w + x);
                if (box.R1 < h) ring.Add(box.R1 * w + x);
            }
            for (int y = box.R0; y < box.R1; y++)
            {
                if (box.C0 > 0) ring.Add(y * w + box.C0 - 1);
                if (box.C1 < w) ring.Add(y * w + box.C1);
            }
            if (ring.Any(p => key[p] == long.MaxValue)) throw new InvalidOperationException("ROAD imputation: a ring pixel on no line (dissection bug)");
            ring.Sort((p, q) => key[p].CompareTo(key[q]));
            int at = pixels.Count;
            pixels.AddRange(ring);
            Boxes[b] = box with { First = first, Count = at - first, Ring = at, RingCount = ring.Count };
        }
        Pixels = [.. pixels];
    }

    /// <summary>Calls <paramref name="visit"/> on every non-empty box of the H×W image's dissection in post-order
    /// (halves before the box they cut), with no pixel lists: what both the dissection and the storage bound
    /// (<see cref="DissectedImputation.Entries"/>) are built from.</summary>
    public static void Walk(int h, int w, int leafArea, Action<DissectionBox> visit) => Walk(0, h, 0, w, 0, leafArea, visit);

    /// <summary>Visits the box's subtree; false when the box is empty.</summary>
    static bool Walk(int r0, int r1, int c0, int c1, int depth, int leafArea, Action<DissectionBox> visit)
    {
        int rows = r1 - r0, cols = c1 - c0;
        if (rows <= 0 || cols <= 0) return false;
        if ((long)rows * cols <= leafArea)
        {
            visit(new DissectionBox(r0, r1, c0, c1, true, false, -1, 0, depth));
            return true;
        }
        bool horizontal = rows >= cols;
        int line = horizontal ? r0 + rows / 2 : c0 + cols / 2;
        int children = 0;
        if (horizontal)
        {
            if (Walk(r0, line, c0, c1, depth + 1, leafArea, visit)) children++;
            if (Walk(line + 1, r1, c0, c1, depth + 1, leafArea, visit)) children++;
        }
        else
        {
            if (Walk(r0, r1, c0, line, depth + 1, leafArea, visit)) children++;
            if (Walk(r0, r1, line + 1, c1, depth + 1, leafArea, visit)) children++;
        }
        visit(new DissectionBox(r0, r1, c0, c1, false, horizontal, line, children, depth));
        return true;
    }
}
