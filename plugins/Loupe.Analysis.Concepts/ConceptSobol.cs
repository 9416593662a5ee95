using Loupe.Abstractions;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Concepts;

/// <summary>Concept importance by total Sobol indices (CRAFT, Fel et al. 2023, §3.3, with the spatial re-parameterisation
/// Xplique's CRAFT uses for 4-D activations): the r concept coefficients of one input, U ∈ ℝ^{hw×r}, are modulated by
/// masks M ∈ [0,1]^r (one factor per concept, shared by all positions); the layer's activation is replaced by
/// (U ⊙ M)·W and the class logit y(M) read. The masks are a Saltelli design over a quasi-Monte-Carlo sequence
/// (unscrambled Halton in 2r dimensions, as scipy's <c>qmc.Halton(2r, scramble=False)</c>, CRAFT's default sampler):
/// A = the first r columns, B = the last r, and for each concept i the matrix C_i = A with column i taken from B,
/// stacked [A; B; C_1; …; C_r] (nd·(2+r) rows). Jansen's estimator gives the total index
/// S_Ti = Σ_n (y(A_n) − y(C_i,n))² / (2·nd·Var(y(A))), Var with ddof = 1.</summary>
public static class ConceptSobol
{
    /// <summary>The first <paramref name="n"/> points (from index 0) of the unscrambled Halton sequence in
    /// <paramref name="dim"/> dimensions: coordinate j of point i is the radical inverse of i in the j-th prime base.</summary>
    public static double[,] Halton(int dim, int n)
    {
        var primes = new List<int>();
        for (int c = 2; primes.Count < dim; c++)
            if (primes.All(p => c % p != 0)) primes.Add(c);
        var x = new double[n, dim];
        for (int j = 0; j < dim; j++)
            for (int i = 0; i < n; i++)
            {
                double f = 1, v = 0;
                for (int k = i; k > 0; k /= primes[j]) { f /= primes[j]; v += f * (k % primes[j]); }
                x[i, j] = v;
            }
        return x;
    }

    /// <summary>The replicated design [A; B; C_1; …; C_r] ((2+r)·nd × r) from a Halton sequence in 2r dimensions.</summary>
    public static double[,] Design(int r, int nd)
    {
        var h = Halton(2 * r, nd);
        var m = new double[(2 + r) * nd, r];
        for (int n = 0; n < nd; n++)
            for (int j = 0; j < r; j++)
            {
                m[n, j] = h[n, j];
                m[nd + n, j] = h[n, r + j];
                for (int i = 0; i < r; i++) m[(2 + i) * nd + n, j] = i == j ? h[n, r + j] : h[n, j];
            }
        return m;
    }

    /// <summary>Jansen's total indices from the outputs of a <see cref="Design"/>, in its row order.</summary>
    public static double[] Jansen(double[] y, int nd, int r)
    {
        if (y.Length != (2 + r) * nd) throw new ArgumentException($"{y.Length} outputs for a design of {(2 + r) * nd} rows");
        double mean = 0;
        for (int n = 0; n < nd; n++) mean += y[n] / nd;
        double var = 0;
        for (int n = 0; n < nd; n++) var += (y[n] - mean) * (y[n] - mean) / Math.Max(1, nd - 1);
        var st = new double[r];
        for (int i = 0; i < r; i++)
        {
            double s = 0;
            for (int n = 0; n < nd; n++) { double d = y[n] - y[(2 + i) * nd + n]; s += d * d; }
            st[i] = s / (2.0 * nd * Math.Max(var, 1e-12));
        }
        return st;
    }

    /// <summary>Total Sobol indices of the r concepts for class <paramref name="cls"/> on one input
    /// (<paramref name="input"/>: 1×C×H×W, normalised). <paramref name="coef"/>: the input's coefficients (h·w × r, positions
    /// row-major); <paramref name="w"/>: the concepts (r × K). The layer's output is replaced through
    /// <see cref="IModelInterventions"/>; the design's rows are run in chunks of <paramref name="batch"/>.</summary>
    public static double[] Importance(IModel model, string layer, Tensor input, Tensor coef, Tensor w, long h, long wd, long cls,
        double[,] design, int batch)
    {
        var interventions = model as IModelInterventions
            ?? throw new LoupeException($"concept-discovery: importance 'sobol' replaces the layer's activation; the {model.GetType().Name} backend cannot (use importance: gradient)");
        int rows = design.GetLength(0), r = design.GetLength(1), nd = rows / (2 + r);
        using var scope = NewDisposeScope();
        var masks = tensor(design.Cast<double>().ToArray(), [rows, r], dtype: ScalarType.Float64, device: coef.device);
        var u = coef.to(ScalarType.Float64);
        var w64 = w.to(ScalarType.Float64).to(coef.device);
        var y = new double[rows];
        for (int s = 0; s < rows; s += batch)
        {
            using var inner = NewDisposeScope();
            int len = Math.Min(batch, rows - s);
            // (len × hw × r) ⊙ masks, then · W: len × hw × K → len × K × h × w.
            var a = (u.unsqueeze(0) * masks.narrow(0, s, len).unsqueeze(1)).MatMul(w64)
                .reshape(len, h, wd, -1).permute(0, 3, 1, 2).contiguous();
            using (no_grad())
            using (interventions.Intervene(layer, t => a.to(t.dtype, t.device)))
            {
                var output = model.Forward(input.expand(len, -1, -1, -1));
                var v = output[.., cls].to(ScalarType.Float64).cpu().ToArray<double>();
                Array.Copy(v, 0, y, s, len);
            }
        }
        return Jansen(y, nd, r);
    }
}
