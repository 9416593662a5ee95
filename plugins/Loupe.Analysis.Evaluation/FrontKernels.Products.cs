using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Loupe.Analysis.Evaluation;

/// <summary>The fronts' dense products (the Schur complement's −L₂₁L₂₁ᵀ and the partial factorisation's panel
/// updates): operands packed by tiles of eight rows, register-tiled on 4-wide (AVX2) or 8-wide (AVX-512) vectors.</summary>
internal static partial class FrontKernels
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

    /// <summary>Room for <paramref name="rows"/> rows (rounded up to tiles of eight) of <paramref name="inner"/> packed
    /// columns in the caller's buffer (grown by doubling, kept by the caller's thread).</summary>
    static double[] Packed(ref double[] buffer, int rows, int inner)
    {
        long count = (rows + 7L) / 8 * 8 * inner;
        if (buffer.Length < count) buffer = new double[Math.Max(count, 2L * buffer.Length)];
        return buffer;
    }
}
