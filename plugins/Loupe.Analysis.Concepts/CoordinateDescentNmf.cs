using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Concepts;

/// <summary>scikit-learn's <c>NMF(n_components=r, init='random', random_state=seed)</c> with its defaults (solver
/// 'cd', Frobenius loss, tol 1e-4, max_iter 200, no regularisation, no shuffling), written from its documented
/// algorithm (Cichocki &amp; Phan 2009's coordinate descent, as sklearn describes it), in float32 as sklearn runs a
/// float32 X: X (m×n, ≥ 0) ≈ W·H. Start: avg = √(mean(X)/r); H = |avg·z| (r×n) then W = |avg·z| (m×r) from numpy's
/// legacy RandomState(seed) standard normals. Each iteration updates every column t of W in turn — for each row i,
/// g = (W·HHᵀ − XHᵀ)[i, t], the projected gradient (min(0, g) where W[i, t] = 0) summed into the violation, and
/// W[i, t] ← max(0, W[i, t] − g / HHᵀ[t, t]) — then H the same way through Hᵀ (with WᵀW and XᵀW); it stops when the
/// violation falls to tol × the first iteration's. The products HHᵀ and XHᵀ are summed in float64 and rounded (sklearn's
/// BLAS sums float32 in its own order: results agree to rounding, not bit for bit).</summary>
public static class CoordinateDescentNmf
{
    /// <summary>Factorises <paramref name="x"/> (row-major m×n, non-negative); returns W (m×r), H (r×n) and the
    /// iterations run.</summary>
    public static (float[] W, float[] H, int Iterations) Fit(float[] x, int m, int n, int r, uint seed = 0, double tol = 1e-4, int maxIter = 200)
    {
        if (x.Length != (long)m * n) throw new ArgumentException("NMF: X has the wrong length");
        var rng = new NumpyRandomState(seed);
        // numpy's float32 mean (as float64 here, then rounded as numpy stores it), and avg in float64 as
        // np.sqrt(float32 / int) gives it; the draws in float32 times float32(avg), then |·|.
        float mean = (float)(x.Select(v => (double)v).Sum() / x.Length);
        float avg = (float)Math.Sqrt(mean / (double)r);
        var h = new float[(long)r * n];
        for (int i = 0; i < h.Length; i++) h[i] = Math.Abs(avg * (float)rng.StandardNormal());
        var w = new float[(long)m * r];
        for (int i = 0; i < w.Length; i++) w[i] = Math.Abs(avg * (float)rng.StandardNormal());
        var ht = Transpose(h, r, n);                                   // n×r
        var xt = Transpose(x, m, n);                                   // n×m
        double violationInit = 0;
        int iter;
        for (iter = 1; iter <= maxIter; iter++)
        {
            double violation = Update(x, m, n, w, ht, r);              // W with H fixed
            violation += Update(xt, n, m, ht, w, r);                   // H (as Hᵀ) with W fixed
            if (iter == 1) violationInit = violation;
            if (violationInit == 0) break;
            if (violation / violationInit <= tol) break;
        }
        return (w, Transpose(ht, n, r), Math.Min(iter, maxIter));
    }

    /// <summary>One coordinate-descent sweep over the columns of <paramref name="w"/> (rows×r) for X (rows×cols) ≈
    /// W·Hᵀ with <paramref name="ht"/> (cols×r) fixed; returns the violation (summed in float32).</summary>
    static double Update(float[] x, int rows, int cols, float[] w, float[] ht, int r)
    {
        var hht = new float[r * r];
        for (int a = 0; a < r; a++)
            for (int b = 0; b < r; b++)
            {
                double s = 0;
                for (int j = 0; j < cols; j++) s += (double)ht[(long)j * r + a] * ht[(long)j * r + b];
                hht[a * r + b] = (float)s;
            }
        var xht = new float[(long)rows * r];
        var acc = new double[r];
        for (int i = 0; i < rows; i++)
        {
            Array.Clear(acc);
            long row = (long)i * cols;
            for (int j = 0; j < cols; j++)
            {
                double v = x[row + j];
                if (v == 0) continue;
                long hj = (long)j * r;
                for (int a = 0; a < r; a++) acc[a] += v * ht[hj + a];
            }
            for (int a = 0; a < r; a++) xht[(long)i * r + a] = (float)acc[a];
        }
        float violation = 0;
        for (int t = 0; t < r; t++)
        {
            float hess = hht[t * r + t];
            for (int i = 0; i < rows; i++)
            {
                long wi = (long)i * r;
                float grad = -xht[wi + t];
                for (int a = 0; a < r; a++) grad += hht[t * r + a] * w[wi + a];
                float pg = w[wi + t] == 0 ? Math.Min(0f, grad) : grad;
                violation += Math.Abs(pg);
                if (hess != 0) w[wi + t] = Math.Max(w[wi + t] - grad / hess, 0f);
            }
        }
        return violation;
    }

    static float[] Transpose(float[] a, int rows, int cols)
    {
        var t = new float[a.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) t[(long)j * rows + i] = a[(long)i * cols + j];
        return t;
    }
}
