using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

/// <summary>Tensor operations whose TorchSharp 0.107 binding lets a libtorch error escape as a C++ exception, which
/// terminates the process (`terminate called after throwing an instance of 'c10::Error'`) instead of throwing: here
/// their preconditions are checked first, so that a mismatch fails the step with a managed exception. The bindings
/// are banned in this repository (BannedSymbols.txt); use these instead.</summary>
public static class CheckedOps
{
    /// <summary><c>torch.matmul</c> (THSTensor_matmul is the one tensor binding without libtorch's error handling):
    /// the operands' shapes are checked against matmul's rules first (contracted sizes equal, batch sizes
    /// broadcastable); a mismatch throws <see cref="LoupeException"/> naming both shapes.</summary>
    public static Tensor MatMul(this Tensor a, Tensor b)
    {
        if (MatMulError(a.shape, b.shape) is { } error) throw new LoupeException(error);
#pragma warning disable RS0030 // the checked call itself
        return a.matmul(b);
#pragma warning restore RS0030
    }

    /// <summary>Why libtorch's matmul would refuse operands of these shapes, or null.</summary>
    public static string? MatMulError(long[] a, long[] b)
    {
        string Shapes() => $"({string.Join("×", a)}) and ({string.Join("×", b)})";
        if (a.Length == 0 || b.Length == 0) return $"cannot multiply scalars: {Shapes()}";
        long ka = a[^1], kb = b.Length == 1 ? b[0] : b[^2];
        if (ka != kb) return $"cannot multiply matrices of shapes {Shapes()}";
        var ba = a.Length > 2 ? a[..^2] : [];
        var bb = b.Length > 2 ? b[..^2] : [];
        for (int i = 1; i <= Math.Min(ba.Length, bb.Length); i++)
            if (ba[^i] != bb[^i] && ba[^i] != 1 && bb[^i] != 1) return $"batch dimensions do not broadcast: {Shapes()}";
        return null;
    }
}
