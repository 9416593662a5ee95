using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Loupe.Analysis.Evaluation;

/// <summary>The column operations of the right-looking Cholesky factorisations of ROAD's imputation (the banded
/// envelope of <see cref="BandedImputation"/>, the dense fronts of <see cref="DissectedImputation"/>), in whole
/// 4-wide vectors: each reads and writes up to three entries past its <c>rows</c>, which both layouts keep zero (a
/// zero times anything adds nothing, a zero scaled stays zero).</summary>
static class CholeskyKernels
{
    /// <summary>y[0..rows) += a·x[0..rows).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Axpy(double a, double* x, double* y, int rows)
    {
        var av = Vector256.Create(a);
        for (int r = 0; r < rows; r += 4)
            Vector256.FusedMultiplyAdd(av, Vector256.Load(x + r), Vector256.Load(y + r)).Store(y + r);
    }

    /// <summary>v[0..rows) *= s.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Scale(double* v, double s, int rows)
    {
        var sv = Vector256.Create(s);
        for (int r = 0; r < rows; r += 4)
            (Vector256.Load(v + r) * sv).Store(v + r);
    }

    /// <summary>Two later columns at once take a block of four columns' update: y −= Σ_s a_s·x_s and z −= Σ_s b_s·x_s
    /// over [0, rows), the four source vectors loaded once for eight multiply-adds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void UpdatePair(double* x0, double* x1, double* x2, double* x3,
        double a0, double a1, double a2, double a3, double b0, double b1, double b2, double b3, double* y, double* z, int rows)
    {
        var u0 = Vector256.Create(-a0); var u1 = Vector256.Create(-a1); var u2 = Vector256.Create(-a2); var u3 = Vector256.Create(-a3);
        var v0 = Vector256.Create(-b0); var v1 = Vector256.Create(-b1); var v2 = Vector256.Create(-b2); var v3 = Vector256.Create(-b3);
        for (int r = 0; r < rows; r += 4)
        {
            var s0 = Vector256.Load(x0 + r);
            var s1 = Vector256.Load(x1 + r);
            var s2 = Vector256.Load(x2 + r);
            var s3 = Vector256.Load(x3 + r);
            var p = Vector256.Load(y + r);
            var q = Vector256.Load(z + r);
            p = Vector256.FusedMultiplyAdd(u0, s0, p);
            q = Vector256.FusedMultiplyAdd(v0, s0, q);
            p = Vector256.FusedMultiplyAdd(u1, s1, p);
            q = Vector256.FusedMultiplyAdd(v1, s1, q);
            p = Vector256.FusedMultiplyAdd(u2, s2, p);
            q = Vector256.FusedMultiplyAdd(v2, s2, q);
            p = Vector256.FusedMultiplyAdd(u3, s3, p);
            q = Vector256.FusedMultiplyAdd(v3, s3, q);
            p.Store(y + r);
            q.Store(z + r);
        }
    }

    /// <summary>The diagonal entry d −= Σ_s a_s².</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double Diagonal(double d, double a0, double a1, double a2, double a3) =>
        Math.FusedMultiplyAdd(-a3, a3, Math.FusedMultiplyAdd(-a2, a2, Math.FusedMultiplyAdd(-a1, a1, Math.FusedMultiplyAdd(-a0, a0, d))));
}
