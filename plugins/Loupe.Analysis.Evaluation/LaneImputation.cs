using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Loupe.Analysis.Evaluation;

/// <summary>Several of <see cref="BandedImputation"/>'s systems at once, one per vector lane (eight on AVX-512, four
/// on AVX2). ROAD's copies of one point have the same number of unknowns n (the point's share of the pixels), so their
/// systems, each numbered in raster order, fit one band of n columns whose half-bandwidth B is the largest of theirs:
/// entry (i, j) of all of them is one vector, and the factorisation and the two solves are the textbook band Cholesky
/// on vectors — no horizontal sums, no per-column set-up, no test for zeros, every lane busy (28×28 masks of one point
/// differ in band by a few columns at most). Lanes past the last system solve the identity. The same equations as
/// <see cref="BandedImputation"/> (same numbers to rounding); n·B²/2 multiply-adds per system.</summary>
static class LaneImputation
{
    /// <summary>Most doubles of band storage a group may take (16 MB): above it the copies are solved one by one.</summary>
    public const long MaxBandEntries = 2L << 20;

    /// <summary>Whether a group of <paramref name="lanes"/> H×W systems of at most H·W unknowns fits
    /// <see cref="MaxBandEntries"/> (the band is at most W + 1 wide).</summary>
    public static bool Fits(int lanes, int h, int w) => (long)h * w * (w + 2) * lanes <= MaxBandEntries;

    /// <summary>One thread's arrays, grown to the largest group seen and reused.</summary>
    sealed class Workspace
    {
        [ThreadStatic] static Workspace? _current;
        public int[] Index = [], Pixel = [], Cell = [];
        public double[] Known = [], Degree = [], Band = [], Rhs = [], Inverse = [];
        int _h, _w;

        public static Workspace For(int lanes, int c, int h, int w)
        {
            var ws = _current ??= new Workspace();
            int hw = h * w, padded = (h + 2) * (w + 2);
            // The padded grids' borders (no unknown, value 0) are set when the grids are made or the image size changes;
            // every interior cell is written by each solve's first pass. Planes start at multiples of the padded size,
            // so a border cell is a border cell of whichever image and channel uses it.
            bool fresh = (ws._h, ws._w) != (h, w);
            if (ws.Index.Length < lanes * padded) (ws.Index, fresh) = (new int[lanes * padded], true);
            if (ws.Pixel.Length < lanes * hw) (ws.Pixel, ws.Cell) = (new int[lanes * hw], new int[lanes * hw]);
            if (ws.Known.Length < lanes * c * padded) (ws.Known, fresh) = (new double[lanes * c * padded], true);
            if (fresh)
            {
                ws.Degree = BandedImputation.Degrees(h, w);
                (ws._h, ws._w) = (h, w);
                ws.Index.AsSpan().Fill(-1);
                ws.Known.AsSpan().Clear();
            }
            return ws;
        }

        /// <summary>The band (n columns of B + 1 + <see cref="Pad"/> vectors, each zeroed by the pass that fills it,
        /// and one vector where absent neighbours' entries go), the right-hand sides (C × n vectors) and the pivots'
        /// inverses (n vectors).</summary>
        public void Size(int lanes, int n, int band, int c)
        {
            long entries = ((long)n * (band + 1 + Pad) + 1) * lanes;
            if (Band.Length < entries) Band = new double[Math.Max(entries, 2L * Band.Length)];
            if (Rhs.Length < (long)c * n * lanes) Rhs = new double[(long)c * n * lanes];
            if (Inverse.Length < (long)n * lanes) Inverse = new double[(long)n * lanes];
        }
    }

    /// <summary>Imputes <paramref name="count"/> (≤ the lanes of <typeparamref name="TL"/>) images in place:
    /// image s is <paramref name="images"/>[s·C·H·W ..], its mask <paramref name="masks"/>[s·H·W ..] (true =
    /// unknown); every mask must have the same number of unknowns. Rules of <see cref="BandedImputation.Solve"/>: no
    /// known pixel, all pixels 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Solve<TL, TV>(Span<double> images, ReadOnlySpan<bool> masks, int count, int c, int h, int w)
        where TL : struct, ILanes<TV> where TV : struct
    {
        int lanes = TL.Count, hw = h * w, chw = c * hw, w2 = w + 2, padded = (h + 2) * w2;
        if (count < 1 || count > lanes || images.Length < count * chw || masks.Length < count * hw)
            throw new ArgumentException($"ROAD imputation: {count} images for {lanes} lanes, or images or masks shorter than C×H×W each");
        var ws = Workspace.For(lanes, c, h, w);
        ref byte bits = ref Unsafe.As<bool, byte>(ref MemoryMarshal.GetReference(masks));
        ref double values = ref MemoryMarshal.GetReference(images);

        // Pass 1, each image: known values onto its padded grid (a bit mask, no branch on the mask), its unknowns
        // numbered in raster order from the set bits of each row's runs of 64 pixels; the half-bandwidth is the
        // largest gap between an unknown and its first backward unknown neighbour.
        int n = -1, band = 0;
        for (int s = 0; s < count; s++)
        {
            ref int index = ref ws.Index[s * padded];
            ref double known = ref ws.Known[s * c * padded];
            ref int pixel = ref ws.Pixel[s * hw];
            ref int cell = ref ws.Cell[s * hw];
            int found = 0;
            for (int y = 0; y < h; y++)
                for (int x0 = 0; x0 < w; x0 += 64)
                {
                    int p0 = y * w + x0, q0 = (y + 1) * w2 + 1 + x0, run = Math.Min(64, w - x0);
                    ulong row = 0;
                    for (int x = 0; x < run; x++)
                    {
                        int b = Unsafe.Add(ref bits, s * hw + p0 + x) & 1;
                        row |= (ulong)b << x;
                        Unsafe.Add(ref index, q0 + x) = -1;   // the unknowns are numbered below
                        long keep = b - 1L;   // all ones where known
                        for (int ch = 0; ch < c; ch++)
                            Unsafe.Add(ref known, ch * padded + q0 + x) = BitConverter.Int64BitsToDouble(
                                BitConverter.DoubleToInt64Bits(Unsafe.Add(ref values, s * chw + ch * hw + p0 + x)) & keep);
                    }
                    for (; row != 0; row &= row - 1)
                    {
                        int x = System.Numerics.BitOperations.TrailingZeroCount(row), q = q0 + x;
                        Unsafe.Add(ref index, q) = found;
                        uint f = Math.Min(Math.Min((uint)found, (uint)Unsafe.Add(ref index, q - 1)),
                            Math.Min((uint)Unsafe.Add(ref index, q - w2 - 1), Math.Min((uint)Unsafe.Add(ref index, q - w2), (uint)Unsafe.Add(ref index, q - w2 + 1))));
                        band = Math.Max(band, found - (int)f);
                        Unsafe.Add(ref pixel, found) = p0 + x;
                        Unsafe.Add(ref cell, found) = q;
                        found++;
                    }
                }
            if (n >= 0 && found != n) throw new ArgumentException($"ROAD imputation: the images of one group have {n} and {found} unknowns");
            n = found;
        }
        if (n == 0) return;
        if (n == hw)
        {
            images[..(count * chw)].Clear();
            return;
        }

        // Pass 2, column by column: the column's vectors zeroed (in the first-level cache, just before its entries go
        // in: no separate clearing pass over the band), then in each image's lane its right-hand sides, its diagonal
        // and −w at (k, i) for each forward unknown neighbour k of unknown i (k − i ≤ B: i is one of k's backward
        // neighbours; absent ones to the spare vector: a select, not a branch); lanes past the last image get the
        // identity.
        int stride = (band + 1 + Pad) * lanes;   // doubles per column
        ws.Size(lanes, n, band, c);
        fixed (double* a0 = ws.Band)
        fixed (double* r0 = ws.Rhs)
        fixed (double* inv = ws.Inverse)
        {
            long spare = (long)n * stride;
            // Unknown by unknown, lane by lane: the lanes of one entry share its cache line.
            ref int index0 = ref MemoryMarshal.GetArrayDataReference(ws.Index);
            ref double known0 = ref MemoryMarshal.GetArrayDataReference(ws.Known);
            ref int cell0 = ref MemoryMarshal.GetArrayDataReference(ws.Cell);
            ref double degree = ref MemoryMarshal.GetArrayDataReference(ws.Degree);
            for (int i = 0; i < n; i++)
            {
                long column = (long)i * stride;
                new Span<double>(a0 + column, stride).Clear();
                for (int s = 0; s < count; s++)
                {
                    ref int index = ref Unsafe.Add(ref index0, s * padded);
                    ref double known = ref Unsafe.Add(ref known0, s * c * padded);
                    int q = Unsafe.Add(ref cell0, s * hw + i);
                    for (int ch = 0; ch < c; ch++)
                    {
                        ref double z = ref Unsafe.Add(ref known, ch * padded + q);
                        r0[((long)ch * n + i) * lanes + s] = (Unsafe.Add(ref z, -1) + Unsafe.Add(ref z, 1) + Unsafe.Add(ref z, -w2) + Unsafe.Add(ref z, w2)) * BandedImputation.Direct
                            + (Unsafe.Add(ref z, -w2 - 1) + Unsafe.Add(ref z, -w2 + 1) + Unsafe.Add(ref z, w2 - 1) + Unsafe.Add(ref z, w2 + 1)) * BandedImputation.Diagonal;
                    }
                    a0[column + s] = Unsafe.Add(ref degree, q);
                    a0[Below(Unsafe.Add(ref index, q + 1), i, column, lanes, spare) + s] = -BandedImputation.Direct;
                    a0[Below(Unsafe.Add(ref index, q + w2 - 1), i, column, lanes, spare) + s] = -BandedImputation.Diagonal;
                    a0[Below(Unsafe.Add(ref index, q + w2), i, column, lanes, spare) + s] = -BandedImputation.Direct;
                    a0[Below(Unsafe.Add(ref index, q + w2 + 1), i, column, lanes, spare) + s] = -BandedImputation.Diagonal;
                }
                for (int s = count; s < lanes; s++) a0[column + s] = 1;
            }
            for (int s = count; s < lanes; s++)
                for (long e = 0; e < (long)c * n; e++) r0[e * lanes + s] = 0;

            Factor<TL, TV>(a0, inv, n, band);
            for (int ch = 0; ch < c; ch++) Substitute<TL, TV>(a0, inv, r0 + (long)ch * n * lanes, n, band);

            for (int s = 0; s < count; s++)
                for (int ch = 0; ch < c; ch++)
                {
                    var plane = images.Slice(s * chw + ch * hw, hw);
                    double* v = r0 + (long)ch * n * lanes + s;
                    for (int i = 0; i < n; i++) plane[ws.Pixel[s * hw + i]] = v[(long)i * lanes];
                }
        }
    }

    /// <summary>Where entry (k, i) of the band starts (row k of column i, which starts at <paramref name="column"/>;
    /// lane 0), or the spare vector when k is −1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static long Below(int k, int i, long column, int lanes, long spare)
    {
        long absent = k >> 31;   // all ones when k is −1
        return ((column + (long)(k - i) * lanes) & ~absent) | (spare & absent);
    }

    /// <summary>Zero vectors after each column's B + 1: a block of four columns reads three rows past the first
    /// column's band.</summary>
    public const int Pad = 3;

    /// <summary>In-place band Cholesky, right-looking by blocks of four columns: each block's columns take the updates
    /// of the block's earlier columns, their pivot and scale; then every later column t of the block's reach takes
    /// −Σ_q L[t, k0+q]·L[t.., k0+q] in one pass (each of its vectors loaded and stored once for four multiply-adds;
    /// the four source columns stay in the first-level cache). Rows past a column's band read its zero padding.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Factor<TL, TV>(double* a0, double* inv, int n, int band) where TL : struct, ILanes<TV> where TV : struct
    {
        int lanes = TL.Count;
        long stride = (long)(band + 1 + Pad) * lanes;
        var one = TL.Splat(1);
        var minus = TL.Splat(-1);
        // Row i of column j at Column(j) + i·lanes (0 ≤ i − j ≤ B + Pad): the column's storage shifted back by j rows.
        long shift = stride - lanes;
        for (int k0 = 0; k0 < n; k0 += 4)
        {
            int size = Math.Min(4, n - k0);
            for (int k = k0; k < k0 + size; k++)
            {
                int last = Math.Min(k + band, n - 1);
                double* ck = a0 + k * shift;
                for (int e = k0; e < k; e++)   // the block's earlier columns: rows k..last
                {
                    double* ce = a0 + e * shift;
                    var a = TL.Multiply(TL.Load(ce + (long)k * lanes), minus);
                    for (long i = k * (long)lanes, stop = last * (long)lanes; i <= stop; i += lanes) TL.Store(TL.Fma(a, TL.Load(ce + i), TL.Load(ck + i)), ck + i);
                }
                var d = TL.Load(ck + (long)k * lanes);
                if (!TL.AllPositive(d)) throw new InvalidOperationException($"ROAD imputation: the system is not positive definite at unknown {k}.");
                var scale = TL.Divide(one, TL.Sqrt(d));
                TL.Store(scale, inv + (long)k * lanes);
                for (long i = (k + 1L) * lanes, stop = last * (long)lanes; i <= stop; i += lanes) TL.Store(TL.Multiply(TL.Load(ck + i), scale), ck + i);
            }
            if (size < 4) break;   // the last block: no column after it
            int end = Math.Min(k0 + 3 + band, n - 1);
            double* c0 = a0 + k0 * shift, c1 = c0 + shift, c2 = c1 + shift, c3 = c2 + shift;
            long bottom = end * (long)lanes;
            int t = k0 + 4;
            for (; t < end; t += 2)   // two later columns at a time: each source vector loaded once for both
            {
                long at = (long)t * lanes;
                var u0 = TL.Multiply(TL.Load(c0 + at), minus);
                var u1 = TL.Multiply(TL.Load(c1 + at), minus);
                var u2 = TL.Multiply(TL.Load(c2 + at), minus);
                var u3 = TL.Multiply(TL.Load(c3 + at), minus);
                var w0 = TL.Multiply(TL.Load(c0 + at + lanes), minus);
                var w1 = TL.Multiply(TL.Load(c1 + at + lanes), minus);
                var w2 = TL.Multiply(TL.Load(c2 + at + lanes), minus);
                var w3 = TL.Multiply(TL.Load(c3 + at + lanes), minus);
                double* y = a0 + t * shift, z = y + shift;
                TL.Store(TL.Fma(u3, TL.Load(c3 + at), TL.Fma(u2, TL.Load(c2 + at), TL.Fma(u1, TL.Load(c1 + at), TL.Fma(u0, TL.Load(c0 + at), TL.Load(y + at))))), y + at);
                for (long i = at + lanes; i <= bottom; i += lanes)
                {
                    var x0 = TL.Load(c0 + i);
                    var x1 = TL.Load(c1 + i);
                    var x2 = TL.Load(c2 + i);
                    var x3 = TL.Load(c3 + i);
                    TL.Store(TL.Fma(u3, x3, TL.Fma(u2, x2, TL.Fma(u1, x1, TL.Fma(u0, x0, TL.Load(y + i))))), y + i);
                    TL.Store(TL.Fma(w3, x3, TL.Fma(w2, x2, TL.Fma(w1, x1, TL.Fma(w0, x0, TL.Load(z + i))))), z + i);
                }
            }
            if (t == end)   // the last column alone: its diagonal
            {
                long at = (long)t * lanes;
                double* y = a0 + t * shift;
                var sum = TL.Fma(TL.Load(c3 + at), TL.Load(c3 + at), TL.Fma(TL.Load(c2 + at), TL.Load(c2 + at), TL.Fma(TL.Load(c1 + at), TL.Load(c1 + at), TL.Multiply(TL.Load(c0 + at), TL.Load(c0 + at)))));
                TL.Store(TL.Fma(sum, minus, TL.Load(y + at)), y + at);
            }
        }
    }

    /// <summary>L y = r, then Lᵀ v = y, in place on one right-hand side of n vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Substitute<TL, TV>(double* a0, double* inv, double* v, int n, int band) where TL : struct, ILanes<TV> where TV : struct
    {
        int lanes = TL.Count, stride = (band + 1 + Pad) * lanes;
        var minus = TL.Splat(-1);
        for (int k = 0; k < n; k++)
        {
            double* ck = a0 + (long)k * stride;
            var y = TL.Multiply(TL.Load(v + (long)k * lanes), TL.Load(inv + (long)k * lanes));
            TL.Store(y, v + (long)k * lanes);
            var ny = TL.Multiply(y, minus);
            int m = Math.Min(band, n - 1 - k);
            for (int r = 1; r <= m; r++) TL.Store(TL.Fma(ny, TL.Load(ck + r * lanes), TL.Load(v + (long)(k + r) * lanes)), v + (long)(k + r) * lanes);
        }
        // Backward, each dot product from its far end: only its last term waits on the value found just before it, so
        // the processor runs the next columns' sums while one finishes (in row order every sum waited on it).
        for (int k = n - 1; k >= 0; k--)
        {
            double* ck = a0 + (long)k * stride;
            var even = TL.Zero;
            var odd = TL.Zero;
            int r = Math.Min(band, n - 1 - k);
            for (; r >= 2; r -= 2)
            {
                even = TL.Fma(TL.Load(ck + r * lanes), TL.Load(v + (long)(k + r) * lanes), even);
                odd = TL.Fma(TL.Load(ck + (r - 1) * lanes), TL.Load(v + (long)(k + r - 1) * lanes), odd);
            }
            var sum = TL.Fma(TL.Load(ck + r * lanes), r == 1 ? TL.Load(v + (long)(k + 1) * lanes) : TL.Zero, TL.Fma(even, TL.Splat(1), odd));
            TL.Store(TL.Multiply(TL.Fma(sum, minus, TL.Load(v + (long)k * lanes)), TL.Load(inv + (long)k * lanes)), v + (long)k * lanes);
        }
    }
}
