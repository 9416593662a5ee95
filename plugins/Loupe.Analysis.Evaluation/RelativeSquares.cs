using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Sums of squared relative changes, Σ_e ((a_e − b_e) / (a_e, or ε where a_e = 0))², in float64, row by row,
/// in one pass over both tensors: relative-representation-stability's denominator over every layer's output of every
/// noisy copy, without float64 copies of them.</summary>
internal static class RelativeSquares
{
    /// <summary>Adds to <paramref name="sums"/>[r] the sum over row r of <paramref name="copies"/> (R×…) against row
    /// r mod N of <paramref name="clean"/> (N×…, the same shape per row). Elements are paired in the clean tensor's
    /// memory order (a channels-last output is read as it lies, the copies' too when they lie the same way).</summary>
    public static unsafe void Add(Tensor clean, Tensor copies, double eps, double[] sums)
    {
        using var scope = NewDisposeScope();
        long n = clean.shape[0], rows = copies.shape[0], width = clean.numel() / Math.Max(1, n);
        if (!copies.shape.Skip(1).SequenceEqual(clean.shape.Skip(1)) || rows > sums.Length)
            throw new ArgumentException("relative squares: the copies' rows are not shaped as the clean rows");
        if (width == 0) return;
        // The clean tensor's dimensions by descending stride: both tensors viewed in that order are its memory order.
        long[] order = [0, .. Enumerable.Range(1, (int)clean.dim() - 1).OrderByDescending(d => clean.stride(d)).ThenBy(d => d).Select(d => (long)d)];
        bool single = clean.dtype == ScalarType.Float32 && copies.dtype == ScalarType.Float32;
        var type = single ? ScalarType.Float32 : ScalarType.Float64;
        var a = clean.permute(order).to(type).reshape(n, width).contiguous();
        var b = copies.permute(order).to(type).reshape(rows, width).contiguous();
        nint pa = Address(a), pb = Address(b);
        int size = single ? sizeof(float) : sizeof(double);
        var added = new double[rows];
        TensorThreads.For((int)rows, r =>
        {
            nint x = pa + (nint)(r % n * width * size), y = pb + (nint)(r * width * size);
            added[r] = single ? Row((float*)x, (float*)y, width, eps) : Row((double*)x, (double*)y, width, eps);
        });
        for (int r = 0; r < rows; r++) sums[r] += added[r];
    }

    static unsafe nint Address(Tensor t) => (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe double Row(float* a, float* b, long count, double eps)
    {
        var e = Vector256.Create(eps);
        Vector256<double> s0 = default, s1 = default;
        long i = 0;
        for (; i + 8 <= count; i += 8)
        {
            var (al, ah) = Vector256.Widen(Vector256.Load(a + i));
            var (bl, bh) = Vector256.Widen(Vector256.Load(b + i));
            s0 = Square(al, bl, e, s0);
            s1 = Square(ah, bh, e, s1);
        }
        double sum = Vector256.Sum(s0 + s1);
        for (; i < count; i++) sum += Square(a[i], b[i], eps);
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe double Row(double* a, double* b, long count, double eps)
    {
        var e = Vector256.Create(eps);
        Vector256<double> s0 = default, s1 = default;
        long i = 0;
        for (; i + 8 <= count; i += 8)
        {
            s0 = Square(Vector256.Load(a + i), Vector256.Load(b + i), e, s0);
            s1 = Square(Vector256.Load(a + i + 4), Vector256.Load(b + i + 4), e, s1);
        }
        double sum = Vector256.Sum(s0 + s1);
        for (; i < count; i++) sum += Square(a[i], b[i], eps);
        return sum;
    }

    /// <summary>sum + ((a − b) / (a, or ε where a = 0))², four at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<double> Square(Vector256<double> a, Vector256<double> b, Vector256<double> eps, Vector256<double> sum)
    {
        var q = (a - b) / Vector256.ConditionalSelect(Vector256.Equals(a, Vector256<double>.Zero), eps, a);
        return Vector256.FusedMultiplyAdd(q, q, sum);
    }

    /// <summary>((a − b) / (a, or ε where a = 0))².</summary>
    static double Square(double a, double b, double eps)
    {
        double q = (a - b) / (a == 0 ? eps : a);
        return q * q;
    }
}
