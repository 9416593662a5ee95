using System.Runtime.CompilerServices;

namespace Loupe.Analysis.Evaluation;

/// <summary>The numbering of a mask's unknown pixels that <see cref="BandedImputation"/> factorises in: component by
/// component (8-connected, the stencil's reach: no equation couples two components), each component's pixels in raster
/// order, components in the raster order of their first pixels.
/// <para>Why: the banded factor's work follows each column's envelope, i.e. the index gap to its farthest neighbouring
/// unknown. In raster order that gap counts every unknown between two neighbours — those of other components in the
/// same rows too — so a mask of many small regions (a saliency map of speckles, ranked and cut at 10–30 %: thousands of
/// regions, the largest ~100 pixels at 224×224) costs as much as one region spanning the image (band ≈ the unknowns of
/// one image row). Component by component, the gap counts the component's own unknowns only: the work is the sum of
/// the components' n·b² instead of n·(the widest row)². A mask that is one region keeps its raster order (same
/// factor, same numbers).</para></summary>
internal static class MaskComponents
{
    /// <summary>Whether <see cref="Order"/> is worth its pass for a mask of <paramref name="unknowns"/> of H×W pixels:
    /// wide images (narrower ones' bands are at most W + 1 ≤ 40 anyway) with at most 45 % of their pixels unknown (past
    /// that, a random mask's unknowns form one region spanning the image — the 8-connected site-percolation threshold is
    /// ~0.41 — and a saliency map's large regions are few; ROAD's 50 % point, whose pass found one spanning region and
    /// went to the dissection, spent ~1.9 ms per 224×224 mask on it).</summary>
    public static bool Worthwhile(long unknowns, int h, int w) => w + 1 > 40 && unknowns * 20 <= (long)h * w * 9;

    /// <summary>Writes the unknown pixels (indices into the H×W plane) into <paramref name="order"/> component by
    /// component, raster order within each; returns their number. <paramref name="root"/> and <paramref name="slot"/>
    /// are scratch of H·W entries.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int Order(ReadOnlySpan<bool> unknown, int h, int w, Span<int> order, Span<int> root, Span<int> slot)
    {
        // Union-find in raster order over the backward neighbours (left, and the three above); a component's root is
        // its smallest pixel, i.e. its first in raster order.
        for (int y = 0, p = 0; y < h; y++)
            for (int x = 0; x < w; x++, p++)
            {
                if (!unknown[p]) continue;
                root[p] = p;
                slot[p] = 0;
                if (x > 0 && unknown[p - 1]) Unite(root, p, p - 1);
                if (y == 0) continue;
                int up = p - w;
                if (x > 0 && unknown[up - 1]) Unite(root, p, up - 1);
                if (unknown[up]) Unite(root, p, up);
                if (x + 1 < w && unknown[up + 1]) Unite(root, p, up + 1);
            }
        // Every pixel points at its root, whose slot counts its component's size; then the slots become the components'
        // first places, components in the order of their roots.
        int hw = h * w, n = 0;
        for (int p = 0; p < hw; p++)
            if (unknown[p]) slot[root[p] = Find(root, p)]++;
        for (int p = 0; p < hw; p++)
            if (unknown[p] && root[p] == p)
            {
                int size = slot[p];
                slot[p] = n;
                n += size;
            }
        for (int p = 0; p < hw; p++)
            if (unknown[p]) order[slot[root[p]]++] = p;
        return n;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int Find(Span<int> root, int p)
    {
        while (root[p] != p) p = root[p] = root[root[p]];   // path halving
        return p;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Unite(Span<int> root, int p, int q)
    {
        int a = Find(root, p), b = Find(root, q);
        if (a < b) root[b] = a;
        else if (b < a) root[a] = b;
    }
}
