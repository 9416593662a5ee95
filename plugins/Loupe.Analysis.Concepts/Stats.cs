using TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Concepts;

/// <summary>The numerical pieces of the concept techniques: an L2-regularised logistic regression solved exactly,
/// Student's two-sided t-test and an RBF kernel.</summary>
public static class Stats
{
    /// <summary>L2-regularised logistic regression, labels 1 for the rows of <paramref name="positive"/> and 0 for those
    /// of <paramref name="negative"/> (both n×d). A constant-1 feature is appended and penalised like the weights, so
    /// the minimiser of Σ log(1 + e^{−s·z}) + ‖w‖² / (2C) is unique; it is found by Newton's method in the span of the
    /// rows (w = Zᵀa, exact since the optimum lies there), with the d-dimensional Hessian solved through its n×n
    /// Woodbury form and a backtracking line search. Returns the weights (d, without the intercept), the intercept and
    /// the training accuracy. Deterministic: no random initialisation.</summary>
    public static (double[] Weights, double Intercept, double Accuracy) Logistic(Tensor positive, Tensor negative, double c = 1.0, int maxIterations = 100)
    {
        using var scope = NewDisposeScope();
        long n1 = positive.shape[0], n0 = negative.shape[0];
        var x = cat([positive.flatten(1), negative.flatten(1)]).to(ScalarType.Float64);
        var z = cat([x, ones(x.shape[0], 1, dtype: ScalarType.Float64)], 1);
        var y = cat([ones(n1, dtype: ScalarType.Float64), zeros(n0, dtype: ScalarType.Float64)]);
        double lambda = 1.0 / c;
        var k = z.MatMul(z.t());
        long n = k.shape[0];
        var a = zeros(n, dtype: ScalarType.Float64);
        var eye = TorchSharp.torch.eye(n, dtype: ScalarType.Float64);
        double Objective(Tensor coef)
        {
            var m = k.MatMul(coef);
            return (nn.functional.softplus(m) - y * m).sum().item<double>() + 0.5 * lambda * coef.dot(m).item<double>();
        }
        double f = Objective(a);
        for (int it = 0; it < maxIterations; it++)
        {
            using var inner = NewDisposeScope();
            var m = k.MatMul(a);
            var p = sigmoid(m);
            var r = p - y + lambda * a;                          // gradient = Zᵀ r
            double gradNorm = Math.Sqrt(Math.Max(0, r.dot(k.MatMul(r)).item<double>()));
            if (gradNorm < 1e-10 * Math.Max(1, n)) break;
            var s = (p * (1 - p)).sqrt();
            var mat = lambda * eye + s.unsqueeze(1) * k * s.unsqueeze(0);
            var step = (r - s * linalg.solve(mat, s * k.MatMul(r))) / lambda;   // H⁻¹ g in row coefficients
            double t = 1;
            Tensor next = a;
            double fNext = f;
            for (int ls = 0; ls < 40; ls++, t *= 0.5)
            {
                next = a - t * step;
                fNext = Objective(next);
                if (fNext <= f - 1e-4 * t * gradNorm * gradNorm || fNext <= f) break;
            }
            bool done = f - fNext < 1e-15 * Math.Max(1, Math.Abs(f));
            a.Dispose();
            a = next.MoveToOuterDisposeScope();
            f = fNext;
            if (done) break;
        }
        var w = z.t().MatMul(a).contiguous().ToArray<double>();
        var margin = k.MatMul(a);
        double acc = ((margin > 0).to(ScalarType.Float64).eq(y)).to(ScalarType.Float64).mean().item<double>();
        return (w[..^1], w[^1], acc);
    }

    /// <summary>Student's two-sided t-test of equal means (pooled variance, as scipy's <c>ttest_ind</c>): (t, p).
    /// Two samples without any spread give p = 1 when their means are equal and 0 otherwise.</summary>
    public static (double T, double P) TTest(IReadOnlyList<double> a, IReadOnlyList<double> b)
    {
        int na = a.Count, nb = b.Count;
        if (na < 2 || nb < 2) throw new ArgumentException("the t-test needs at least two values per sample");
        double ma = a.Average(), mb = b.Average();
        double ss = a.Sum(v => (v - ma) * (v - ma)) + b.Sum(v => (v - mb) * (v - mb));
        int df = na + nb - 2;
        double se = Math.Sqrt(ss / df * (1.0 / na + 1.0 / nb));
        if (se == 0 || se < 1e-14 * Math.Max(Math.Abs(ma), Math.Abs(mb))) return ma == mb ? (0, 1) : (ma > mb ? double.PositiveInfinity : double.NegativeInfinity, 0);
        double t = (ma - mb) / se;
        return (t, IncompleteBeta(df / 2.0, 0.5, df / (df + t * t)));
    }

    /// <summary>The regularised incomplete beta function I_x(a, b) (Lentz's continued fraction).</summary>
    public static double IncompleteBeta(double a, double b, double x)
    {
        if (x <= 0) return 0;
        if (x >= 1) return 1;
        double front = Math.Exp(LogGamma(a + b) - LogGamma(a) - LogGamma(b) + a * Math.Log(x) + b * Math.Log(1 - x));
        if (x > (a + 1) / (a + b + 2)) return 1 - front * Fraction(b, a, 1 - x) / b;
        return front * Fraction(a, b, x) / a;
    }

    static double Fraction(double a, double b, double x)
    {
        const double tiny = 1e-300;
        double c = 1, d = 1 - (a + b) * x / (a + 1);
        d = Math.Abs(d) < tiny ? tiny : d;
        d = 1 / d;
        double h = d;
        for (int m = 1; m <= 500; m++)
        {
            double num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
            d = 1 + num * d; d = Math.Abs(d) < tiny ? tiny : d; c = 1 + num / c; c = Math.Abs(c) < tiny ? tiny : c; d = 1 / d; h *= d * c;
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1));
            d = 1 + num * d; d = Math.Abs(d) < tiny ? tiny : d; c = 1 + num / c; c = Math.Abs(c) < tiny ? tiny : c; d = 1 / d;
            double delta = d * c;
            h *= delta;
            if (Math.Abs(delta - 1) < 1e-15) break;
        }
        return h;
    }

    /// <summary>ln Γ(x) for x &gt; 0 (Lanczos, g = 7, 9 terms).</summary>
    public static double LogGamma(double x)
    {
        double[] g = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
            12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
        if (x < 0.5) return Math.Log(Math.PI / Math.Abs(Math.Sin(Math.PI * x))) - LogGamma(1 - x);
        x -= 1;
        double s = g[0];
        for (int i = 1; i < 9; i++) s += g[i] / (x + i);
        double t = x + 7.5;
        return 0.5 * Math.Log(2 * Math.PI) + (x + 0.5) * Math.Log(t) - t + Math.Log(s);
    }

    /// <summary>RBF kernel exp(−γ‖a − b‖²) between the rows of <paramref name="a"/> (n×d) and <paramref name="b"/> (m×d), float64.</summary>
    public static Tensor Rbf(Tensor a, Tensor b, double gamma)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter((-gamma * SquaredDistances(a, b)).exp());
    }

    /// <summary>‖a_i − b_j‖² between the rows of <paramref name="a"/> and <paramref name="b"/>, float64.</summary>
    public static Tensor SquaredDistances(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var a64 = a.to(ScalarType.Float64);
        var b64 = b.to(ScalarType.Float64);
        return scope.MoveToOuter(((a64 * a64).sum(1, keepdim: true) + (b64 * b64).sum(1).unsqueeze(0) - 2 * a64.MatMul(b64.t())).clamp_min(0));
    }
}
