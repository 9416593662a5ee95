using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>ROAD's linear imputation (Rong et al. 2022): every unknown pixel equals the weighted mean of its in-image
/// 8-neighbours (weights 1/6 for the 4 direct ones, 1/12 for the diagonals), known neighbours fixed; per channel. The
/// system is symmetric positive definite when each unknown region touches a known pixel; all images × channels are
/// solved at once, in float64, by conjugate gradients with one step size per system (relative residual 1e-10; an
/// image whose pixels are all unknown stays at 0).
/// <para>Cost: on images this small every tensor call costs more than its arithmetic, so an iteration is kept to
/// about twenty elementwise calls: the stencil is separable, [1 2 1]ᵀ[1 2 1] / 12 minus the centre's 4/12, and runs
/// as two [1 2 1] passes over shifted views of one zero-padded copy (no float64 convolution, whose im2col costs as much
/// as ten such calls); the masked operator u (Σw − K) u is one product and one fused multiply-add (the search
/// directions are zero at known pixels already); the updates are in place; the residual is read every
/// <see cref="CheckEvery"/> iterations (one synchronising read instead of one per iteration).</para>
/// <para>Direct path: even so, CG needs 80–100 iterations of ~18 tiny calls on 28×28 images, so each image whose
/// system is small enough is solved exactly by a banded Cholesky factorisation instead (<see cref="BandedImputation"/>;
/// same numbers to rounding). Rule (<see cref="PrefersDirect"/>): direct when n·b² ≤ 32·H·W·(H+W), n the unknowns and
/// b the half-bandwidth of the raster-ordered system: the factorisation's n·b²/2 multiply-adds against CG's ~(H+W)
/// iterations (the order of its count on a hole spanning the image) of ~16 flops per pixel, which run as tensor calls
/// with their overhead on top. 28×28 images always go direct (n·b² ≤ 784·29² ≈ 15·H·W·(H+W)); 224×224 images go direct
/// up to about two thirds of their pixels unknown in compact regions and by CG above (a full mask: n·b² ≈ 112·H·W·(H+W)). Images of one batch
/// may take different paths.</para></summary>
public static class LinearImputation
{
    /// <summary>Iterations between two convergence checks.</summary>
    public const int CheckEvery = 4;

    /// <summary>Relative residual at which every system is solved.</summary>
    public const double Tolerance = 1e-10;

    /// <summary>x (N×C×H×W) with the pixels where <paramref name="unknown"/> (N×1×H×W bool) imputed; float64.
    /// <paramref name="solver"/> forces one path (tests); by default each image takes the cheaper one.</summary>
    public static Tensor Solve(Tensor x, Tensor unknown, ImputationSolver solver = ImputationSolver.Auto)
    {
        if (solver == ImputationSolver.ConjugateGradient) return ConjugateGradient(x, unknown);
        using var scope = NewDisposeScope();
        int n = (int)x.shape[0], c = (int)x.shape[1], h = (int)x.shape[2], w = (int)x.shape[3], hw = h * w;
        // Raw storage reads (the element accessor costs as much as the 28×28 solves themselves).
        var mask = MemoryMarshal.Cast<byte, bool>(unknown.to(ScalarType.Bool).reshape(n, hw).cpu().contiguous().bytes).ToArray();
        var direct = Enumerable.Range(0, n)
            .Where(i => solver == ImputationSolver.Direct || PrefersDirect(mask.AsSpan(i * hw, hw), h, w)).ToArray();
        if (direct.Length == 0) return scope.MoveToOuter(ConjugateGradient(x, unknown));
        var data = MemoryMarshal.Cast<byte, double>(x.to(ScalarType.Float64).cpu().contiguous().bytes).ToArray();
        // One image per task: the systems are independent (same numbers in any order). On the idle 2-core machine the 40
        // solves of the ROAD bench took 5.7–7.6 ms in parallel against 8.6–9.5 ms in sequence (--profile-road 15 1 and 15 2).
        Parallel.ForEach(direct, i => BandedImputation.Solve(data.AsSpan(i * c * hw, c * hw), mask.AsSpan(i * hw, hw), c, h, w));
        var result = tensor(data, [n, c, h, w]).to(x.device);
        if (direct.Length < n)
        {
            var rest = tensor(Enumerable.Range(0, n).Except(direct).Select(i => (long)i).ToArray(), device: x.device);
            result.index_copy_(0, rest, ConjugateGradient(x.index_select(0, rest), unknown.index_select(0, rest)));
        }
        return scope.MoveToOuter(result);
    }

    /// <summary>The rule between the two paths for one H×W mask (true = unknown): the banded factorisation when
    /// n·b² ≤ 32·H·W·(H+W) (see the class comment).</summary>
    public static bool PrefersDirect(ReadOnlySpan<bool> unknown, int h, int w)
    {
        var (count, band) = SystemShape(unknown, h, w);
        return (double)count * band * band <= 32.0 * h * w * (h + w);
    }

    /// <summary>The number of unknowns n and the half-bandwidth b (largest raster-index gap between two neighbouring
    /// unknowns) of one H×W mask's system.</summary>
    public static (int Unknowns, int Band) SystemShape(ReadOnlySpan<bool> unknown, int h, int w) => BandedImputation.Shape(unknown, h, w);

    /// <summary>The conjugate-gradient path for all images at once.</summary>
    static Tensor ConjugateGradient(Tensor x, Tensor unknown)
    {
        using var scope = NewDisposeScope();
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var u = unknown.to(ScalarType.Float64).expand(n, c, h, w).reshape(n * c, 1, h, w);
        var known = x.to(ScalarType.Float64).reshape(n * c, 1, h, w) * (1 - u);
        // u (Σw − K) p = u (Σw + 1/3) p − u ([1 2 1]ᵀ[1 2 1] p) / 12 for p zero at known pixels.
        var diagonal = u * (Neighbours(ones(1, 1, h, w, dtype: ScalarType.Float64)) + 1.0 / 3);
        var u12 = u / 12;
        Tensor A(Tensor p) => (diagonal * p).addcmul_(u12, Binomial(p), -1);
        Tensor Dot(Tensor a, Tensor b) => (a * b).sum([1, 2, 3], keepdim: true);

        var r = u * Neighbours(known);
        var sol = zeros_like(r);
        var p = r.clone();
        var rr = Dot(r, r);
        var limit = rr.sqrt() * Tolerance;
        int maxIterations = (int)Math.Max(200, 20 * (h + w));
        for (int it = 0; it < maxIterations; it++)
        {
            if (it % CheckEvery == 0 && (rr.sqrt() <= limit).all().item<bool>()) break;
            using var step = NewDisposeScope();   // one iteration's temporaries; p and rr are replaced, sol and r updated in place
            var ap = A(p);
            var alpha = rr / Dot(p, ap).clamp_min_(1e-300);
            sol.addcmul_(alpha, p, 1);
            r.addcmul_(alpha, ap, -1);
            var rr2 = Dot(r, r);
            var p2 = r.addcmul(p, rr2 / rr.clamp_min(1e-300), 1);
            step.MoveToOuter(p2, rr2);
            p.Dispose();
            rr.Dispose();
            (p, rr) = (p2, rr2);
        }
        return scope.MoveToOuter((known + sol).view(n, c, h, w));
    }

    /// <summary>[1 2 1]ᵀ[1 2 1] applied to every B×1×H×W image, zero outside: a row pass and a column pass over
    /// shifted views of one zero-padded copy.</summary>
    static Tensor Binomial(Tensor v)
    {
        long h = v.shape[2], w = v.shape[3];
        var padded = nn.functional.pad(v, [1, 1, 1, 1]);
        var rows = (padded.narrow(3, 0, w) + padded.narrow(3, 2, w)).add_(padded.narrow(3, 1, w), 2);   // (H+2)×W
        return (rows.narrow(2, 0, h) + rows.narrow(2, 2, h)).add_(rows.narrow(2, 1, h), 2);
    }

    /// <summary>The weighted sum K v of each pixel's in-image 8-neighbours (1/6 direct, 1/12 diagonal).</summary>
    static Tensor Neighbours(Tensor v) => Binomial(v) / 12 - v / 3;
}

/// <summary>Which solver <see cref="LinearImputation.Solve"/> uses.</summary>
public enum ImputationSolver
{
    /// <summary>Per image, the cheaper one by <see cref="LinearImputation.PrefersDirect"/>.</summary>
    Auto,
    /// <summary>The banded Cholesky factorisation for every image.</summary>
    Direct,
    /// <summary>Conjugate gradients for all images at once.</summary>
    ConjugateGradient,
}
