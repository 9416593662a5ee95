using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Loupe.Analysis.Evaluation;

/// <summary>The direct path of <see cref="LinearImputation"/> for large images: the same system as
/// <see cref="BandedImputation"/> (unknown p: (Σ in-image w) v_p − Σ_{unknown q} w v_q = Σ_{known q} w x_q, w = 1/6
/// direct, 1/12 diagonal), solved exactly by a multifrontal Cholesky factorisation in nested-dissection order, in
/// float64, all channels as right-hand sides.
/// <para>Why: the banded factorisation costs n·b²/2 multiply-adds, b ≈ the unknowns of one image row; on a full
/// 224×224 mask that is ~1.3·10⁹, more arithmetic than resnet18's forward of the image. Nested dissection (George 1973)
/// orders the unknowns so that the factor's work grows as n^1.5 instead of n·W²: ~10× less at 224×224.</para>
/// <para>How: the image's box is cut in two by its middle row or column (the longer side), each half again, down to
/// boxes of at most <see cref="LeafArea"/> pixels. A one-pixel line separates the two halves (8-neighbours are at most
/// one row and column apart), so each half's unknowns couple with the other's only through the line's. Unknowns are
/// eliminated leaves first, each box's line after both its halves. Each box (node) gathers a dense frontal matrix over
/// its own unknowns V (a leaf's box, or its line) and the unknowns B on the one-pixel ring around its box (which all
/// lie on lines of enclosing boxes, eliminated later): A's entries that couple V to V ∪ B, plus its halves' update
/// matrices (their rings lie in V ∪ B); it eliminates V (a dense partial Cholesky, the same four-column kernel as the
/// banded path) and passes the Schur complement on B to its parent. The factor's columns stay for the two triangular
/// solves (forward over the nodes in elimination order, backward in reverse). Same numbers as the banded path to
/// rounding (tests/Loupe.Evaluation.Tests/ImputationTests.cs).</para></summary>
public static class DissectedImputation
{
    /// <summary>Largest box that is not cut further: its unknowns form one dense front.</summary>
    public const int LeafArea = 24;

    /// <summary>Imputes one image in place, as <see cref="BandedImputation.Solve"/> does (same rule for an image with no
    /// known pixel: its pixels become 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Solve(Span<double> image, ReadOnlySpan<bool> unknown, int c, int h, int w)
    {
        int hw = h * w;
        if (image.Length < c * hw || unknown.Length < hw) throw new ArgumentException("ROAD imputation: image or mask shorter than C×H×W");
        int n = unknown[..hw].Count(true);
        if (n == 0) return;
        if (n == hw)
        {
            image[..(c * hw)].Clear();
            return;
        }
        var ws = Workspace.For(h, w, c);
        var tree = ws.Tree;
        var pos = ws.Position;   // a pixel's place in the front being assembled, else −1
        if (ws.Dirty) Array.Fill(pos, -1);   // a solve that threw left a front's places set
        ws.Dirty = true;

        // Right-hand sides: per channel, Σ_{known in-image neighbours} w x_q at every pixel (used at the unknown ones),
        // from a copy of the known values on a grid with a zero border (no bounds tests, no branch on the mask).
        var rhs = ws.Rhs;
        int w2 = w + 2, padded = (h + 2) * w2;
        var known = ws.Known;
        for (int ch = 0; ch < c; ch++)
        {
            var plane = image.Slice(ch * hw, hw);
            var z = known.AsSpan(ch * padded, padded);
            for (int y = 0, p = 0; y < h; y++)
                for (int x = 0, q = (y + 1) * w2 + 1; x < w; x++, p++, q++)
                    z[q] = unknown[p] ? 0 : plane[p];
            var b = rhs.AsSpan(ch * hw, hw);
            for (int y = 0, p = 0; y < h; y++)
                for (int x = 0, q = (y + 1) * w2 + 1; x < w; x++, p++, q++)
                    b[p] = (z[q - 1] + z[q + 1] + z[q - w2] + z[q + w2]) / 6 + (z[q - w2 - 1] + z[q - w2 + 1] + z[q + w2 - 1] + z[q + w2 + 1]) / 12;
        }

        // Factorisation, nodes in post-order (children before parents). Each node's front is built where its factor
        // columns stay (the factor's storage, at its end); its forward solve runs while the front is at hand; its
        // Schur complement goes to the update stack.
        int nodes = tree.Count;
        var lists = ws.Lists;   // per node: its V then its B (pixels)
        int listTop = 0, factorTop = 0, stackTop = 0, updateCount = 0;
        var nodeList = ws.NodeList;
        var nodeFactor = ws.NodeFactor;
        var map = ws.Map;
        for (int node = 0; node < nodes; node++)
        {
            ref readonly var box = ref tree.Boxes[node];
            int vStart = listTop;
            // V, then B: the box's pixels (a leaf) or its line's, and its ring, as the dissection lists them, the
            // unknown ones.
            if (lists.Length < listTop + box.Count + box.RingCount) Array.Resize(ref lists, Math.Max(2 * lists.Length, listTop + box.Count + box.RingCount));
            foreach (int p in tree.Pixels.AsSpan(box.First, box.Count))
                if (unknown[p]) lists[listTop++] = p;
            int k = listTop - vStart;
            foreach (int p in tree.Pixels.AsSpan(box.Ring, box.RingCount))
                if (unknown[p]) lists[listTop++] = p;
            int t = listTop - vStart, m = t - k, ld = t + Pad;
            nodeList[node] = (vStart, k, m);
            nodeFactor[node] = factorTop;
            for (int i = 0; i < t; i++) pos[lists[vStart + i]] = i;

            // The front: lower triangle, column-major, ld = t + Pad rows (zeros past t: the kernel's whole vectors
            // read and write there).
            ws.EnsureFactor(factorTop + (long)t * ld + Pad);
            fixed (double* factor = ws.Factor)
            {
                double* f = factor + factorTop;
                for (int j = 0; j < t; j++) new Span<double>(f + (long)j * ld + j, ld - j).Clear();
                // The children's update matrices (the top entries of the stack; packed lower triangles), extended in.
                int first = updateCount - box.Children;
                fixed (double* stack = ws.Stack)
                    for (int u = first; u < updateCount; u++)
                    {
                        var (offset, size, listAt) = ws.Updates[u];
                        // The child's ring is in the order of this front (the dissection sorts rings so): its lower
                        // triangle lands in this one's.
                        for (int i = 0; i < size; i++) map[i] = pos[lists[listAt + i]];
                        double* column = stack + offset;
                        for (int j = 0; j < size; column += size - j, j++)
                        {
                            double* target = f + (long)map[j] * ld;
                            for (int i = j; i < size; i++) target[map[i]] += column[i - j];
                        }
                    }
                if (box.Children > 0) stackTop = ws.Updates[first].Offset;
                updateCount = first;
                // A's entries of V's columns: the diagonal, and −w below it for each neighbour in V ∪ B placed after.
                for (int i = 0; i < k; i++)
                {
                    int p = lists[vStart + i], y = p / w, x = p - y * w;
                    f[(long)i * ld + i] += ws.Degree[p];
                    for (int d = 0; d < 8; d++)
                    {
                        int yy = y + Dy[d], xx = x + Dx[d];
                        if ((uint)yy >= (uint)h || (uint)xx >= (uint)w) continue;
                        int r = pos[yy * w + xx];
                        if (r > i) f[(long)i * ld + r] -= Weight[d];
                    }
                }
                PartialFactor(f, t, ld, k);
                // The Schur complement on B, packed, onto the stack.
                if (updateCount == ws.Updates.Length) Array.Resize(ref ws.Updates, 2 * updateCount);
                ws.EnsureStack(stackTop + (long)m * (m + 1) / 2);
                ws.Updates[updateCount++] = (stackTop, m, vStart + k);
                fixed (double* stack = ws.Stack)
                    for (int j = 0; j < m; j++)
                    {
                        new ReadOnlySpan<double>(f + (long)(k + j) * ld + k + j, m - j).CopyTo(new Span<double>(stack + stackTop, m - j));
                        stackTop += m - j;
                    }
                // Forward solve L y = r over this front, every channel: V's values become y, B's take the update.
                if (k > 0)
                    fixed (double* g = ws.Gather)
                        for (int c0 = 0; c0 < c; c0 += 4)
                        {
                            Gather(g, rhs, lists, vStart, t, c0, Math.Min(4, c - c0), hw);
                            for (int j = 0; j < k; j++) Forward(f + (long)j * ld + j, g + 4 * j, t - j);
                            Scatter(g, rhs, lists, vStart, t, c0, Math.Min(4, c - c0), hw);
                        }
            }
            // V's columns stay (rows j..t−1 of column j are the factor's).
            factorTop += k * ld;
            for (int i = 0; i < t; i++) pos[lists[vStart + i]] = -1;
        }
        ws.Lists = lists;
        ws.Dirty = false;

        // The backward solve Lᵀ v = y, nodes in reverse: each node's unknowns from the later ones (its ring), every
        // channel in one pass over the node's columns.
        fixed (double* l0 = ws.Factor)
        fixed (double* g = ws.Gather)
            for (int node = nodes - 1; node >= 0; node--)
            {
                var (vStart, k, m) = nodeList[node];
                if (k == 0) continue;
                int t = k + m, ld = t + Pad;
                for (int c0 = 0; c0 < c; c0 += 4)
                {
                    Gather(g, rhs, lists, vStart, t, c0, Math.Min(4, c - c0), hw);
                    double* l = l0 + nodeFactor[node];
                    // The ring's part first, columns in storage order (independent dot products, most of the
                    // node's entries, read front to back); then the k×k triangle, last column first.
                    if (m > 0)
                        for (int j = 0; j < k; j++)
                            (Vector256.Load(g + 4 * j) - Dot(l + (long)j * ld + k, g + 4 * k, m)).Store(g + 4 * j);
                    for (int j = k - 1; j >= 0; j--)
                    {
                        double* col = l + (long)j * ld + j;
                        ((Vector256.Load(g + 4 * j) - Dot(col + 1, g + 4 * (j + 1), k - j - 1)) * Vector256.Create(1 / col[0])).Store(g + 4 * j);
                    }
                    Scatter(g, rhs, lists, vStart, k, c0, Math.Min(4, c - c0), hw);
                }
            }
        for (int ch = 0; ch < c; ch++)
        {
            var plane = image.Slice(ch * hw, hw);
            var b = rhs.AsSpan(ch * hw, hw);
            for (int p = 0; p < hw; p++)
                if (unknown[p]) plane[p] = b[p];
        }
        ws.Trim();
    }

    /// <summary>The right-hand sides of channels c0.. (up to four) at a front's first <paramref name="count"/>
    /// unknowns, interleaved: unknown i's at g[4i..4i+4) (lanes past the channels 0).</summary>
    static unsafe void Gather(double* g, double[] rhs, int[] lists, int start, int count, int c0, int channels, int hw)
    {
        new Span<double>(g, 4 * count).Clear();
        for (int ch = 0; ch < channels; ch++)
        {
            int plane = (c0 + ch) * hw;
            for (int i = 0; i < count; i++) g[4 * i + ch] = rhs[plane + lists[start + i]];
        }
    }

    /// <summary>The inverse of <see cref="Gather"/>.</summary>
    static unsafe void Scatter(double* g, double[] rhs, int[] lists, int start, int count, int c0, int channels, int hw)
    {
        for (int ch = 0; ch < channels; ch++)
        {
            int plane = (c0 + ch) * hw;
            for (int i = 0; i < count; i++) rhs[plane + lists[start + i]] = g[4 * i + ch];
        }
    }

    /// <summary>One column of the forward solve, four channels at once (g at the column's diagonal row, interleaved):
    /// v = g[0] / L[j,j], then g[r] −= L[j+r, j]·v for the column's other rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Forward(double* col, double* g, int rows)
    {
        var v = Vector256.Load(g) * Vector256.Create(1 / col[0]);
        v.Store(g);
        var minus = -v;
        for (int r = 1; r < rows; r++)
            Vector256.FusedMultiplyAdd(Vector256.Create(col[r]), minus, Vector256.Load(g + 4 * r)).Store(g + 4 * r);
    }

    /// <summary>Σ_r L[r]·g[r] over <paramref name="rows"/> rows, four channels at once (g interleaved); four sums in
    /// turn (the multiply-adds of one would wait on each other).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe Vector256<double> Dot(double* col, double* g, int rows)
    {
        var s0 = Vector256<double>.Zero; var s1 = Vector256<double>.Zero; var s2 = Vector256<double>.Zero; var s3 = Vector256<double>.Zero;
        int r = 0;
        for (; r + 4 <= rows; r += 4)
        {
            s0 = Vector256.FusedMultiplyAdd(Vector256.Create(col[r]), Vector256.Load(g + 4 * r), s0);
            s1 = Vector256.FusedMultiplyAdd(Vector256.Create(col[r + 1]), Vector256.Load(g + 4 * r + 4), s1);
            s2 = Vector256.FusedMultiplyAdd(Vector256.Create(col[r + 2]), Vector256.Load(g + 4 * r + 8), s2);
            s3 = Vector256.FusedMultiplyAdd(Vector256.Create(col[r + 3]), Vector256.Load(g + 4 * r + 12), s3);
        }
        for (; r < rows; r++) s0 = Vector256.FusedMultiplyAdd(Vector256.Create(col[r]), Vector256.Load(g + 4 * r), s0);
        return (s0 + s1) + (s2 + s3);
    }

    /// <summary>An upper bound on the factor storage (float64 entries) of an H×W image's system, whatever its mask: the
    /// full mask's V columns of every front (each unknown set only shrinks a front), plus its largest front. Counted
    /// over the boxes alone (no pixel lists: a caller may ask about any size before choosing a path).</summary>
    public static long Entries(int h, int w)
    {
        long total = 0, largest = 0;
        ImageDissection.Walk(h, w, LeafArea, box =>
        {
            long rows = box.R1 - box.R0, across = Math.Min(box.C1, w - 1) - Math.Max(box.C0 - 1, 0) + 1;
            long k = box.Leaf ? rows * (box.C1 - box.C0) : box.Horizontal ? box.C1 - box.C0 : rows;
            long ring = (box.R0 > 0 ? across : 0) + (box.R1 < h ? across : 0) + (box.C0 > 0 ? rows : 0) + (box.C1 < w ? rows : 0);
            long t = k + ring, ld = t + Pad;
            total += k * ld;
            largest = Math.Max(largest, t * ld);
        });
        return total + largest;
    }

    static readonly int[] Dy = [0, 0, -1, 1, -1, -1, 1, 1];
    static readonly int[] Dx = [-1, 1, 0, 0, -1, 1, -1, 1];
    static readonly double[] Weight = [1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 12, 1.0 / 12, 1.0 / 12, 1.0 / 12];

    /// <summary>Zero rows after each front column: a whole last vector (3) and the kernel's reach, one to spare.</summary>
    const int Pad = 8;

    /// <summary>Eliminates the first <paramref name="k"/> of the <paramref name="t"/> unknowns of a dense front (lower
    /// triangle, column-major, leading dimension <paramref name="ld"/> ≥ t + 4, rows t.. zero): columns 0..k−1 become
    /// the factor's, the trailing (t−k)×(t−k) block the Schur complement. Right-looking by blocks of four columns, as
    /// <see cref="BandedImputation"/>'s kernel: each block's columns take the block's earlier columns, their pivot and
    /// scale; then every later column j (of V and of B) gets A[j.., j] −= Σ_s L[j, s]·L[j.., s], two columns per pass.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void PartialFactor(double* f, int t, int ld, int k)
    {
        for (int k0 = 0; k0 < k; k0 += 4)
        {
            int size = Math.Min(4, k - k0);
            for (int c = k0; c < k0 + size; c++)
            {
                double* column = f + (long)c * ld + c;
                for (int e = k0; e < c; e++)
                {
                    double* x = f + (long)e * ld + c;
                    if (*x != 0) CholeskyKernels.Axpy(-*x, x, column, t - c);
                }
                double d = *column;
                if (!(d > 0)) throw new InvalidOperationException($"ROAD imputation: the system is not positive definite (pivot {d}).");
                d = Math.Sqrt(d);
                *column = d;
                CholeskyKernels.Scale(column + 1, 1 / d, t - c - 1);
            }
            // Sources: the block's columns; a short block's missing ones read column k0 with coefficient 0.
            double* s0 = f + (long)k0 * ld;
            double* s1 = size > 1 ? s0 + ld : s0;
            double* s2 = size > 2 ? s0 + 2 * ld : s0;
            double* s3 = size > 3 ? s0 + 3 * ld : s0;
            int j = k0 + size;
            for (; j + 1 < t; j += 2)
            {
                double a0 = s0[j], a1 = size > 1 ? s1[j] : 0, a2 = size > 2 ? s2[j] : 0, a3 = size > 3 ? s3[j] : 0;
                double b0 = s0[j + 1], b1 = size > 1 ? s1[j + 1] : 0, b2 = size > 2 ? s2[j + 1] : 0, b3 = size > 3 ? s3[j + 1] : 0;
                if (a0 == 0 && a1 == 0 && a2 == 0 && a3 == 0 && b0 == 0 && b1 == 0 && b2 == 0 && b3 == 0) continue;
                double* y = f + (long)j * ld + j;           // column j from its diagonal
                double* z = f + (long)(j + 1) * ld + j + 1; // column j + 1 from its diagonal
                *y = CholeskyKernels.Diagonal(*y, a0, a1, a2, a3);
                int from = j + 1;
                CholeskyKernels.UpdatePair(s0 + from, s1 + from, s2 + from, s3 + from, a0, a1, a2, a3, b0, b1, b2, b3, y + 1, z, t - from);
            }
            if (j < t)   // the last column alone: its diagonal only
            {
                double a0 = s0[j], a1 = size > 1 ? s1[j] : 0, a2 = size > 2 ? s2[j] : 0, a3 = size > 3 ? s3[j] : 0;
                double* y = f + (long)j * ld + j;
                *y = CholeskyKernels.Diagonal(*y, a0, a1, a2, a3);
            }
        }
    }

    /// <summary>One thread's arrays and the dissection of the last image size it solved, grown to the largest system
    /// seen and kept (a full 224×224 mask: ~3 M factor entries, 27 MB). Per thread, not per process: a run over images
    /// of many sizes keeps one dissection per thread, not one per size.</summary>
    sealed class Workspace
    {
        [ThreadStatic] static Workspace? _current;
        public ImageDissection Tree = null!;
        public int[] Position = [], Lists = new int[1024], Map = [];
        public long[] NodeFactor = [];
        public (int Start, int K, int M)[] NodeList = [];
        public (int Offset, int Size, int ListAt)[] Updates = new (int, int, int)[64];
        public double[] Rhs = [], Degree = [], Factor = [], Stack = [], Gather = [], Known = [];
        public bool Dirty;
        int _h = -1, _w = -1;

        public static Workspace For(int h, int w, int c)
        {
            var ws = _current ??= new Workspace();
            int hw = h * w;
            if ((ws._h, ws._w) != (h, w))
            {
                ws.Tree = new ImageDissection(h, w, LeafArea);
                ws.Degree = new double[hw];
                for (int y = 0; y < h; y++)
                    for (int x = 0; x < w; x++)
                    {
                        double vertical = (y > 0 ? 1 : 0) + (y < h - 1 ? 1 : 0), horizontal = (x > 0 ? 1 : 0) + (x < w - 1 ? 1 : 0);
                        ws.Degree[y * w + x] = (vertical + horizontal) / 6 + vertical * horizontal / 12;
                    }
                ws.NodeList = new (int, int, int)[ws.Tree.Count];
                ws.NodeFactor = new long[ws.Tree.Count];
                ws.Map = new int[hw];
                ws.Known = [];
                ws.Position = new int[hw];
                Array.Fill(ws.Position, -1);
                (ws._h, ws._w) = (h, w);
            }
            if (ws.Rhs.Length < c * hw) ws.Rhs = new double[c * hw];
            if (ws.Known.Length < c * (h + 2) * (w + 2)) ws.Known = new double[c * (h + 2) * (w + 2)];   // borders stay 0
            if (ws.Gather.Length < 4 * hw) ws.Gather = new double[4 * hw];
            return ws;
        }

        /// <summary>Factor and update storage a thread keeps between systems (8 M entries, 64 MB each: a 224×224 image
        /// needs ~3.3 M, grown by doubling to at most twice that); larger ones (up to ~600×600 images: ~30 M entries)
        /// are let go after their solve, so that no thread of a long-lived process holds hundreds of megabytes for good.
        /// </summary>
        const int RetainedEntries = 8 << 20;

        /// <summary>Drops storage grown past <see cref="RetainedEntries"/>.</summary>
        public void Trim()
        {
            if (Factor.Length > RetainedEntries) Factor = [];
            if (Stack.Length > RetainedEntries) Stack = [];
        }

        public void EnsureFactor(long count) => Ensure(ref Factor, count);

        public void EnsureStack(long count) => Ensure(ref Stack, count);

        static void Ensure(ref double[] array, long count)
        {
            if (count > Array.MaxLength) throw new InvalidOperationException("ROAD imputation: the factor does not fit in one array");
            if (array.Length < count) Array.Resize(ref array, (int)Math.Min(Array.MaxLength, Math.Max(count, 2L * array.Length)));
        }
    }
}
