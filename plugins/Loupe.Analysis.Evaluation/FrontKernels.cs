using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Loupe.Analysis.Evaluation;

/// <summary>The dense kernels of <see cref="DissectedImputation"/>'s fronts (lower triangle, column-major, leading
/// dimension ld = t + <see cref="Pad"/>, rows t.. of V's columns zero): the panel's partial Cholesky factorisation, the
/// Schur complement's product, and the two triangular solves over a front with four channels interleaved per value
/// (float64, 4-wide vectors).</summary>
internal static class FrontKernels
{
    /// <summary>The Schur complement's product: the ring block of the front (columns and rows k..k+m−1) becomes
    /// −L₂₁L₂₁ᵀ, L₂₁ = rows k.. of V's k factored columns (each entry written once: the block needs no clearing).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void SchurProduct(ref double[] buffer, double* f, int ld, int k, int m)
    {
        fixed (double* p = Packed(ref buffer, m, k))
        {
            Pack(f, ld, k, m, 0, k, p);
            Tiles(p, k, m, m, f + (long)k * ld + k, ld, assign: true);
        }
    }

    /// <summary>Copies rows [r0, r0 + rows) of columns [s0, s1) into <paramref name="p"/> by tiles of eight rows, each
    /// tile's rows contiguous per column (p[(tile·(s1−s0) + s − s0)·8 + i]): the product's operands read in order.
    /// Reads up to seven rows past the last (the front's zero rows).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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
    /// <paramref name="ld"/>), P packed by <see cref="Pack"/> with inner dimension <paramref name="inner"/>: tiles of
    /// eight rows by six columns with the sums in registers (twelve accumulators, two row vectors and a broadcast: the
    /// sixteen vector registers of AVX2; an 8×8 tile needs nineteen and spilled: ~1.4× the time), each packed
    /// row vector feeding six multiply-adds. A tile's six columns may straddle two packed tiles of eight: each column
    /// reads at its own offset. Writes whole tiles: up to seven rows past <paramref name="rows"/> and above the diagonal
    /// within a tile (space the front does not read; zero rows stay zero when subtracting, their packed rows being
    /// zero).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Tiles(double* p, int inner, int rows, int cols, double* c, int ld, bool assign)
    {
        if (Wide) { TilesWide(p, inner, rows, cols, c, ld, assign); return; }
        long tile = 8L * inner;
        for (int j0 = 0; j0 < cols; j0 += 6)
        {
            int n = Math.Min(6, cols - j0);
            // Column j0 + q's offset from column j0's place (past the packed tile of eight: the next tile's); columns
            // past the last read column j0's (their sums are not stored).
            long o1 = Offset(j0, 1, n, tile), o2 = Offset(j0, 2, n, tile), o3 = Offset(j0, 3, n, tile), o4 = Offset(j0, 4, n, tile), o5 = Offset(j0, 5, n, tile);
            for (int i0 = j0 & ~7; i0 < rows; i0 += 8)
            {
                Vector256<double> a0 = default, a1 = default, b0 = default, b1 = default, c0 = default, c1 = default;
                Vector256<double> d0 = default, d1 = default, e0 = default, e1 = default, g0 = default, g1 = default;
                double* x = p + i0 / 8 * tile, y = p + j0 / 8 * tile + (j0 & 7);
                for (int s = 0; s < inner; s++, x += 8, y += 8)
                {
                    var r0 = Vector256.Load(x);
                    var r1 = Vector256.Load(x + 4);
                    var v = Vector256.Create(y[0]);
                    a0 = Vector256.FusedMultiplyAdd(r0, v, a0); a1 = Vector256.FusedMultiplyAdd(r1, v, a1);
                    v = Vector256.Create(y[o1]);
                    b0 = Vector256.FusedMultiplyAdd(r0, v, b0); b1 = Vector256.FusedMultiplyAdd(r1, v, b1);
                    v = Vector256.Create(y[o2]);
                    c0 = Vector256.FusedMultiplyAdd(r0, v, c0); c1 = Vector256.FusedMultiplyAdd(r1, v, c1);
                    v = Vector256.Create(y[o3]);
                    d0 = Vector256.FusedMultiplyAdd(r0, v, d0); d1 = Vector256.FusedMultiplyAdd(r1, v, d1);
                    v = Vector256.Create(y[o4]);
                    e0 = Vector256.FusedMultiplyAdd(r0, v, e0); e1 = Vector256.FusedMultiplyAdd(r1, v, e1);
                    v = Vector256.Create(y[o5]);
                    g0 = Vector256.FusedMultiplyAdd(r0, v, g0); g1 = Vector256.FusedMultiplyAdd(r1, v, g1);
                }
                double* u = c + (long)j0 * ld + i0;
                Put(u, a0, a1, assign);
                if (n > 1) Put(u + ld, b0, b1, assign);
                if (n > 2) Put(u + 2 * ld, c0, c1, assign);
                if (n > 3) Put(u + 3 * ld, d0, d1, assign);
                if (n > 4) Put(u + 4 * ld, e0, e1, assign);
                if (n > 5) Put(u + 5 * ld, g0, g1, assign);
            }
        }
    }

    /// <summary>Whether <see cref="Tiles"/> runs on 8-wide vectors (<see cref="TilesWide"/>): where the processor has
    /// them (AVX-512). Tests switch it to check both kernels on one machine.</summary>
    internal static bool Wide = Vector512.IsHardwareAccelerated;

    /// <summary><see cref="Tiles"/> in 8-wide vectors: tiles of 24 rows (three packed tiles) by eight columns (one
    /// packed tile: no column straddles two), twenty-four accumulators, three row vectors and a broadcast within
    /// AVX-512's thirty-two registers; rows past the last multiple of 24 by tiles of eight. The Schur products of
    /// ROAD's 40 systems at 224×224 on one thread: 57 → 37 ms (`Loupe.Benchmarks.dll --road-large 224 5 speckled`,
    /// AMD EPYC). Same writes as <see cref="Tiles"/>: whole tiles of eight rows, up to seven rows past
    /// <paramref name="rows"/>, and above the diagonal within a tile.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void TilesWide(double* p, int inner, int rows, int cols, double* c, int ld, bool assign)
    {
        long tile = 8L * inner;
        for (int j0 = 0; j0 < cols; j0 += 8)
        {
            int n = Math.Min(8, cols - j0);
            double* y0 = p + j0 / 8 * tile;
            int i0 = j0;
            for (; i0 + 16 < rows; i0 += 24)   // three packed tiles, the third holding at least one row
            {
                Vector512<double> a0 = default, a1 = default, a2 = default, b0 = default, b1 = default, b2 = default;
                Vector512<double> c0 = default, c1 = default, c2 = default, d0 = default, d1 = default, d2 = default;
                Vector512<double> e0 = default, e1 = default, e2 = default, f0 = default, f1 = default, f2 = default;
                Vector512<double> g0 = default, g1 = default, g2 = default, h0 = default, h1 = default, h2 = default;
                double* x = p + i0 / 8 * tile, y = y0;
                for (int s = 0; s < inner; s++, x += 8, y += 8)
                {
                    var r0 = Vector512.Load(x);
                    var r1 = Vector512.Load(x + tile);
                    var r2 = Vector512.Load(x + 2 * tile);
                    var v = Vector512.Create(y[0]);
                    a0 = Vector512.FusedMultiplyAdd(r0, v, a0); a1 = Vector512.FusedMultiplyAdd(r1, v, a1); a2 = Vector512.FusedMultiplyAdd(r2, v, a2);
                    v = Vector512.Create(y[1]);
                    b0 = Vector512.FusedMultiplyAdd(r0, v, b0); b1 = Vector512.FusedMultiplyAdd(r1, v, b1); b2 = Vector512.FusedMultiplyAdd(r2, v, b2);
                    v = Vector512.Create(y[2]);
                    c0 = Vector512.FusedMultiplyAdd(r0, v, c0); c1 = Vector512.FusedMultiplyAdd(r1, v, c1); c2 = Vector512.FusedMultiplyAdd(r2, v, c2);
                    v = Vector512.Create(y[3]);
                    d0 = Vector512.FusedMultiplyAdd(r0, v, d0); d1 = Vector512.FusedMultiplyAdd(r1, v, d1); d2 = Vector512.FusedMultiplyAdd(r2, v, d2);
                    v = Vector512.Create(y[4]);
                    e0 = Vector512.FusedMultiplyAdd(r0, v, e0); e1 = Vector512.FusedMultiplyAdd(r1, v, e1); e2 = Vector512.FusedMultiplyAdd(r2, v, e2);
                    v = Vector512.Create(y[5]);
                    f0 = Vector512.FusedMultiplyAdd(r0, v, f0); f1 = Vector512.FusedMultiplyAdd(r1, v, f1); f2 = Vector512.FusedMultiplyAdd(r2, v, f2);
                    v = Vector512.Create(y[6]);
                    g0 = Vector512.FusedMultiplyAdd(r0, v, g0); g1 = Vector512.FusedMultiplyAdd(r1, v, g1); g2 = Vector512.FusedMultiplyAdd(r2, v, g2);
                    v = Vector512.Create(y[7]);
                    h0 = Vector512.FusedMultiplyAdd(r0, v, h0); h1 = Vector512.FusedMultiplyAdd(r1, v, h1); h2 = Vector512.FusedMultiplyAdd(r2, v, h2);
                }
                double* u = c + (long)j0 * ld + i0;
                Put3(u, a0, a1, a2, assign);
                if (n > 1) Put3(u + ld, b0, b1, b2, assign);
                if (n > 2) Put3(u + 2 * ld, c0, c1, c2, assign);
                if (n > 3) Put3(u + 3 * ld, d0, d1, d2, assign);
                if (n > 4) Put3(u + 4 * ld, e0, e1, e2, assign);
                if (n > 5) Put3(u + 5 * ld, f0, f1, f2, assign);
                if (n > 6) Put3(u + 6 * ld, g0, g1, g2, assign);
                if (n > 7) Put3(u + 7 * ld, h0, h1, h2, assign);
            }
            for (; i0 < rows; i0 += 8)
            {
                Vector512<double> a0 = default, b0 = default, c0 = default, d0 = default, e0 = default, f0 = default, g0 = default, h0 = default;
                double* x = p + i0 / 8 * tile, y = y0;
                for (int s = 0; s < inner; s++, x += 8, y += 8)
                {
                    var r0 = Vector512.Load(x);
                    a0 = Vector512.FusedMultiplyAdd(r0, Vector512.Create(y[0]), a0);
                    b0 = Vector512.FusedMultiplyAdd(r0, Vector512.Create(y[1]), b0);
                    c0 = Vector512.FusedMultiplyAdd(r0, Vector512.Create(y[2]), c0);
                    d0 = Vector512.FusedMultiplyAdd(r0, Vector512.Create(y[3]), d0);
                    e0 = Vector512.FusedMultiplyAdd(r0, Vector512.Create(y[4]), e0);
                    f0 = Vector512.FusedMultiplyAdd(r0, Vector512.Create(y[5]), f0);
                    g0 = Vector512.FusedMultiplyAdd(r0, Vector512.Create(y[6]), g0);
                    h0 = Vector512.FusedMultiplyAdd(r0, Vector512.Create(y[7]), h0);
                }
                double* u = c + (long)j0 * ld + i0;
                Put1(u, a0, assign);
                if (n > 1) Put1(u + ld, b0, assign);
                if (n > 2) Put1(u + 2 * ld, c0, assign);
                if (n > 3) Put1(u + 3 * ld, d0, assign);
                if (n > 4) Put1(u + 4 * ld, e0, assign);
                if (n > 5) Put1(u + 5 * ld, f0, assign);
                if (n > 6) Put1(u + 6 * ld, g0, assign);
                if (n > 7) Put1(u + 7 * ld, h0, assign);
            }
        }
    }

    /// <summary>Eight entries of a column take −v: assigned, or subtracted from what is there.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Put1(double* u, Vector512<double> v, bool assign)
    {
        if (assign) (-v).Store(u);
        else (Vector512.Load(u) - v).Store(u);
    }

    /// <summary>Twenty-four entries of a column take −(v0, v1, v2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Put3(double* u, Vector512<double> v0, Vector512<double> v1, Vector512<double> v2, bool assign)
    {
        Put1(u, v0, assign);
        Put1(u + 8, v1, assign);
        Put1(u + 16, v2, assign);
    }

    /// <summary>Where column j0 + q of a tile of <see cref="Tiles"/> reads, from column j0's place.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static long Offset(int j0, int q, int n, long tile) => q >= n ? 0 : (j0 & 7) + q < 8 ? q : tile + q - 8;

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
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void ForwardFront(double* f, int ld, int k, int m, double* y, double* ring)
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
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void SubtractDots(double* l, int ld, int from, int to, double* x, int rows, double* y)
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

    /// <summary>Asks for the cache lines of [<paramref name="from"/>, <paramref name="to"/>) into L2, at most
    /// <see cref="PrefetchBytes"/> of them (the hardware prefetcher follows longer runs).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Prefetch(double* from, double* to)
    {
        byte* a = (byte*)from, end = (byte*)to;
        if (end - a > PrefetchBytes) end = a + PrefetchBytes;
        if (System.Runtime.Intrinsics.X86.Sse.IsSupported)
            for (; a < end; a += 64) System.Runtime.Intrinsics.X86.Sse.Prefetch1(a);
    }

    /// <summary>Most bytes <see cref="Prefetch"/> requests at once.</summary>
    const int PrefetchBytes = 16 << 10;

    /// <summary>Zero rows after each front column: a whole last vector (3) and the kernel's reach, one to spare.</summary>
    public const int Pad = 8;

    /// <summary>Eliminates the first <paramref name="k"/> of the <paramref name="t"/> unknowns of a dense front (lower
    /// triangle, column-major, leading dimension <paramref name="ld"/> ≥ t + 4, rows t.. zero): columns 0..k−1 become
    /// the factor's (the trailing block is left to <see cref="SchurProduct"/>). Right-looking by blocks of four
    /// columns, as <see cref="BandedImputation"/>'s kernel: each block's columns take the block's earlier columns, their
    /// pivot and scale; then every later column j of V gets A[j.., j] −= Σ_s L[j, s]·L[j.., s], two columns per pass.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void PartialFactor(ref double[] buffer, double* f, int t, int ld, int k)
    {
        for (int b0 = 0; b0 < k; b0 += Panel)
        {
            int b1 = Math.Min(k, b0 + Panel);
            FactorColumns(f, t, ld, b0, b1);
            if (b1 == k) break;
            // V's later columns take this block's Schur update at once (the tiled product, rows b1..t−1).
            fixed (double* p = Packed(ref buffer, t - b1, b1 - b0))
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

    /// <summary>Room for <paramref name="rows"/> rows (rounded up to tiles of eight) of <paramref name="inner"/> packed
    /// columns in the caller's buffer (grown by doubling, kept by the caller's thread).</summary>
    static double[] Packed(ref double[] buffer, int rows, int inner)
    {
        long count = (rows + 7L) / 8 * 8 * inner;
        if (buffer.Length < count) buffer = new double[Math.Max(count, 2L * buffer.Length)];
        return buffer;
    }
}
