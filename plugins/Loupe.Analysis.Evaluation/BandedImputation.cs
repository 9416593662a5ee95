using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Loupe.Analysis.Evaluation;

/// <summary>The direct path of <see cref="LinearImputation"/>: one image's imputation system, exactly, by a banded
/// Cholesky factorisation A = LLᵀ in float64 on plain arrays, all channels as right-hand sides (the matrix depends on
/// the mask only).
/// <para>Unknown pixel p (unknowns numbered in raster order): (Σ_{in-image neighbours} w) v_p − Σ_{unknown neighbours
/// q} w v_q = Σ_{known neighbours q} w x_q, w = 1/6 direct, 1/12 diagonal. A neighbour of p is at most one image row
/// away, so the half-bandwidth b (the largest index gap between two neighbouring unknowns) is at most the number of
/// unknowns in one image row + 1 ≤ W + 1. Row i is stored from its first non-zero column (its envelope, which the
/// factor keeps), so the factorisation costs Σ_i (envelope width)²/2 ≤ n·b²/2 multiply-adds and each solve 2·n·b.</para></summary>
static class BandedImputation
{
    /// <summary>The system's size and half-bandwidth for one mask of H×W pixels (true = unknown).</summary>
    public static (int Unknowns, int Band) Shape(ReadOnlySpan<bool> unknown, int h, int w)
    {
        int count = 0, band = 0;
        var index = new int[h * w];
        for (int i = 0; i < h * w; i++) index[i] = unknown[i] ? count++ : -1;
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
        return (count, band);
    }

    /// <summary>Imputes one image in place: <paramref name="image"/> holds C planes of H×W pixels; the pixels where
    /// <paramref name="unknown"/> is true are replaced by the solution. With no known pixel the system has no data and
    /// its matrix is singular; those pixels become 0 (the conjugate-gradient path's rule: it starts at 0 and a zero
    /// right-hand side leaves it there). That is the only way an unknown region can miss every known pixel: a region
    /// whose in-image neighbours are all unknown is the whole image.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // ROAD calls it a few dozen times per run: no tier-0 code
    public static void Solve(Span<double> image, ReadOnlySpan<bool> unknown, int c, int h, int w)
    {
        int hw = h * w;
        var index = new int[hw];
        var pixel = new List<int>();
        for (int i = 0; i < hw; i++)
        {
            index[i] = unknown[i] ? pixel.Count : -1;
            if (unknown[i]) pixel.Add(i);
        }
        int n = pixel.Count;
        if (n == 0) return;
        if (n == hw)
        {
            for (int ch = 0; ch < c; ch++) image.Slice(ch * hw, hw).Clear();
            return;
        }

        // Envelope of each row: first[i] = its first non-zero column (a backward neighbour: left or the row above).
        var first = new int[n];
        var start = new int[n + 1];   // row i's entries, columns first[i]..i, are at start[i] ..
        for (int i = 0; i < n; i++)
        {
            int p = pixel[i], y = p / w, x = p % w, f = i;
            foreach (var (dy, dx) in Backward)
            {
                int yy = y + dy, xx = x + dx;
                if (yy >= 0 && xx >= 0 && xx < w && index[yy * w + xx] >= 0) f = Math.Min(f, index[yy * w + xx]);
            }
            first[i] = f;
            start[i + 1] = start[i] + (i - f + 1);
        }
        var l = new double[start[n]];
        var diagonal = new double[n];
        var rhs = new double[c * n];
        for (int i = 0; i < n; i++)
        {
            int p = pixel[i], y = p / w, x = p % w;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++)
                {
                    int yy = y + dy, xx = x + dx;
                    if ((dy == 0 && dx == 0) || yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                    double weight = dy != 0 && dx != 0 ? 1.0 / 12 : 1.0 / 6;
                    diagonal[i] += weight;
                    int q = yy * w + xx, j = index[q];
                    if (j < 0)
                        for (int ch = 0; ch < c; ch++) rhs[ch * n + i] += weight * image[ch * hw + q];
                    else if (j < i)
                        l[start[i] + j - first[i]] = -weight;
                }
            l[start[i + 1] - 1] = diagonal[i];
        }

        Factor(l, start, first, n);
        for (int ch = 0; ch < c; ch++)
        {
            var v = rhs.AsSpan(ch * n, n);
            for (int i = 0; i < n; i++)   // L y = r
            {
                var row = l.AsSpan(start[i], i - first[i] + 1);
                v[i] = (v[i] - Dot(row[..^1], v[first[i]..i])) / row[^1];
            }
            for (int i = n - 1; i >= 0; i--)   // Lᵀ v = y, row by row: v_i is final once the rows below have been used
            {
                var row = l.AsSpan(start[i], i - first[i] + 1);
                v[i] /= row[^1];
                double vi = v[i];
                var target = v[first[i]..i];
                for (int k = 0; k < target.Length; k++) target[k] -= row[k] * vi;
            }
            var plane = image.Slice(ch * hw, hw);
            for (int i = 0; i < n; i++) plane[pixel[i]] = v[i];
        }
    }

    static readonly (int Dy, int Dx)[] Backward = [(0, -1), (-1, -1), (-1, 0), (-1, 1)];

    /// <summary>In-place Cholesky of the envelope-stored lower triangle: L[i,j] = (A[i,j] − Σ_k L[i,k] L[j,k]) / L[j,j],
    /// k from the later of the two rows' first columns.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // ROAD calls it a few dozen times per run: no tier-0 code
    static void Factor(double[] l, int[] start, int[] first, int n)
    {
        for (int i = 0; i < n; i++)
        {
            int fi = first[i];
            var row = l.AsSpan(start[i], i - fi + 1);
            for (int j = fi; j < i; j++)
            {
                int lo = Math.Max(fi, first[j]);
                var other = l.AsSpan(start[j], j - first[j] + 1);
                row[j - fi] = (row[j - fi] - Dot(row.Slice(lo - fi, j - lo), other.Slice(lo - first[j], j - lo))) / other[^1];
            }
            double d = row[^1] - Dot(row[..^1], row[..^1]);
            if (!(d > 0)) throw new InvalidOperationException($"ROAD imputation: the system is not positive definite at unknown {i} (pivot {d}).");
            row[^1] = Math.Sqrt(d);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        // Four independent sums (the rows are 1–30 long here; a vector setup costs more than it saves).
        ref double x = ref MemoryMarshal.GetReference(a), y = ref MemoryMarshal.GetReference(b);
        int length = Math.Min(a.Length, b.Length), k = 0;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (; k + 4 <= length; k += 4)
        {
            s0 += Unsafe.Add(ref x, k) * Unsafe.Add(ref y, k);
            s1 += Unsafe.Add(ref x, k + 1) * Unsafe.Add(ref y, k + 1);
            s2 += Unsafe.Add(ref x, k + 2) * Unsafe.Add(ref y, k + 2);
            s3 += Unsafe.Add(ref x, k + 3) * Unsafe.Add(ref y, k + 3);
        }
        for (; k < length; k++) s0 += Unsafe.Add(ref x, k) * Unsafe.Add(ref y, k);
        return (s0 + s1) + (s2 + s3);
    }
}
