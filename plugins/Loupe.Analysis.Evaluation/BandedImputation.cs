using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Loupe.Analysis.Evaluation;

/// <summary>The direct path of <see cref="LinearImputation"/>: one image's imputation system, exactly, by a banded
/// Cholesky factorisation A = LLᵀ in float64 on plain arrays, all channels as right-hand sides (the matrix depends on
/// the mask only).
/// <para>Unknown pixel p (unknowns numbered in raster order, or component by component when the mask may have many:
/// <see cref="MaskComponents"/>): (Σ_{in-image neighbours} w) v_p − Σ_{unknown neighbours q} w v_q = Σ_{known
/// neighbours q} w x_q, w = 1/6 direct, 1/12 diagonal. A neighbour of p is at most one image row away, so the
/// half-bandwidth b (the largest index gap between two neighbouring unknowns) is at most the number of unknowns in one
/// image row (of p's component) + 1 ≤ W + 1. The factor keeps the envelope: column k holds rows k..last[k], last[k] the
/// last row whose first non-zero is at or left of k (a prefix maximum, so it never shrinks from one column to the
/// next); every column is stored in b + 1 + <see cref="Pad"/> entries, so the factorisation costs at most n·b²/2
/// multiply-adds and each solve 2·n·b, all in whole 4-wide vectors.</para>
/// <para>Column-oriented (right-looking, four columns at a time) on purpose: a block of columns, once scaled, updates
/// each later column of its extent by one contiguous pass (vectorised, independent of one another). The row-oriented
/// bordering form needs the same arithmetic as short dot products each waiting on the previous entry's division — a
/// dependency chain that made it ~3× slower on ROAD's 28×28 systems; single-column updates cost ~1.3× the blocks.
/// Building the system is two passes over the pixels with no data-dependent branch where the mask would mispredict
/// it (`--profile-road 101 2 imputation`: the 40 systems of the bench row, 28×28, in ~2.1 ms on one thread, of which
/// ~0.65 building, ~1.0 factorising and ~0.45 solving; 4.4 ms before these changes).</para></summary>
public static partial class BandedImputation
{
    /// <summary>The half-bandwidth of a mask's system in raster order: the largest index gap between two neighbouring
    /// unknowns, the index of an unknown being the number of unknowns before it. Two neighbours in one row are 1 apart;
    /// a pixel and its three neighbours in the next row are the difference of their prefix counts, taken eight pixels at
    /// a time over padded rows (no bounds tests, no branch on the mask: ~0.1 instead of ~0.5 ms per 224×224 mask).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe int RasterBand(ReadOnlySpan<bool> unknown, int h, int w)
    {
        int stride = w + 2, size = h * stride;
        var pool = System.Buffers.ArrayPool<int>.Shared;
        var before = pool.Rent(size);   // per padded pixel: the unknowns before it in raster order
        var mask = pool.Rent(size);     // per padded pixel: −1 where unknown, else 0 (the borders 0)
        int band = 0;
        ref byte bits = ref Unsafe.As<bool, byte>(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(unknown));
        fixed (int* e = before)
        fixed (int* u = mask)
        {
            for (int y = 0, p = 0, next = 0; y < h; y++)
            {
                int row = y * stride, previous = 0;
                e[row] = e[row + w + 1] = 0;
                u[row] = u[row + w + 1] = 0;
                for (int x = 0; x < w; x++, p++)
                {
                    int b = Unsafe.Add(ref bits, p);
                    e[row + 1 + x] = next;
                    next += b;
                    u[row + 1 + x] = -b;
                    band |= previous & b;   // two unknowns side by side: 1 apart
                    previous = b;
                }
            }
            var widest = Vector256<int>.Zero;
            int lanes = Vector256<int>.Count;
            for (int y = 0; y + 1 < h; y++)
            {
                int* ep = e + y * stride + 1, up = u + y * stride + 1, eq = ep + stride, uq = up + stride;
                int x = 0;
                for (; x + lanes <= w; x += lanes)
                {
                    var ev = Vector256.Load(ep + x);
                    var uv = Vector256.Load(up + x);
                    for (int dx = -1; dx <= 1; dx++)
                        widest = Vector256.Max(widest, (Vector256.Load(eq + x + dx) - ev) & (uv & Vector256.Load(uq + x + dx)));
                }
                for (; x < w; x++)
                    for (int dx = -1; dx <= 1; dx++)
                        band = Math.Max(band, (eq[x + dx] - ep[x]) & up[x] & uq[x + dx]);
            }
            for (int i = 0; i < lanes; i++) band = Math.Max(band, widest.GetElement(i));
        }
        pool.Return(before);
        pool.Return(mask);
        return band;
    }

    /// <summary>The system's size and half-bandwidth for one mask of H×W pixels (true = unknown), in the numbering
    /// <see cref="Solve"/> factorises in (raster order, or component by component: <see cref="MaskComponents"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static (int Unknowns, int Band) Shape(ReadOnlySpan<bool> unknown, int h, int w)
    {
        int hw = h * w, count = unknown[..hw].Count(true), band = 0;
        if (!MaskComponents.Worthwhile(count, h, w)) return (count, RasterBand(unknown, h, w));
        var pool = System.Buffers.ArrayPool<int>.Shared;   // a 224×224 mask: 200 KB, not per call
        var rented = pool.Rent(hw);
        var index = rented.AsSpan(0, hw);
        if (MaskComponents.Worthwhile(count, h, w))
        {
            // The order goes to this thread's workspace: SolveShaped, called next on this mask, takes it from there.
            var ws = Workspace.Ordering(hw);
            ws.Ordered = (MaskComponents.Order(unknown, h, w, ws.Order, ws.Root, ws.Slot), h, w);
            index.Fill(-1);
            for (int i = 0; i < count; i++) index[ws.Order[i]] = i;
        }
        else
            for (int i = 0, next = 0; i < hw; i++) index[i] = unknown[i] ? next++ : -1;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                int i = index[y * w + x];
                if (i < 0) continue;
                // The forward neighbours (right, and the three below) have the larger indices.
                if (x + 1 < w && index[y * w + x + 1] >= 0) band = Math.Max(band, index[y * w + x + 1] - i);
                if (y + 1 < h)
                    for (int dx = -1; dx <= 1; dx++)
                        if (x + dx >= 0 && x + dx < w && index[(y + 1) * w + x + dx] >= 0)
                            band = Math.Max(band, index[(y + 1) * w + x + dx] - i);
            }
        pool.Return(rented);
        return (count, band);
    }

    /// <summary>Whether the factorisation and the solves run on 8-wide vectors: where the processor has them (AVX-512).
    /// Tests switch it to check both widths on one machine.</summary>
    internal static bool Wide = Vector512.IsHardwareAccelerated;

    /// <summary>Entries of the factor's storage for n unknowns and half-bandwidth b (each column b + 1 + Pad).</summary>
    public static long Entries(long unknowns, long band) => unknowns * (band + 1 + Pad) + 1;

    /// <summary>Imputes one image in place: <paramref name="image"/> holds C planes of H×W pixels; the pixels where
    /// <paramref name="unknown"/> is true are replaced by the solution. With no known pixel the system has no data and
    /// its matrix is singular; those pixels become 0 (the conjugate-gradient path's rule: it starts at 0 and a zero
    /// right-hand side leaves it there). That is the only way an unknown region can miss every known pixel: a region
    /// whose in-image neighbours are all unknown is the whole image.</summary>
    public static void Solve(Span<double> image, ReadOnlySpan<bool> unknown, int c, int h, int w) => SolveCore(image, unknown, c, h, w, shaped: false);

    /// <summary><see cref="Solve"/> on a mask whose
    /// <see cref="Shape"/> this thread has just computed: its component order is taken from there, not labelled
    /// again.</summary>
    internal static void SolveShaped(Span<double> image, ReadOnlySpan<bool> unknown, int c, int h, int w) => SolveCore(image, unknown, c, h, w, shaped: true);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // ROAD calls it a few dozen times per run: no tier-0 code
    static void SolveCore(Span<double> image, ReadOnlySpan<bool> unknown, int c, int h, int w, bool shaped)
    {
        int hw = h * w, w2 = w + 2, padded = (h + 2) * w2;
        if (image.Length < c * hw || unknown.Length < hw) throw new ArgumentException("ROAD imputation: image or mask shorter than C×H×W");
        var ws = Workspace.For(h, w, c);
        bool wide = Wide;   // read once: a test may switch it while another thread solves
        // Pixels on a grid with a one-pixel border (index −1, value 0), so that the stencil needs no bounds tests; raw
        // references below index it (every q is an interior cell ± one row and column: inside the padded grid).
        ref int index = ref MemoryMarshal.GetArrayDataReference(ws.Index);
        ref double known = ref MemoryMarshal.GetArrayDataReference(ws.Known);   // C padded planes: known values, else 0
        var pixel = ws.Pixel;   // unknown i's pixel, and its cell in the padded grid
        var cell = ws.Cell;
        var last = ws.Last;

        // Pass 1: copy the known values; number the unknowns, in raster order or component by component (each
        // component's in raster order: a pixel's backward neighbours — left, and the row above — are then numbered
        // before it either way); for unknown i, f = its first non-zero column (the smallest index among its backward
        // neighbours; −1 as unsigned never wins), so last[f] ≥ i (last[k] = the last row whose envelope reaches column
        // k) and the widest extent b ≥ i − f.
        int n = 0, band = 0;
        int count = unknown[..hw].Count(true);
        bool byComponent = MaskComponents.Worthwhile(count, h, w);
        if (byComponent && !(shaped && ws.Ordered == (count, h, w))) MaskComponents.Order(unknown, h, w, ws.Order, ws.Root, ws.Slot);
        ws.Ordered = default;
        // No branch on the mask's bits (they are irregular: such a branch mispredicted on about every other pixel of a
        // half-imputed mask): a known value goes through a bit mask of ones, an unknown one through zeros; the
        // unknowns of each run of up to 64 pixels of a row are collected as bits and numbered by their set bits.
        ref byte bits = ref Unsafe.As<bool, byte>(ref MemoryMarshal.GetReference(unknown));
        ref double values = ref MemoryMarshal.GetReference(image);
        for (int y = 0; y < h; y++)
            for (int x0 = 0; x0 < w; x0 += 64)
            {
                int p0 = y * w + x0, q0 = (y + 1) * w2 + 1 + x0, run = Math.Min(64, w - x0);
                ulong found = 0;
                for (int x = 0; x < run; x++)
                {
                    int b = Unsafe.Add(ref bits, p0 + x) & 1;
                    found |= (ulong)b << x;
                    long keep = b - 1L;   // all ones where known
                    for (int ch = 0; ch < c; ch++)
                        Unsafe.Add(ref known, ch * padded + q0 + x) = BitConverter.Int64BitsToDouble(BitConverter.DoubleToInt64Bits(Unsafe.Add(ref values, ch * hw + p0 + x)) & keep);
                }
                if (byComponent) continue;
                for (; found != 0; found &= found - 1)
                {
                    int x = System.Numerics.BitOperations.TrailingZeroCount(found);
                    Number(ref index, ws, p0 + x, q0 + x, ref n, ref band);
                }
            }
        if (byComponent)
            for (int i = 0; i < count; i++)
            {
                int p = ws.Order[i], y = p / w;
                Number(ref index, ws, p, (y + 1) * w2 + 1 + p - y * w, ref n, ref band);
            }
        if (n == 0) return;
        if (n == hw)
        {
            for (int ch = 0; ch < c; ch++) image.Slice(ch * hw, hw).Clear();
            return;
        }
        for (int k = 1; k < n; k++) last[k] = Math.Max(last[k], last[k - 1]);   // envelope: the prefix maximum

        // Column k's rows k.. are at k·S: S = b + 1 and Pad zeros, so that the factor's four-column updates run in
        // whole vectors (see Factor).
        int stride = band + 1 + Pad;
        var l = ws.Entries(checked((int)Entries(n, band)), out var native);
        try
        {
            int discard = n * stride;   // where an absent neighbour's entry goes (never read)
            ref double l0 = ref MemoryMarshal.GetReference(l);

            // Pass 2, each unknown: its right-hand side (the stencil over the known values), its diagonal (Σ in-image
            // weights) and −w for each backward unknown neighbour j, at row i of column j (a select, not a branch: the
            // masks are irregular and such branches mispredict).
            var rhs = ws.Rhs;   // C right-hand sides of n, then zeros (the solves' whole last vectors read past n)
            Array.Clear(rhs, c * n, Pad + 1);
            ref double degree = ref MemoryMarshal.GetArrayDataReference(ws.Degree);
            for (int i = 0; i < n; i++)
            {
                int q = cell[i];
                for (int ch = 0; ch < c; ch++)
                {
                    ref double z = ref Unsafe.Add(ref known, ch * padded + q);
                    rhs[ch * n + i] = (Unsafe.Add(ref z, -1) + Unsafe.Add(ref z, 1) + Unsafe.Add(ref z, -w2) + Unsafe.Add(ref z, w2)) * Direct
                        + (Unsafe.Add(ref z, -w2 - 1) + Unsafe.Add(ref z, -w2 + 1) + Unsafe.Add(ref z, w2 - 1) + Unsafe.Add(ref z, w2 + 1)) * Diagonal;
                }
                Unsafe.Add(ref l0, i * stride) = Unsafe.Add(ref degree, q);
                Unsafe.Add(ref l0, Entry(Unsafe.Add(ref index, q - 1), i, stride, discard)) = -1.0 / 6;
                Unsafe.Add(ref l0, Entry(Unsafe.Add(ref index, q - w2 - 1), i, stride, discard)) = -1.0 / 12;
                Unsafe.Add(ref l0, Entry(Unsafe.Add(ref index, q - w2), i, stride, discard)) = -1.0 / 6;
                Unsafe.Add(ref l0, Entry(Unsafe.Add(ref index, q - w2 + 1), i, stride, discard)) = -1.0 / 12;
            }

            var inverse = ws.Inverse;
            if (wide)
            {
                Factor<Lanes8, Vector512<double>>(l, last, inverse, n, stride);
                for (int ch = 0; ch < c; ch++) Substitute<Lanes8, Vector512<double>>(l, last, inverse, rhs.AsSpan(ch * n), n, stride);
            }
            else
            {
                Factor<Lanes4, Vector256<double>>(l, last, inverse, n, stride);
                for (int ch = 0; ch < c; ch++) Substitute<Lanes4, Vector256<double>>(l, last, inverse, rhs.AsSpan(ch * n), n, stride);
            }
            for (int ch = 0; ch < c; ch++)
            {
                ref double v = ref rhs[ch * n];
                var plane = image.Slice(ch * hw, hw);
                for (int i = 0; i < n; i++) plane[pixel[i]] = Unsafe.Add(ref v, i);
            }
        }
        finally
        {
            if (native != 0) Workspace.Free(native);
        }
    }

    /// <summary>The two triangular solves for one right-hand side (<paramref name="v"/>, in place), L y = r then
    /// Lᵀ v = y, by blocks of four columns, as <see cref="Factor{TL, TV}"/> runs. Forward: a block's four values by its
    /// small triangle, then the rows past the block take its four columns in one pass. Backward: the four dot products of
    /// a block's columns with the values already found past it are independent of one another (the processor overlaps
    /// them), then the small triangle; a column at a time, each dot product waited on the value found just before it.
    /// Whole vectors: past a column's extent its entries are zero (up to the stride), so the extra lanes add nothing to
    /// v (the next channel's values, or the zeros after the last) and read nothing into the dot products.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Substitute<TL, TV>(Span<double> l, int[] last, double[] inverse, Span<double> v, int n, int stride) where TL : struct, ILanes<TV> where TV : struct
    {
        fixed (double* l0 = l)
        fixed (double* v0 = v)
        fixed (double* inv = inverse)
        {
            for (int k0 = 0; k0 < n; k0 += 4)   // L y = r
            {
                int size = Math.Min(4, n - k0);
                for (int q = 0; q < size; q++)
                {
                    double vk = v0[k0 + q] *= inv[k0 + q];
                    double* column = l0 + (long)(k0 + q) * stride;
                    for (int r = 1; q + r < size; r++) v0[k0 + q + r] -= vk * column[r];
                }
                if (size < 4) break;
                int end = last[k0 + 3];
                if (end < k0 + 4) continue;
                // Row k0 + o of block column s at (k0 + s)·stride + o − s.
                CholeskyKernels.Update<TL, TV>(l0 + (long)k0 * stride + 4, l0 + (long)(k0 + 1) * stride + 3, l0 + (long)(k0 + 2) * stride + 2,
                    l0 + (long)(k0 + 3) * stride + 1, v0[k0], v0[k0 + 1], v0[k0 + 2], v0[k0 + 3], v0 + k0 + 4, end - k0 - 3);
            }
            for (int k0 = (n - 1) / 4 * 4; k0 >= 0; k0 -= 4)   // Lᵀ v = y
            {
                int size = Math.Min(4, n - k0), top = k0 + size;
                double d0 = 0, d1 = 0, d2 = 0, d3 = 0;
                for (int q = 0; q < size; q++)
                {
                    int k = k0 + q, rows = last[k] - top + 1;
                    double d = rows > 0 ? CholeskyKernels.Dot<TL, TV>(l0 + (long)k * stride + top - k, v0 + top, rows) : 0;
                    if (q == 0) d0 = d; else if (q == 1) d1 = d; else if (q == 2) d2 = d; else d3 = d;
                }
                for (int q = size - 1; q >= 0; q--)
                {
                    int k = k0 + q;
                    double* column = l0 + (long)k * stride;
                    double t = v0[k] - (q == 0 ? d0 : q == 1 ? d1 : q == 2 ? d2 : d3);
                    for (int r = 1; q + r < size; r++) t -= column[r] * v0[k + r];
                    v0[k] = t * inv[k];
                }
            }
        }
    }

    /// <summary>Numbers unknown pixel <paramref name="p"/> (cell <paramref name="q"/> of the padded grid) n, its
    /// backward neighbours numbered already (pass 1 of <see cref="Solve"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Number(ref int index, Workspace ws, int p, int q, ref int n, ref int band)
    {
        int w2 = ws.Stride;
        Unsafe.Add(ref index, q) = n;
        uint f = Math.Min(Math.Min((uint)n, (uint)Unsafe.Add(ref index, q - 1)),
            Math.Min((uint)Unsafe.Add(ref index, q - w2 - 1), Math.Min((uint)Unsafe.Add(ref index, q - w2), (uint)Unsafe.Add(ref index, q - w2 + 1))));
        ws.Pixel[n] = p;
        ws.Cell[n] = q;
        ws.Last[n] = n;
        ws.Last[f] = n;   // n is the largest row so far
        band = Math.Max(band, n - (int)f);
        n++;
    }

    /// <summary>Where A[i, j] lives (row i of column j), or the discard slot when j is −1 (no unknown there).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int Entry(int j, int i, int stride, int discard)
    {
        int absent = j >> 31;   // all ones when j is −1 (a select, not a branch: the masks are irregular)
        return ((j * stride + i - j) & ~absent) | (discard & absent);
    }

    /// <summary>In-place Cholesky of the column-stored envelope, right-looking by blocks of four columns: each block's
    /// columns take the updates of the block's earlier columns, their pivot and scale; then every later column j of
    /// the block's extent gets A[j.., j] −= Σ_s L[j, k_s]·L[j.., k_s] in one pass (one load and store of column j per
    /// four multiply-adds; columns the block does not touch are skipped).
    /// <para>Raw references in the loops; the layout keeps every access inside column storage of
    /// <paramref name="stride"/> = b + 1 + <see cref="Pad"/> entries: a block's reads reach at most b + 3 rows past its
    /// first column's diagonal, plus three for a whole last vector; the entries there are zero (rows past a column's
    /// extent), so the padded lanes add nothing, and writes reach at most b + 2 rows into a column.</para></summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // ROAD calls it a few dozen times per run: no tier-0 code
    static unsafe void Factor<TL, TV>(Span<double> l, int[] last, double[] inverse, int n, int stride) where TL : struct, ILanes<TV> where TV : struct
    {
        if ((long)n * stride > l.Length) throw new InvalidOperationException("ROAD imputation: factor storage too small");
        fixed (double* l0 = l)
            for (int k0 = 0; k0 < n; k0 += 4)
            {
                int size = Math.Min(4, n - k0);
                for (int c = k0; c < k0 + size; c++)
                {
                    double* column = l0 + (long)c * stride;
                    for (int e = k0; e < c; e++)   // the block's earlier columns: rows c..last[e]
                    {
                        double* x = l0 + (long)e * stride + c - e;
                        if (*x != 0) CholeskyKernels.Axpy<TL, TV>(-*x, x, column, last[e] - c + 1);
                    }
                    double d = *column;
                    if (!(d > 0)) throw new InvalidOperationException($"ROAD imputation: the system is not positive definite at unknown {c} (pivot {d}).");
                    d = Math.Sqrt(d);
                    *column = d;
                    double inv = inverse[c] = 1 / d;
                    CholeskyKernels.Scale<TL, TV>(column + 1, inv, last[c] - c);   // whole vectors: the zeros past the extent stay 0
                }
                if (size < 4) break;   // the last block: no column after it
                double* c0 = l0 + (long)k0 * stride;
                double* c1 = l0 + (long)(k0 + 1) * stride - 1;   // shifted: row j of every block column at offset j − k0
                double* c2 = l0 + (long)(k0 + 2) * stride - 2;
                double* c3 = l0 + (long)(k0 + 3) * stride - 3;
                int end = last[k0 + 3], j = k0 + 4;
                // Two later columns at a time: rows j+1.. of both take the same four source vectors (loaded once for
                // eight multiply-adds); row j of column j (its diagonal) first, on its own.
                for (; j < end; j += 2)
                {
                    int o = j - k0;
                    double a0 = c0[o], a1 = c1[o], a2 = c2[o], a3 = c3[o];
                    double b0 = c0[o + 1], b1 = c1[o + 1], b2 = c2[o + 1], b3 = c3[o + 1];
                    if (a0 == 0 && a1 == 0 && a2 == 0 && a3 == 0 && b0 == 0 && b1 == 0 && b2 == 0 && b3 == 0) continue;
                    double* y = l0 + (long)j * stride;         // column j: row j at 0
                    double* z = l0 + (long)(j + 1) * stride;   // column j + 1: row j + 1 at 0
                    *y = CholeskyKernels.Diagonal(*y, a0, a1, a2, a3);
                    CholeskyKernels.UpdatePair<TL, TV>(c0 + o + 1, c1 + o + 1, c2 + o + 1, c3 + o + 1, a0, a1, a2, a3, b0, b1, b2, b3, y + 1, z, end - j);
                }
                if (j == end)   // the last column alone
                {
                    int o = j - k0;
                    double a0 = c0[o], a1 = c1[o], a2 = c2[o], a3 = c3[o];
                    double* y = l0 + (long)j * stride;
                    CholeskyKernels.Update<TL, TV>(c0 + o, c1 + o, c2 + o, c3 + o, a0, a1, a2, a3, y, 1);   // only row j is non-zero in the sources
                }
            }
    }
}
