using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Loupe.Analysis.Evaluation;

/// <summary>A vector width for the Cholesky kernels: the operations they use on <typeparamref name="TV"/>, so that one
/// kernel body runs on 4-wide (<see cref="Lanes4"/>, AVX2) or 8-wide (<see cref="Lanes8"/>, AVX-512) vectors; the JIT
/// compiles one copy per width with the calls inlined (.NET's own ISimdVector is internal).</summary>
internal interface ILanes<TV> where TV : struct
{
    /// <summary>Lanes per vector.</summary>
    static abstract int Count { get; }
    /// <summary>Zero in every lane.</summary>
    static abstract TV Zero { get; }
    /// <summary>Count values from p.</summary>
    static abstract unsafe TV Load(double* p);
    /// <summary>v to p.</summary>
    static abstract unsafe void Store(TV v, double* p);
    /// <summary>a in every lane.</summary>
    static abstract TV Splat(double a);
    /// <summary>a·b + c per lane, rounded once.</summary>
    static abstract TV Fma(TV a, TV b, TV c);
    /// <summary>a·b per lane.</summary>
    static abstract TV Multiply(TV a, TV b);
    /// <summary>The lanes' sum.</summary>
    static abstract double Sum(TV v);
    /// <summary>√v per lane.</summary>
    static abstract TV Sqrt(TV v);
    /// <summary>a / b per lane.</summary>
    static abstract TV Divide(TV a, TV b);
    /// <summary>Whether every lane is above zero (false for NaN).</summary>
    static abstract bool AllPositive(TV v);
}

/// <summary>4-wide vectors (AVX2).</summary>
internal readonly struct Lanes4 : ILanes<Vector256<double>>
{
    public static int Count => 4;
    public static Vector256<double> Zero => Vector256<double>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static unsafe Vector256<double> Load(double* p) => Vector256.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static unsafe void Store(Vector256<double> v, double* p) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> Splat(double a) => Vector256.Create(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> Fma(Vector256<double> a, Vector256<double> b, Vector256<double> c) => Vector256.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> Multiply(Vector256<double> a, Vector256<double> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double Sum(Vector256<double> v) => Vector256.Sum(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> Sqrt(Vector256<double> v) => Vector256.Sqrt(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> Divide(Vector256<double> a, Vector256<double> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool AllPositive(Vector256<double> v) => Vector256.GreaterThanAll(v, Vector256<double>.Zero);
}

/// <summary>8-wide vectors (AVX-512; emulated, slowly, where the processor lacks them: tests run both widths).</summary>
internal readonly struct Lanes8 : ILanes<Vector512<double>>
{
    public static int Count => 8;
    public static Vector512<double> Zero => Vector512<double>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static unsafe Vector512<double> Load(double* p) => Vector512.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static unsafe void Store(Vector512<double> v, double* p) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> Splat(double a) => Vector512.Create(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> Fma(Vector512<double> a, Vector512<double> b, Vector512<double> c) => Vector512.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> Multiply(Vector512<double> a, Vector512<double> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double Sum(Vector512<double> v) => Vector512.Sum(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> Sqrt(Vector512<double> v) => Vector512.Sqrt(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> Divide(Vector512<double> a, Vector512<double> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool AllPositive(Vector512<double> v) => Vector512.GreaterThanAll(v, Vector512<double>.Zero);
}

/// <summary>The column operations of the right-looking Cholesky factorisations of ROAD's imputation (the banded
/// envelope of <see cref="BandedImputation"/>, the dense fronts of <see cref="DissectedImputation"/>), in whole
/// vectors of L lanes: each reads and writes up to L − 1 entries past its <c>rows</c>, which both layouts keep zero (a
/// zero times anything adds nothing, a zero scaled stays zero). The untyped overloads run 4-wide (the fronts keep
/// <see cref="FrontKernels.Pad"/> zero rows, room for 4-wide vectors only).</summary>
static class CholeskyKernels
{
    /// <summary>y[0..rows) += a·x[0..rows).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Axpy<TL, TV>(double a, double* x, double* y, int rows) where TL : struct, ILanes<TV> where TV : struct
    {
        var av = TL.Splat(a);
        for (int r = 0; r < rows; r += TL.Count)
            TL.Store(TL.Fma(av, TL.Load(x + r), TL.Load(y + r)), y + r);
    }

    /// <summary>v[0..rows) *= s.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Scale<TL, TV>(double* v, double s, int rows) where TL : struct, ILanes<TV> where TV : struct
    {
        var sv = TL.Splat(s);
        for (int r = 0; r < rows; r += TL.Count)
            TL.Store(TL.Multiply(TL.Load(v + r), sv), v + r);
    }

    /// <summary>Two later columns at once take a block of four columns' update: y −= Σ_s a_s·x_s and z −= Σ_s b_s·x_s
    /// over [0, rows), the four source vectors loaded once for eight multiply-adds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void UpdatePair<TL, TV>(double* x0, double* x1, double* x2, double* x3,
        double a0, double a1, double a2, double a3, double b0, double b1, double b2, double b3, double* y, double* z, int rows)
        where TL : struct, ILanes<TV> where TV : struct
    {
        var u0 = TL.Splat(-a0); var u1 = TL.Splat(-a1); var u2 = TL.Splat(-a2); var u3 = TL.Splat(-a3);
        var v0 = TL.Splat(-b0); var v1 = TL.Splat(-b1); var v2 = TL.Splat(-b2); var v3 = TL.Splat(-b3);
        for (int r = 0; r < rows; r += TL.Count)
        {
            var s0 = TL.Load(x0 + r);
            var s1 = TL.Load(x1 + r);
            var s2 = TL.Load(x2 + r);
            var s3 = TL.Load(x3 + r);
            var p = TL.Load(y + r);
            var q = TL.Load(z + r);
            p = TL.Fma(u0, s0, p);
            q = TL.Fma(v0, s0, q);
            p = TL.Fma(u1, s1, p);
            q = TL.Fma(v1, s1, q);
            p = TL.Fma(u2, s2, p);
            q = TL.Fma(v2, s2, q);
            p = TL.Fma(u3, s3, p);
            q = TL.Fma(v3, s3, q);
            TL.Store(p, y + r);
            TL.Store(q, z + r);
        }
    }

    /// <summary>One later vector takes a block of four columns' update: y −= Σ_s a_s·x_s over [0, rows).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Update<TL, TV>(double* x0, double* x1, double* x2, double* x3, double a0, double a1, double a2, double a3, double* y, int rows)
        where TL : struct, ILanes<TV> where TV : struct
    {
        var u0 = TL.Splat(-a0); var u1 = TL.Splat(-a1); var u2 = TL.Splat(-a2); var u3 = TL.Splat(-a3);
        for (int r = 0; r < rows; r += TL.Count)
            TL.Store(TL.Fma(u3, TL.Load(x3 + r), TL.Fma(u2, TL.Load(x2 + r), TL.Fma(u1, TL.Load(x1 + r), TL.Fma(u0, TL.Load(x0 + r), TL.Load(y + r))))), y + r);
    }

    /// <summary>Σ x[r]·y[r] over [0, rows) (reads whole vectors past rows: zeros in x).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe double Dot<TL, TV>(double* x, double* y, int rows) where TL : struct, ILanes<TV> where TV : struct
    {
        var sum = TL.Zero;
        for (int r = 0; r < rows; r += TL.Count) sum = TL.Fma(TL.Load(x + r), TL.Load(y + r), sum);
        return TL.Sum(sum);
    }

    /// <summary><see cref="Axpy{TL, TV}"/> on 4-wide vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Axpy(double a, double* x, double* y, int rows) => Axpy<Lanes4, Vector256<double>>(a, x, y, rows);

    /// <summary><see cref="Scale{TL, TV}"/> on 4-wide vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Scale(double* v, double s, int rows) => Scale<Lanes4, Vector256<double>>(v, s, rows);

    /// <summary><see cref="UpdatePair{TL, TV}"/> on 4-wide vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void UpdatePair(double* x0, double* x1, double* x2, double* x3,
        double a0, double a1, double a2, double a3, double b0, double b1, double b2, double b3, double* y, double* z, int rows) =>
        UpdatePair<Lanes4, Vector256<double>>(x0, x1, x2, x3, a0, a1, a2, a3, b0, b1, b2, b3, y, z, rows);

    /// <summary>The diagonal entry d −= Σ_s a_s².</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double Diagonal(double d, double a0, double a1, double a2, double a3) =>
        Math.FusedMultiplyAdd(-a3, a3, Math.FusedMultiplyAdd(-a2, a2, Math.FusedMultiplyAdd(-a1, a1, Math.FusedMultiplyAdd(-a0, a0, d))));
}
