using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Loupe.Analysis.Evaluation;

/// <summary>The steps of <see cref="DissectedImputation.Solve"/> on one node: its update's place on the update list,
/// its children's updates added into its front, A's couplings, its forward solve.</summary>
public static partial class DissectedImputation
{
    /// <summary>Puts a node's update (packed, at <paramref name="offset"/> of the stack or of the all-unknown system's
    /// updates) on the update list.</summary>
    static void PushUpdate(Workspace ws, ref int count, int offset, int size, int listAt, bool cached)
    {
        if (count == ws.Updates.Length) Array.Resize(ref ws.Updates, 2 * count);
        ws.Updates[count++] = (offset, size, listAt, cached);
    }

    /// <summary>The forward solve L y = r over one node's front <paramref name="f"/>, every channel: V's values (a run
    /// of y from <paramref name="start"/>) become y, B's (gathered) take the update; the pivots' reciprocals are kept
    /// for the backward solve (a division per unknown fewer, off both solves' dependency chains).</summary>
    static unsafe void ForwardNode(Workspace ws, double* f, int ld, int k, int m, int n, int groups, int start, int vStart, int[] places)
    {
        if (k == 0) return;
        fixed (double* y = ws.Y)
        fixed (double* g = ws.Gather)
        fixed (double* inverse = ws.Inverse)
        {
            double* inv = inverse + start;
            for (int j = 0; j < k; j++) inv[j] = 1 / f[(long)j * ld + j];
            for (int group = 0; group < groups; group++)
            {
                double* yv = y + ((long)group * n + start) * 4, yg = y + (long)group * n * 4;
                for (int i = 0; i < m; i++) Vector256.Load(yg + 4 * places[vStart + k + i]).Store(g + 4 * i);
                FrontKernels.ForwardFront(f, ld, k, m, yv, g, inv);
                for (int i = 0; i < m; i++) Vector256.Load(g + 4 * i).Store(yg + 4 * places[vStart + k + i]);
            }
        }
    }

    /// <summary>column[r] −= <paramref name="weight"/> when the neighbour's place r is below the diagonal (r &gt; i),
    /// without a branch (whether a neighbour is unknown and placed after is as irregular as the mask: the branch
    /// mispredicted often): otherwise the column's zero pad row <paramref name="spare"/> (t..t + 7, one per neighbour,
    /// so that no two updates wait on one address) takes −0, and stays +0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Couple(double* column, int i, int r, int spare, double weight)
    {
        int after = (i - r) >> 31;   // all ones where r > i
        column[(r & after) | (spare & ~after)] -= BitConverter.Int64BitsToDouble(BitConverter.DoubleToInt64Bits(weight) & after);
    }

    /// <summary>Adds the columns [<paramref name="from"/>, <paramref name="to"/>) of the front that child update
    /// <paramref name="u"/> lands in (its columns whose places fall there; they come first to last, rings being in the
    /// front's order) into the front <paramref name="f"/>, entry by entry (vectors over runs of consecutive places were
    /// no faster on dense rings and several times slower on scattered ones).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void ExtendAdd(Workspace ws, int u, double* stack, double* cached, double* f, int ld, int[] lists, int[] pos, int from, int to)
    {
        var (offset, size, listAt, fromCache) = ws.Updates[u];
        var map = ws.Map;
        for (int i = 0; i < size; i++) map[i] = pos[lists[listAt + i]];
        int j = 0;
        while (j < size && map[j] < from) j++;
        double* column = (fromCache ? cached : stack) + offset + (long)j * size - (long)j * (j - 1) / 2;
        for (; j < size && map[j] < to; column += size - j, j++)
        {
            double* into = f + (long)map[j] * ld;
            for (int i = j; i < size; i++) into[map[i]] += column[i - j];
        }
    }

}
