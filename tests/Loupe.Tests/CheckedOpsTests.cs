using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary><see cref="CheckedOps.MatMul"/>: TorchSharp 0.107's matmul ends the process on operands libtorch refuses
/// (its binding has no error handling); the checked one throws instead, and agrees with libtorch on every operand pair.</summary>
public class CheckedOpsTests
{
    [Fact]
    public void MismatchedOperandsThrowInsteadOfEndingTheProcess()
    {
        var e = Assert.Throws<LoupeException>(() => ones(4, 3).MatMul(ones(7, 7)));
        Assert.Equal("cannot multiply matrices of shapes (4×3) and (7×7)", e.Message);
        e = Assert.Throws<LoupeException>(() => ones(2, 4, 3).MatMul(ones(5, 3, 2)));
        Assert.Equal("batch dimensions do not broadcast: (2×4×3) and (5×3×2)", e.Message);
        Assert.Throws<LoupeException>(() => ones(3).MatMul(tensor(1f)));
    }

    /// <summary>Every pair of shapes of rank 1–4 with sizes 1–3: refused exactly when libtorch's rule refuses it —
    /// contracted sizes equal and batch sizes broadcastable, computed here by an element-wise product and sum (whose
    /// broadcasting errors TorchSharp does turn into exceptions) — and equal to that product where allowed.</summary>
    [Fact]
    public void TheCheckIsLibtorchsRule()
    {
        var shapes = new List<long[]>();
        for (int rank = 1; rank <= 4; rank++)
            foreach (var s in Sizes(rank)) shapes.Add(s);
        int allowed = 0;
        foreach (var sa in shapes)
            foreach (var sb in shapes)
            {
                if (sa.Length + sb.Length > 6) continue;
                using var scope = NewDisposeScope();
                var a = arange(sa.Aggregate(1L, (p, v) => p * v), dtype: ScalarType.Float64).view(sa) + 1;
                var b = arange(sb.Aggregate(1L, (p, v) => p * v), dtype: ScalarType.Float64).view(sb) - 2;
                var expected = Reference(a, b);
                var error = CheckedOps.MatMulError(sa, sb);
                Assert.True((error is null) == (expected is not null), $"({string.Join(",", sa)}) @ ({string.Join(",", sb)}): {error ?? "allowed"}");
                if (expected is null) continue;
                allowed++;
                var got = a.MatMul(b);
                Assert.Equal(expected.shape, got.shape);
                Assert.True(got.allclose(expected), $"({string.Join(",", sa)}) @ ({string.Join(",", sb)})");
            }
        Assert.True(allowed > 500, $"{allowed} allowed pairs");
    }

    static IEnumerable<long[]> Sizes(int rank) =>
        rank == 0 ? [[]] : Sizes(rank - 1).SelectMany(s => new long[] { 1, 2, 3 }.Select(v => (long[])[.. s, v]));

    /// <summary>matmul from its documented rules: a 1-D left operand gains a leading 1, a 1-D right one a trailing 1
    /// (both removed after); then Σ_k a[…, m, k]·b[…, k, n] with the batch dimensions broadcast. Null where refused.</summary>
    static Tensor? Reference(Tensor a, Tensor b)
    {
        bool va = a.dim() == 1, vb = b.dim() == 1;
        var a2 = va ? a.unsqueeze(0) : a;
        var b2 = vb ? b.unsqueeze(1) : b;
        if (a2.shape[^1] != b2.shape[^2]) return null;
        Tensor r;
        try { r = (a2.unsqueeze(-1) * b2.unsqueeze(-3)).sum(-2); }
        catch (System.Runtime.InteropServices.ExternalException) { return null; }
        if (va) r = r.squeeze(-2);
        if (vb) r = r.squeeze(-1);
        return r;
    }
}
