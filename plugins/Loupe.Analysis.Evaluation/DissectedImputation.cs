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
/// matrices (their rings lie in V ∪ B); it eliminates V (a dense partial Cholesky: the banded path's four-column
/// kernel within panels of 32 columns, V's later columns updated by a register-tiled product) and passes the Schur
/// complement on B to its parent (−L₂₁L₂₁ᵀ by the same product, then the halves' updates on ring pairs). The factor's
/// columns stay for the two triangular solves (forward over the nodes in elimination order while each front is at
/// hand, backward in reverse), whose values are kept in elimination order, four channels interleaved: a node's own
/// unknowns are one contiguous run (<see cref="FrontKernels"/>). Same numbers as the banded path to rounding
/// (tests/Loupe.Evaluation.Tests/ImputationTests.cs).</para>
/// <para>A subtree whose box and ring are all unknown — ROAD's masks from smooth maps leave many — has the all-unknown
/// system's fronts, kept once per image size (<see cref="FullFronts"/>): only its two triangular solves run.</para>
/// </summary>
public static partial class DissectedImputation
{
    /// <summary>The nodes whose fronts this thread's last solve took from the all-unknown system's (tests).</summary>
    [ThreadStatic] internal static int LastReused;

    /// <summary>Largest box that is not cut further: its unknowns form one dense front.</summary>
    public const int LeafArea = 24;

    /// <summary>Imputes one image in place, as <see cref="BandedImputation.Solve"/> does (same rule for an image with no
    /// known pixel: its pixels become 0).</summary>
    public static void Solve(Span<double> image, ReadOnlySpan<bool> unknown, int c, int h, int w) => Core(image, unknown, c, h, w, null);

    /// <summary><see cref="Solve"/>; with <paramref name="record"/>, the all-unknown system's factorisation instead,
    /// every node but the root, kept in it (<see cref="FullFronts"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Core(Span<double> image, ReadOnlySpan<bool> unknown, int c, int h, int w, FullFronts? record)
    {
        int hw = h * w;
        if (image.Length < c * hw || unknown.Length < hw) throw new ArgumentException("ROAD imputation: image or mask shorter than C×H×W");
        int n = unknown[..hw].Count(true);
        if (n == 0) return;
        if (n == hw && record is null)
        {
            image[..(c * hw)].Clear();
            return;
        }
        var ws = Workspace.For(h, w, c, n);
        // Subtrees whose box and ring are all unknown take their fronts from the all-unknown system's (built once
        // per image size, on this thread, before this solve uses the workspace: that build only grows its arrays).
        var full = record is null ? FullFronts.For(ws, unknown, h, w, n) : null;
        var tree = ws.Tree;
        var pos = ws.Position;   // a pixel's place in the front being assembled, else −1
        if (ws.Dirty) Array.Fill(pos, -1);   // a solve that threw left a front's places set
        ws.Dirty = true;
        int nodes = tree.Count, groups = (c + 3) / 4;
        // The mask as bytes (a bool is 0 or 1): the lists below add it instead of branching on it (a speckled mask's
        // branches, as input gradients rank pixels, were mispredicted one in three).
        ref byte unknownBytes = ref Unsafe.As<bool, byte>(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(unknown));

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
            {
                index[p] = next;   // a known pixel's entry is never read
                next += Unsafe.Add(ref unknownBytes, p);
            }
        }

        // Right-hand sides: per channel, Σ_{known in-image neighbours} w x_q at every unknown pixel, from a copy of the
        // known values on a grid with a zero border (no bounds tests, no branch on the mask). Up to four channels (one
        // group): the copy holds each pixel's channels side by side, so that one pass over the pixels forms every
        // channel's sum as one vector, the order of its terms as below.
        int w2 = w + 2, padded = (h + 2) * w2;
        fixed (double* y = ws.Y)
        fixed (double* im = image)
        {
            if (c % 4 != 0) new Span<double>(y + (long)(groups - 1) * n * 4, 4 * n).Clear();   // the unused lanes
            if (c <= 4)
            {
                if (ws.KnownLanes.Length < 4 * padded) ws.KnownLanes = new double[4 * padded];   // borders stay 0
                // Channels past c read the first one's values, masked off.
                double* c0 = im, c1 = c > 1 ? im + hw : im, c2 = c > 2 ? im + 2 * hw : im, c3 = c > 3 ? im + 3 * hw : im;
                var lanes = Vector256.Create(-1L, c > 1 ? -1 : 0, c > 2 ? -1 : 0, c > 3 ? -1 : 0).AsDouble();
                fixed (double* z = ws.KnownLanes)
                {
                    for (int yy = 0, p = 0; yy < h; yy++)
                        for (int x = 0, q = (yy + 1) * w2 + 1; x < w; x++, p++, q++)
                        {
                            var keep = Vector256.Create((long)Unsafe.Add(ref unknownBytes, p) - 1).AsDouble() & lanes;   // zero at unknown pixels
                            (Vector256.Create(c0[p], c1[p], c2[p], c3[p]) & keep).Store(z + 4L * q);
                        }
                    var direct = Vector256.Create(BandedImputation.Direct);
                    var diagonal = Vector256.Create(BandedImputation.Diagonal);
                    long up = -4L * w2, down = 4L * w2;
                    for (int yy = 0, p = 0; yy < h; yy++)
                        for (int x = 0, q = (yy + 1) * w2 + 1; x < w; x++, p++, q++)
                            if (unknown[p])
                            {
                                double* at = z + 4L * q;
                                var sides = Vector256.Load(at - 4) + Vector256.Load(at + 4) + Vector256.Load(at + up) + Vector256.Load(at + down);
                                var corners = Vector256.Load(at + up - 4) + Vector256.Load(at + up + 4) + Vector256.Load(at + down - 4) + Vector256.Load(at + down + 4);
                                (sides * direct + corners * diagonal).Store(y + 4L * index[p]);
                            }
                }
            }
            else
            {
                var known = ws.Known;
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
                                lane[4 * index[p]] = (z[q - 1] + z[q + 1] + z[q - w2] + z[q + w2]) * BandedImputation.Direct + (z[q - w2 - 1] + z[q - w2 + 1] + z[q + w2 - 1] + z[q + w2 + 1]) * BandedImputation.Diagonal;
                }
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
        var reused = ws.Reused;
        LastReused = 0;
        for (int node = 0; node < nodes; node++)
        {
            ref readonly var box = ref tree.Boxes[node];
            if (record is not null && node == nodes - 1) break;   // the all-unknown system's root is singular
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
            {
                lists[listTop] = p;
                listTop += Unsafe.Add(ref unknownBytes, p);
            }
            int k = listTop - vStart;
            foreach (int p in tree.Pixels.AsSpan(box.Ring, box.RingCount))
            {
                places[listTop] = index[p];
                lists[listTop] = p;
                listTop += Unsafe.Add(ref unknownBytes, p);
            }
            int t = listTop - vStart, m = t - k, ld = t + FrontKernels.Pad;
            nodeList[node] = (vStart, k, m);
            reused[node] = full is not null && ws.Full[node];
            if (reused[node])
            {
                // The all-unknown system's front: its factor columns and update are this one's (its children's too:
                // none of theirs is on the stack). Only the forward solve runs.
                nodeFactor[node] = full!.FactorAt[node];
                LastReused++;
                updateCount -= box.Children;
                PushUpdate(ws, ref updateCount, (int)full.UpdateAt[node], m, vStart + k, cached: true);
                fixed (double* factor = full.Factor)
                    ForwardNode(ws, factor + full.FactorAt[node], ld, k, m, n, groups, nodeStart[node], vStart, places);
                continue;
            }
            nodeFactor[node] = factorTop;
            for (int i = 0; i < t; i++) pos[lists[vStart + i]] = i;

            // The front: lower triangle, column-major, ld = t + Pad rows. V's columns start at zero (and stay zero past
            // row t: the kernels' whole vectors read and write there); the ring's are written whole by the product.
            ws.EnsureFactor(factorTop + (long)t * ld + FrontKernels.Pad);
            int first = updateCount - box.Children;
            fixed (double* factor = ws.Factor)
            fixed (double* stack = ws.Stack)
            fixed (double* cached = full?.Updates)
            {
                double* f = factor + factorTop;
                for (int j = 0; j < k; j++) new Span<double>(f + (long)j * ld + j, ld - j).Clear();
                // The children's update matrices (the top entries of the stack; packed lower triangles): their columns
                // that land in V's now. A child's ring is in the order of this front (the dissection sorts rings so):
                // its lower triangle lands in this one's, its first columns in V's.
                for (int u = first; u < updateCount; u++) ExtendAdd(ws, u, stack, cached, f, ld, lists, pos, 0, k);
                // A's entries of V's columns: the diagonal, and −w below it for each neighbour in V ∪ B placed after.
                for (int i = 0; i < k; i++)
                {
                    int p = lists[vStart + i];
                    double* column = f + (long)i * ld;
                    column[i] += ws.Degree[p];
                    if (ws.Interior[p])   // every neighbour in the image: no division, no bounds test, no branch
                    {
                        ref int at = ref pos[p];
                        Couple(column, i, Unsafe.Add(ref at, -1), t, BandedImputation.Direct);
                        Couple(column, i, Unsafe.Add(ref at, 1), t + 1, BandedImputation.Direct);
                        Couple(column, i, Unsafe.Add(ref at, -w), t + 2, BandedImputation.Direct);
                        Couple(column, i, Unsafe.Add(ref at, w), t + 3, BandedImputation.Direct);
                        Couple(column, i, Unsafe.Add(ref at, -w - 1), t + 4, BandedImputation.Diagonal);
                        Couple(column, i, Unsafe.Add(ref at, -w + 1), t + 5, BandedImputation.Diagonal);
                        Couple(column, i, Unsafe.Add(ref at, w - 1), t + 6, BandedImputation.Diagonal);
                        Couple(column, i, Unsafe.Add(ref at, w + 1), t + 7, BandedImputation.Diagonal);
                        continue;
                    }
                    int py = p / w, px = p - py * w;
                    for (int d = 0; d < 8; d++)
                    {
                        int yy = py + Dy[d], xx = px + Dx[d];
                        if ((uint)yy >= (uint)h || (uint)xx >= (uint)w) continue;
                        int r = pos[yy * w + xx];
                        if (r > i) column[r] -= Weight[d];
                    }
                }
                FrontKernels.PartialFactor(ref ws.PackBuffer, f, t, ld, k);
                if (m > 0) FrontKernels.SchurProduct(ref ws.PackBuffer, f, ld, k, m);
                for (int u = first; u < updateCount; u++) ExtendAdd(ws, u, stack, cached, f, ld, lists, pos, k, t);
                for (int u = first; u < updateCount; u++)
                    if (!ws.Updates[u].Cached) { stackTop = ws.Updates[u].Offset; break; }   // the first on the stack
                updateCount = first;
                // The Schur complement on B, packed, onto the stack (over the children's, now spent).
                PushUpdate(ws, ref updateCount, stackTop, m, vStart + k, cached: false);
            }
            ws.EnsureStack(stackTop + (long)m * (m + 1) / 2);
            fixed (double* factor = ws.Factor)
            fixed (double* stack = ws.Stack)
            {
                double* f = factor + factorTop;
                int packed = stackTop;
                for (int j = 0; j < m; j++)
                {
                    new ReadOnlySpan<double>(f + (long)(k + j) * ld + k + j, m - j).CopyTo(new Span<double>(stack + stackTop, m - j));
                    stackTop += m - j;
                }
                if (record is not null) record.Keep(node, factorTop, new ReadOnlySpan<double>(stack + packed, stackTop - packed));
                else ForwardNode(ws, f, ld, k, m, n, groups, nodeStart[node], vStart, places);
            }
            // V's columns stay (rows j..t−1 of column j are the factor's).
            factorTop += k * ld;
            for (int i = 0; i < t; i++) pos[lists[vStart + i]] = -1;
        }
        ws.Lists = lists;
        ws.Places = places;
        ws.Dirty = false;
        if (record is not null)
        {
            record.Finish(ws.Factor.AsSpan(0, factorTop));
            return;
        }

        // The backward solve Lᵀ v = y, nodes in reverse: each node's unknowns from the later ones (its ring), every
        // channel in one pass over the node's columns.
        fixed (double* l0 = ws.Factor)
        fixed (double* reusedFactor = full?.Factor)
        fixed (double* y = ws.Y)
        fixed (double* g = ws.Gather)
        fixed (double* inverse = ws.Inverse)
            for (int node = nodes - 1; node >= 0; node--)
            {
                var (vStart, k, m) = nodeList[node];
                if (k == 0) continue;
                int t = k + m, ld = t + FrontKernels.Pad;
                double* l = (reused[node] ? reusedFactor : l0) + nodeFactor[node];
                // The factor is read in the reverse of the order it was written, in short runs (a leaf's ~7 KB): the
                // next node's run is requested now, while this one is solved.
                if (node > 0)
                {
                    var (_, k1, m1) = nodeList[node - 1];
                    double* before = (reused[node - 1] ? reusedFactor : l0) + nodeFactor[node - 1];
                    FrontKernels.Prefetch(before, before + (long)k1 * (k1 + m1 + FrontKernels.Pad));
                }
                for (int group = 0; group < groups; group++)
                {
                    double* yv = y + ((long)group * n + nodeStart[node]) * 4, yg = y + (long)group * n * 4;
                    // The ring part first, columns in storage order (independent dot products, most of the node's
                    // entries, read front to back); then the k×k triangle, last column first.
                    if (m > 0)
                    {
                        for (int i = 0; i < m; i++) Vector256.Load(yg + 4 * places[vStart + k + i]).Store(g + 4 * i);
                        FrontKernels.SubtractDots(l + k, ld, 0, k, g, m, yv);
                    }
                    // The triangle by blocks of four columns from the last: each block's columns take the solved rows
                    // below the block at once, then the block's own 4×4 triangle.
                    for (int hi = k; hi > 0;)
                    {
                        int lo = Math.Max(0, hi - 4);
                        FrontKernels.SubtractDots(l + hi, ld, lo, hi, yv + 4 * hi, k - hi, yv);
                        for (int j = hi - 1; j >= lo; j--)
                        {
                            double* col = l + (long)j * ld + j;
                            var v = Vector256.Load(yv + 4 * j);
                            for (int r = 1; j + r < hi; r++) v = Vector256.FusedMultiplyAdd(Vector256.Create(-col[r]), Vector256.Load(yv + 4 * (j + r)), v);
                            (v * Vector256.Create(inverse[nodeStart[node] + j])).Store(yv + 4 * j);
                        }
                        hi = lo;
                    }
                }
            }
        fixed (double* y = ws.Y)
        fixed (double* im = image)
        {
            if (c == 3)   // ROAD's images: each pixel's three values from one vector
            {
                for (int p = 0; p < hw; p++)
                    if (unknown[p])
                    {
                        var v = Vector256.Load(y + 4L * index[p]);
                        im[p] = v.GetElement(0);
                        im[hw + p] = v.GetElement(1);
                        im[2 * hw + p] = v.GetElement(2);
                    }
            }
            else
                for (int ch = 0; ch < c; ch++)
                {
                    double* plane = im + (long)ch * hw, lane = y + (long)(ch >> 2) * n * 4 + (ch & 3);
                    for (int p = 0; p < hw; p++)
                        if (unknown[p]) plane[p] = lane[4 * index[p]];
                }
        }
        ws.Trim();
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
            long t = k + ring, ld = t + FrontKernels.Pad;
            total += k * ld;
            largest = Math.Max(largest, t * ld);
        });
        return total + largest;
    }

    static readonly int[] Dy = [0, 0, -1, 1, -1, -1, 1, 1];
    static readonly int[] Dx = [-1, 1, 0, 0, -1, 1, -1, 1];
    static readonly double[] Weight = [1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 12, 1.0 / 12, 1.0 / 12, 1.0 / 12];
}
