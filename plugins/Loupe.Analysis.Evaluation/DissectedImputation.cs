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
        var ws = Workspace.For(h, w, c, n);
        var tree = ws.Tree;
        var pos = ws.Position;   // a pixel's place in the front being assembled, else −1
        if (ws.Dirty) Array.Fill(pos, -1);   // a solve that threw left a front's places set
        ws.Dirty = true;
        int nodes = tree.Count, groups = (c + 3) / 4;

        // The elimination order: node by node, each node's unknowns as the dissection lists them. The solves' values
        // live in that order, four channels interleaved per group (y[(group·n + i)·4 + lane]): a node's own unknowns
        // are one contiguous run, its ring's a few runs of its ancestors'.
        var index = ws.Index;
        var nodeStart = ws.NodeStart;
        for (int node = 0, next = 0; node < nodes; node++)
        {
            ref readonly var box = ref tree.Boxes[node];
            nodeStart[node] = next;
            foreach (int p in tree.Pixels.AsSpan(box.First, box.Count))
                if (unknown[p]) index[p] = next++;
        }

        // Right-hand sides: per channel, Σ_{known in-image neighbours} w x_q at every unknown pixel, from a copy of the
        // known values on a grid with a zero border (no bounds tests, no branch on the mask).
        int w2 = w + 2, padded = (h + 2) * w2;
        var known = ws.Known;
        fixed (double* y = ws.Y)
        {
            if (c % 4 != 0) new Span<double>(y + (long)(groups - 1) * n * 4, 4 * n).Clear();   // the unused lanes
            for (int ch = 0; ch < c; ch++)
            {
                var plane = image.Slice(ch * hw, hw);
                var z = known.AsSpan(ch * padded, padded);
                for (int yy = 0, p = 0; yy < h; yy++)
                    for (int x = 0, q = (yy + 1) * w2 + 1; x < w; x++, p++, q++)
                        z[q] = unknown[p] ? 0 : plane[p];
                double* lane = y + (long)(ch >> 2) * n * 4 + (ch & 3);
                for (int yy = 0, p = 0; yy < h; yy++)
                    for (int x = 0, q = (yy + 1) * w2 + 1; x < w; x++, p++, q++)
                        if (unknown[p])
                            lane[4 * index[p]] = (z[q - 1] + z[q + 1] + z[q - w2] + z[q + w2]) / 6 + (z[q - w2 - 1] + z[q - w2 + 1] + z[q + w2 - 1] + z[q + w2 + 1]) / 12;
            }
        }

        // Factorisation, nodes in post-order (children before parents). Each node's front is built where its factor
        // columns stay (the factor's storage, at its end): its own columns from A and its children's updates; they
        // are factored; the Schur complement on its ring is written over the rest of the front (−L₂₁L₂₁ᵀ, one dense
        // product), takes the children's updates on ring pairs and goes to the update stack. The forward solve runs
        // while the front is at hand.
        var lists = ws.Lists;   // per node: its V then its B (pixels)
        var places = ws.Places; // per list entry of a ring: the pixel's place in the elimination order
        int listTop = 0, factorTop = 0, stackTop = 0, updateCount = 0;
        var nodeList = ws.NodeList;
        var nodeFactor = ws.NodeFactor;
        for (int node = 0; node < nodes; node++)
        {
            ref readonly var box = ref tree.Boxes[node];
            int vStart = listTop;
            // V, then B: the box's pixels (a leaf) or its line's, and its ring, as the dissection lists them, the
            // unknown ones.
            if (lists.Length < listTop + box.Count + box.RingCount)
            {
                int size = Math.Max(2 * lists.Length, listTop + box.Count + box.RingCount);
                Array.Resize(ref lists, size);
                Array.Resize(ref places, size);
            }
            foreach (int p in tree.Pixels.AsSpan(box.First, box.Count))
                if (unknown[p]) lists[listTop++] = p;
            int k = listTop - vStart;
            foreach (int p in tree.Pixels.AsSpan(box.Ring, box.RingCount))
                if (unknown[p])
                {
                    places[listTop] = index[p];
                    lists[listTop++] = p;
                }
            int t = listTop - vStart, m = t - k, ld = t + Pad;
            nodeList[node] = (vStart, k, m);
            nodeFactor[node] = factorTop;
            for (int i = 0; i < t; i++) pos[lists[vStart + i]] = i;

            // The front: lower triangle, column-major, ld = t + Pad rows. V's columns start at zero (and stay zero past
            // row t: the kernels' whole vectors read and write there); the ring's are written whole by the product.
            ws.EnsureFactor(factorTop + (long)t * ld + Pad);
            int first = updateCount - box.Children;
            fixed (double* factor = ws.Factor)
            fixed (double* stack = ws.Stack)
            {
                double* f = factor + factorTop;
                for (int j = 0; j < k; j++) new Span<double>(f + (long)j * ld + j, ld - j).Clear();
                // The children's update matrices (the top entries of the stack; packed lower triangles): their columns
                // that land in V's now. A child's ring is in the order of this front (the dissection sorts rings so):
                // its lower triangle lands in this one's, its first columns in V's.
                for (int u = first; u < updateCount; u++) ExtendAdd(ws, u, stack, f, ld, lists, pos, 0, k);
                // A's entries of V's columns: the diagonal, and −w below it for each neighbour in V ∪ B placed after.
                for (int i = 0; i < k; i++)
                {
                    int p = lists[vStart + i], py = p / w, px = p - py * w;
                    f[(long)i * ld + i] += ws.Degree[p];
                    for (int d = 0; d < 8; d++)
                    {
                        int yy = py + Dy[d], xx = px + Dx[d];
                        if ((uint)yy >= (uint)h || (uint)xx >= (uint)w) continue;
                        int r = pos[yy * w + xx];
                        if (r > i) f[(long)i * ld + r] -= Weight[d];
                    }
                }
                PartialFactor(ws, f, t, ld, k);
                if (m > 0) SchurProduct(ws, f, ld, k, m);
                for (int u = first; u < updateCount; u++) ExtendAdd(ws, u, stack, f, ld, lists, pos, k, t);
                if (box.Children > 0) stackTop = ws.Updates[first].Offset;
                updateCount = first;
                // The Schur complement on B, packed, onto the stack (over the children's, now spent).
                if (updateCount == ws.Updates.Length) Array.Resize(ref ws.Updates, 2 * updateCount);
                ws.Updates[updateCount++] = (stackTop, m, vStart + k);
            }
            ws.EnsureStack(stackTop + (long)m * (m + 1) / 2);
            fixed (double* factor = ws.Factor)
            fixed (double* stack = ws.Stack)
            fixed (double* y = ws.Y)
            fixed (double* g = ws.Gather)
            {
                double* f = factor + factorTop;
                for (int j = 0; j < m; j++)
                {
                    new ReadOnlySpan<double>(f + (long)(k + j) * ld + k + j, m - j).CopyTo(new Span<double>(stack + stackTop, m - j));
                    stackTop += m - j;
                }
                // Forward solve L y = r over this front, every channel: V's values (a run of y) become y, B's (gathered)
                // take the update.
                if (k > 0)
                    for (int group = 0; group < groups; group++)
                    {
                        double* yv = y + ((long)group * n + nodeStart[node]) * 4, yg = y + (long)group * n * 4;
                        for (int i = 0; i < m; i++) Vector256.Load(yg + 4 * places[vStart + k + i]).Store(g + 4 * i);
                        ForwardFront(f, ld, k, m, yv, g);
                        for (int i = 0; i < m; i++) Vector256.Load(g + 4 * i).Store(yg + 4 * places[vStart + k + i]);
                    }
            }
            // V's columns stay (rows j..t−1 of column j are the factor's).
            factorTop += k * ld;
            for (int i = 0; i < t; i++) pos[lists[vStart + i]] = -1;
        }
        ws.Lists = lists;
        ws.Places = places;
        ws.Dirty = false;

        // The backward solve Lᵀ v = y, nodes in reverse: each node's unknowns from the later ones (its ring), every
        // channel in one pass over the node's columns.
        fixed (double* l0 = ws.Factor)
        fixed (double* y = ws.Y)
        fixed (double* g = ws.Gather)
            for (int node = nodes - 1; node >= 0; node--)
            {
                var (vStart, k, m) = nodeList[node];
                if (k == 0) continue;
                int t = k + m, ld = t + Pad;
                double* l = l0 + nodeFactor[node];
                for (int group = 0; group < groups; group++)
                {
                    double* yv = y + ((long)group * n + nodeStart[node]) * 4, yg = y + (long)group * n * 4;
                    // The ring part first, columns in storage order (independent dot products, most of the node's
                    // entries, read front to back); then the k×k triangle, last column first.
                    if (m > 0)
                    {
                        for (int i = 0; i < m; i++) Vector256.Load(yg + 4 * places[vStart + k + i]).Store(g + 4 * i);
                        SubtractDots(l + k, ld, 0, k, g, m, yv);
                    }
                    // The triangle by blocks of four columns from the last: each block's columns take the solved rows
                    // below the block at once, then the block's own 4×4 triangle.
                    for (int hi = k; hi > 0;)
                    {
                        int lo = Math.Max(0, hi - 4);
                        SubtractDots(l + hi, ld, lo, hi, yv + 4 * hi, k - hi, yv);
                        for (int j = hi - 1; j >= lo; j--)
                        {
                            double* col = l + (long)j * ld + j;
                            var v = Vector256.Load(yv + 4 * j);
                            for (int r = 1; j + r < hi; r++) v = Vector256.FusedMultiplyAdd(Vector256.Create(-col[r]), Vector256.Load(yv + 4 * (j + r)), v);
                            (v * Vector256.Create(1 / col[0])).Store(yv + 4 * j);
                        }
                        hi = lo;
                    }
                }
            }
        fixed (double* y = ws.Y)
            for (int ch = 0; ch < c; ch++)
            {
                var plane = image.Slice(ch * hw, hw);
                double* lane = y + (long)(ch >> 2) * n * 4 + (ch & 3);
                for (int p = 0; p < hw; p++)
                    if (unknown[p]) plane[p] = lane[4 * index[p]];
            }
        ws.Trim();
    }

    /// <summary>Adds the columns [<paramref name="from"/>, <paramref name="to"/>) of the front that child update
    /// <paramref name="u"/> lands in (its columns whose places fall there; they come first to last, rings being in the
    /// front's order) into the front <paramref name="f"/>, entry by entry (vectors over runs of consecutive places were
    /// no faster on dense rings and several times slower on scattered ones).</summary>
    static unsafe void ExtendAdd(Workspace ws, int u, double* stack, double* f, int ld, int[] lists, int[] pos, int from, int to)
    {
        var (offset, size, listAt) = ws.Updates[u];
        var map = ws.Map;
        for (int i = 0; i < size; i++) map[i] = pos[lists[listAt + i]];
        int j = 0;
        while (j < size && map[j] < from) j++;
        double* column = stack + offset + (long)j * size - (long)j * (j - 1) / 2;
        for (; j < size && map[j] < to; column += size - j, j++)
        {
            double* into = f + (long)map[j] * ld;
            for (int i = j; i < size; i++) into[map[i]] += column[i - j];
        }
    }

    /// <summary>The Schur complement's product: the ring block of the front (columns and rows k..k+m−1) becomes
    /// −L₂₁L₂₁ᵀ, L₂₁ = rows k.. of V's k factored columns (each entry written once: the block needs no clearing).</summary>
    static unsafe void SchurProduct(Workspace ws, double* f, int ld, int k, int m)
    {
        fixed (double* p = ws.Packed(m, k))
        {
            Pack(f, ld, k, m, 0, k, p);
            Tiles(p, k, m, m, f + (long)k * ld + k, ld, assign: true);
        }
    }

    /// <summary>Copies rows [r0, r0 + rows) of columns [s0, s1) into <paramref name="p"/> by tiles of eight rows, each
    /// tile's rows contiguous per column (p[(tile·(s1−s0) + s − s0)·8 + i]): the product's operands read in order.
    /// Reads up to seven rows past the last (the front's zero rows).</summary>
    static unsafe void Pack(double* f, int ld, int r0, int rows, int s0, int s1, double* p)
    {
        for (int i0 = 0; i0 < rows; i0 += 8)
            for (int s = s0; s < s1; s++, p += 8)
            {
                double* from = f + (long)s * ld + r0 + i0;
                Vector256.Load(from).Store(p);
                Vector256.Load(from + 4).Store(p + 4);
            }
    }

    /// <summary>C −= PPᵀ (or C = −PPᵀ with <paramref name="assign"/>) on the lower triangle of the first
    /// <paramref name="cols"/> columns and <paramref name="rows"/> rows of C (column-major, leading dimension
    /// <paramref name="ld"/>), P packed by <see cref="Pack"/> with inner dimension <paramref name="inner"/>: 8×8 tiles
    /// with the sums in registers, each packed row vector feeding eight multiply-adds. Writes whole tiles: up to seven
    /// rows past <paramref name="rows"/> and above the diagonal within a tile (space the front does not read; zero rows
    /// stay zero when subtracting, their packed rows being zero).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Tiles(double* p, int inner, int rows, int cols, double* c, int ld, bool assign)
    {
        long tile = 8L * inner;
        for (int j0 = 0; j0 < cols; j0 += 8)
        {
            int n = Math.Min(8, cols - j0);
            for (int i0 = j0; i0 < rows; i0 += 8)
            {
                Vector256<double> a0 = default, a1 = default, b0 = default, b1 = default, c0 = default, c1 = default, d0 = default, d1 = default;
                Vector256<double> e0 = default, e1 = default, g0 = default, g1 = default, h0 = default, h1 = default, q0 = default, q1 = default;
                double* x = p + i0 / 8 * tile, y = p + j0 / 8 * tile;
                for (int s = 0; s < inner; s++, x += 8, y += 8)
                {
                    var r0 = Vector256.Load(x);
                    var r1 = Vector256.Load(x + 4);
                    var v = Vector256.Create(y[0]);
                    a0 = Vector256.FusedMultiplyAdd(r0, v, a0); a1 = Vector256.FusedMultiplyAdd(r1, v, a1);
                    v = Vector256.Create(y[1]);
                    b0 = Vector256.FusedMultiplyAdd(r0, v, b0); b1 = Vector256.FusedMultiplyAdd(r1, v, b1);
                    v = Vector256.Create(y[2]);
                    c0 = Vector256.FusedMultiplyAdd(r0, v, c0); c1 = Vector256.FusedMultiplyAdd(r1, v, c1);
                    v = Vector256.Create(y[3]);
                    d0 = Vector256.FusedMultiplyAdd(r0, v, d0); d1 = Vector256.FusedMultiplyAdd(r1, v, d1);
                    v = Vector256.Create(y[4]);
                    e0 = Vector256.FusedMultiplyAdd(r0, v, e0); e1 = Vector256.FusedMultiplyAdd(r1, v, e1);
                    v = Vector256.Create(y[5]);
                    g0 = Vector256.FusedMultiplyAdd(r0, v, g0); g1 = Vector256.FusedMultiplyAdd(r1, v, g1);
                    v = Vector256.Create(y[6]);
                    h0 = Vector256.FusedMultiplyAdd(r0, v, h0); h1 = Vector256.FusedMultiplyAdd(r1, v, h1);
                    v = Vector256.Create(y[7]);
                    q0 = Vector256.FusedMultiplyAdd(r0, v, q0); q1 = Vector256.FusedMultiplyAdd(r1, v, q1);
                }
                double* u = c + (long)j0 * ld + i0;
                Put(u, a0, a1, assign);
                if (n > 1) Put(u + ld, b0, b1, assign);
                if (n > 2) Put(u + 2 * ld, c0, c1, assign);
                if (n > 3) Put(u + 3 * ld, d0, d1, assign);
                if (n > 4) Put(u + 4 * ld, e0, e1, assign);
                if (n > 5) Put(u + 5 * ld, g0, g1, assign);
                if (n > 6) Put(u + 6 * ld, h0, h1, assign);
                if (n > 7) Put(u + 7 * ld, q0, q1, assign);
            }
        }
    }

    /// <summary>Eight entries of a column take −(lo, hi): assigned, or subtracted from what is there.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Put(double* u, Vector256<double> lo, Vector256<double> hi, bool assign)
    {
        if (assign)
        {
            (-lo).Store(u);
            (-hi).Store(u + 4);
        }
        else
        {
            (Vector256.Load(u) - lo).Store(u);
            (Vector256.Load(u + 4) - hi).Store(u + 4);
        }
    }

    /// <summary>The forward solve over one front, four channels at once (interleaved): V's values y (a run) become
    /// L₁₁⁻¹y, the ring's (gathered in <paramref name="ring"/>) take −L₂₁ times them. By blocks of four columns: the
    /// block's 4×4 triangle, then each later row takes the four columns' terms in one load and store of its value.
    /// </summary>
    static unsafe void ForwardFront(double* f, int ld, int k, int m, double* y, double* ring)
    {
        int j = 0;
        for (; j + 4 <= k; j += 4)
        {
            double* c0 = f + (long)j * ld, c1 = c0 + ld, c2 = c1 + ld, c3 = c2 + ld;
            double* yj = y + 4 * j;
            var v0 = Vector256.Load(yj) * Vector256.Create(1 / c0[j]);
            var v1 = Vector256.FusedMultiplyAdd(Vector256.Create(-c0[j + 1]), v0, Vector256.Load(yj + 4)) * Vector256.Create(1 / c1[j + 1]);
            var v2 = Vector256.FusedMultiplyAdd(Vector256.Create(-c1[j + 2]), v1,
                Vector256.FusedMultiplyAdd(Vector256.Create(-c0[j + 2]), v0, Vector256.Load(yj + 8))) * Vector256.Create(1 / c2[j + 2]);
            var v3 = Vector256.FusedMultiplyAdd(Vector256.Create(-c2[j + 3]), v2, Vector256.FusedMultiplyAdd(Vector256.Create(-c1[j + 3]), v1,
                Vector256.FusedMultiplyAdd(Vector256.Create(-c0[j + 3]), v0, Vector256.Load(yj + 12)))) * Vector256.Create(1 / c3[j + 3]);
            v0.Store(yj); v1.Store(yj + 4); v2.Store(yj + 8); v3.Store(yj + 12);
            Update4(c0, c1, c2, c3, -v0, -v1, -v2, -v3, j + 4, k, y);
            Update4(c0 + k, c1 + k, c2 + k, c3 + k, -v0, -v1, -v2, -v3, 0, m, ring);
        }
        for (; j < k; j++)
        {
            double* col = f + (long)j * ld;
            var v = Vector256.Load(y + 4 * j) * Vector256.Create(1 / col[j]);
            v.Store(y + 4 * j);
            var minus = -v;
            for (int r = j + 1; r < k; r++)
                Vector256.FusedMultiplyAdd(Vector256.Create(col[r]), minus, Vector256.Load(y + 4 * r)).Store(y + 4 * r);
            for (int r = 0; r < m; r++)
                Vector256.FusedMultiplyAdd(Vector256.Create(col[k + r]), minus, Vector256.Load(ring + 4 * r)).Store(ring + 4 * r);
        }
    }

    /// <summary>y[r] += c0[r]·n0 + c1[r]·n1 + c2[r]·n2 + c3[r]·n3 for r in [from, to) (y interleaved, four lanes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Update4(double* c0, double* c1, double* c2, double* c3, Vector256<double> n0, Vector256<double> n1,
        Vector256<double> n2, Vector256<double> n3, int from, int to, double* y)
    {
        for (int r = from; r < to; r++)
        {
            var v = Vector256.FusedMultiplyAdd(Vector256.Create(c0[r]), n0, Vector256.Load(y + 4 * r));
            v = Vector256.FusedMultiplyAdd(Vector256.Create(c1[r]), n1, v);
            v = Vector256.FusedMultiplyAdd(Vector256.Create(c2[r]), n2, v);
            Vector256.FusedMultiplyAdd(Vector256.Create(c3[r]), n3, v).Store(y + 4 * r);
        }
    }

    /// <summary>y[j] −= Σ_r L[r, j]·x[r] for the columns j in [from, to), r over <paramref name="rows"/> rows (column j's
    /// from <c>l + j·ld</c>; x and y interleaved, four lanes): four columns at a time, each x[r] loaded once for four
    /// multiply-adds, two rows per pass (eight independent sums).</summary>
    static unsafe void SubtractDots(double* l, int ld, int from, int to, double* x, int rows, double* y)
    {
        int j = from;
        for (; j + 4 <= to; j += 4)
        {
            double* c0 = l + (long)j * ld, c1 = c0 + ld, c2 = c1 + ld, c3 = c2 + ld;
            Vector256<double> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
            int r = 0;
            for (; r + 2 <= rows; r += 2)
            {
                var x0 = Vector256.Load(x + 4 * r);
                var x1 = Vector256.Load(x + 4 * r + 4);
                a0 = Vector256.FusedMultiplyAdd(Vector256.Create(c0[r]), x0, a0); b0 = Vector256.FusedMultiplyAdd(Vector256.Create(c0[r + 1]), x1, b0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.Create(c1[r]), x0, a1); b1 = Vector256.FusedMultiplyAdd(Vector256.Create(c1[r + 1]), x1, b1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.Create(c2[r]), x0, a2); b2 = Vector256.FusedMultiplyAdd(Vector256.Create(c2[r + 1]), x1, b2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.Create(c3[r]), x0, a3); b3 = Vector256.FusedMultiplyAdd(Vector256.Create(c3[r + 1]), x1, b3);
            }
            if (r < rows)
            {
                var x0 = Vector256.Load(x + 4 * r);
                a0 = Vector256.FusedMultiplyAdd(Vector256.Create(c0[r]), x0, a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.Create(c1[r]), x0, a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.Create(c2[r]), x0, a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.Create(c3[r]), x0, a3);
            }
            double* yj = y + 4 * j;
            (Vector256.Load(yj) - (a0 + b0)).Store(yj);
            (Vector256.Load(yj + 4) - (a1 + b1)).Store(yj + 4);
            (Vector256.Load(yj + 8) - (a2 + b2)).Store(yj + 8);
            (Vector256.Load(yj + 12) - (a3 + b3)).Store(yj + 12);
        }
        for (; j < to; j++) (Vector256.Load(y + 4 * j) - Dot(l + (long)j * ld, x, rows)).Store(y + 4 * j);
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
    /// the factor's (the trailing block is left to <see cref="SchurProduct"/>). Right-looking by blocks of four
    /// columns, as <see cref="BandedImputation"/>'s kernel: each block's columns take the block's earlier columns, their
    /// pivot and scale; then every later column j of V gets A[j.., j] −= Σ_s L[j, s]·L[j.., s], two columns per pass.
    /// </summary>
    static unsafe void PartialFactor(Workspace ws, double* f, int t, int ld, int k)
    {
        for (int b0 = 0; b0 < k; b0 += Panel)
        {
            int b1 = Math.Min(k, b0 + Panel);
            FactorColumns(f, t, ld, b0, b1);
            if (b1 == k) break;
            // V's later columns take this block's Schur update at once (the tiled product, rows b1..t−1).
            fixed (double* p = ws.Packed(t - b1, b1 - b0))
            {
                Pack(f, ld, b1, t - b1, b0, b1, p);
                Tiles(p, b1 - b0, t - b1, k - b1, f + (long)b1 * ld + b1, ld, assign: false);
            }
        }
    }

    /// <summary>Columns eliminated between two tiled updates of V's later columns (a multiple of the tiles' eight).
    /// </summary>
    const int Panel = 32;

    /// <summary>Factors columns [first, k) of a front whose earlier columns' updates they have taken: by blocks of four,
    /// each block's columns take the block's earlier columns, their pivot and scale, then the later columns up to
    /// <paramref name="k"/> take the block's update, two columns per pass.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void FactorColumns(double* f, int t, int ld, int first, int k)
    {
        for (int k0 = first; k0 < k; k0 += 4)
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
            for (; j + 1 < k; j += 2)
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
            if (j < k)   // the last column alone
            {
                double a0 = s0[j], a1 = size > 1 ? s1[j] : 0, a2 = size > 2 ? s2[j] : 0, a3 = size > 3 ? s3[j] : 0;
                double* y = f + (long)j * ld + j;
                *y = CholeskyKernels.Diagonal(*y, a0, a1, a2, a3);
                int from = j + 1;
                CholeskyKernels.Axpy(-a0, s0 + from, y + 1, t - from);
                if (size > 1) CholeskyKernels.Axpy(-a1, s1 + from, y + 1, t - from);
                if (size > 2) CholeskyKernels.Axpy(-a2, s2 + from, y + 1, t - from);
                if (size > 3) CholeskyKernels.Axpy(-a3, s3 + from, y + 1, t - from);
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
        public int[] Position = [], Lists = new int[1024], Places = new int[1024], Index = [], NodeStart = [], Map = [];
        public long[] NodeFactor = [];
        public (int Start, int K, int M)[] NodeList = [];
        public (int Offset, int Size, int ListAt)[] Updates = new (int, int, int)[64];
        public double[] Y = [], Degree = [], Factor = [], Stack = [], Gather = [], Known = [];
        public bool Dirty;
        int _h = -1, _w = -1;

        public static Workspace For(int h, int w, int c, int n)
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
                ws.Index = new int[hw];
                ws.Map = new int[hw];
                ws.NodeStart = new int[ws.Tree.Count];
                ws.Known = [];
                ws.Position = new int[hw];
                Array.Fill(ws.Position, -1);
                (ws._h, ws._w) = (h, w);
            }
            if (ws.Y.Length < (long)(c + 3) / 4 * 4 * n) ws.Y = new double[(c + 3) / 4 * 4 * hw];
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

        double[] _packed = [];

        /// <summary>Room for <paramref name="rows"/> rows (rounded up to tiles of eight) of <paramref name="inner"/>
        /// packed columns.</summary>
        public double[] Packed(int rows, int inner)
        {
            long count = (rows + 7L) / 8 * 8 * inner;
            if (_packed.Length < count) _packed = new double[Math.Max(count, 2L * _packed.Length)];
            return _packed;
        }

        public void EnsureStack(long count) => Ensure(ref Stack, count);

        static void Ensure(ref double[] array, long count)
        {
            if (count > Array.MaxLength) throw new InvalidOperationException("ROAD imputation: the factor does not fit in one array");
            if (array.Length < count) Array.Resize(ref array, (int)Math.Min(Array.MaxLength, Math.Max(count, 2L * array.Length)));
        }
    }
}
