using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Loupe.Analysis.Evaluation;

/// <summary>The dense kernels of <see cref="DissectedImputation"/>'s fronts (lower triangle, column-major, leading
/// dimension ld = t + <see cref="Pad"/>, rows t.. of V's columns zero): the panel's partial Cholesky factorisation, the
/// Schur complement's product, and the two triangular solves over a front with four channels interleaved per value
/// (float64, 4-wide vectors).</summary>
internal static partial class FrontKernels
{
    /// <summary>The forward solve over one front, four channels at once (interleaved): V's values y (a run) become
    /// L₁₁⁻¹y, the ring's (gathered in <paramref name="ring"/>) take −L₂₁ times them. By blocks of four columns: the
    /// block's 4×4 triangle, then each later row takes the four columns' terms in one load and store of its value.
    /// <paramref name="inverse"/>: the k pivots' reciprocals.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void ForwardFront(double* f, int ld, int k, int m, double* y, double* ring, double* inverse)
    {
        int j = 0;
        for (; j + 4 <= k; j += 4)
        {
            double* c0 = f + (long)j * ld, c1 = c0 + ld, c2 = c1 + ld, c3 = c2 + ld;
            double* yj = y + 4 * j;
            var v0 = Vector256.Load(yj) * Vector256.Create(inverse[j]);
            var v1 = Vector256.FusedMultiplyAdd(Vector256.Create(-c0[j + 1]), v0, Vector256.Load(yj + 4)) * Vector256.Create(inverse[j + 1]);
            var v2 = Vector256.FusedMultiplyAdd(Vector256.Create(-c1[j + 2]), v1,
                Vector256.FusedMultiplyAdd(Vector256.Create(-c0[j + 2]), v0, Vector256.Load(yj + 8))) * Vector256.Create(inverse[j + 2]);
            var v3 = Vector256.FusedMultiplyAdd(Vector256.Create(-c2[j + 3]), v2, Vector256.FusedMultiplyAdd(Vector256.Create(-c1[j + 3]), v1,
                Vector256.FusedMultiplyAdd(Vector256.Create(-c0[j + 3]), v0, Vector256.Load(yj + 12)))) * Vector256.Create(inverse[j + 3]);
            v0.Store(yj); v1.Store(yj + 4); v2.Store(yj + 8); v3.Store(yj + 12);
            Update4(c0, c1, c2, c3, -v0, -v1, -v2, -v3, j + 4, k, y);
            Update4(c0 + k, c1 + k, c2 + k, c3 + k, -v0, -v1, -v2, -v3, 0, m, ring);
        }
        for (; j < k; j++)
        {
            double* col = f + (long)j * ld;
            var v = Vector256.Load(y + 4 * j) * Vector256.Create(inverse[j]);
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
}
