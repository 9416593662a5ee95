using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Analysis.Concepts;

/// <summary>Non-negative matrix factorisation A ≈ U·W (A: n×d ≥ 0, U: n×r, W: r×d) minimising ½‖A − UW‖²_F with Lee
/// and Seung's multiplicative updates (the objective and solver of sklearn's <c>NMF(solver='mu', beta_loss='frobenius')</c>),
/// float64, from a seeded random start scaled as sklearn's <c>init='random'</c>: √(mean(A)/r)·|uniform|.</summary>
public static class Nmf
{
    const double Eps = 1e-12;

    /// <summary>Factorises <paramref name="a"/> (n×d, non-negative); returns U (n×r) and W (r×d), float64.</summary>
    public static (Tensor U, Tensor W) Fit(Tensor a, int rank, int iterations, int seed)
    {
        using var scope = NewDisposeScope();
        var x = a.to(ScalarType.Float64);
        if (x.min().item<double>() < 0) throw new Abstractions.LoupeException("NMF needs non-negative activations (use a layer after a ReLU)");
        double scale = Math.Sqrt(Math.Max(x.mean().item<double>(), Eps) / rank);
        using var gen = new Generator((ulong)seed);
        var u = rand([x.shape[0], rank], dtype: ScalarType.Float64, generator: gen) * scale;
        var w = rand([rank, x.shape[1]], dtype: ScalarType.Float64, generator: gen) * scale;
        for (int it = 0; it < iterations; it++)
        {
            using var inner = NewDisposeScope();
            var wNew = w * u.t().MatMul(x) / (u.t().MatMul(u).MatMul(w)).clamp_min(Eps);
            var uNew = u * x.MatMul(wNew.t()) / u.MatMul(wNew.MatMul(wNew.t())).clamp_min(Eps);
            w = wNew.MoveToOuterDisposeScope();
            u = uNew.MoveToOuterDisposeScope();
        }
        return (scope.MoveToOuter(u), scope.MoveToOuter(w));
    }

    /// <summary>The coefficients U ≥ 0 of new rows <paramref name="a"/> for fixed concepts <paramref name="w"/>
    /// (multiplicative updates of U only, from a constant start).</summary>
    public static Tensor Transform(Tensor a, Tensor w, int iterations)
    {
        using var scope = NewDisposeScope();
        var x = a.to(ScalarType.Float64).clamp_min(0);
        var wwt = w.MatMul(w.t());
        var xwt = x.MatMul(w.t());
        double scale = Math.Sqrt(Math.Max(x.mean().item<double>(), Eps) / w.shape[0]);
        var u = full([x.shape[0], w.shape[0]], scale, dtype: ScalarType.Float64);
        for (int it = 0; it < iterations; it++)
        {
            using var inner = NewDisposeScope();
            // In place: one temporary per iteration (the denominator, from U before the update), not four.
            var den = u.MatMul(wwt).clamp_min_(Eps);
            u.mul_(xwt).div_(den);
        }
        return scope.MoveToOuter(u);
    }

    /// <summary>‖A − UW‖_F.</summary>
    public static double Error(Tensor a, Tensor u, Tensor w)
    {
        using var scope = NewDisposeScope();
        return (a.to(ScalarType.Float64) - u.MatMul(w)).norm().item<double>();
    }
}
