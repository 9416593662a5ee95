using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

/// <summary>Settings of <see cref="BarnesHutTsne"/> (defaults: scikit-learn 1.2's <c>TSNE</c>).</summary>
public sealed record TsneSettings
{
    /// <summary>Perplexity (effective number of neighbours); must be below N.</summary>
    public double Perplexity { get; init; } = 30;
    /// <summary>Early exaggeration factor on P.</summary>
    public double EarlyExaggeration { get; init; } = 12;
    /// <summary>Iterations with exaggeration (and momentum <see cref="MomentumEarly"/>).</summary>
    public int ExaggerationIterations { get; init; } = 250;
    /// <summary>Total iterations.</summary>
    public int Iterations { get; init; } = 1000;
    /// <summary>Learning rate; null = scikit-learn's 'auto', max(N / exaggeration / 4, 50).</summary>
    public double? LearningRate { get; init; }
    /// <summary>Barnes-Hut angle θ (cells with width/distance below θ are summarised).</summary>
    public double Theta { get; init; } = 0.5;
    /// <summary>Momentum during exaggeration.</summary>
    public double MomentumEarly { get; init; } = 0.5;
    /// <summary>Momentum afterwards.</summary>
    public double MomentumLate { get; init; } = 0.8;
    /// <summary>Stop when the KL divergence (checked every 50 iterations) has not improved for this many iterations.</summary>
    public int IterationsWithoutProgress { get; init; } = 300;
    /// <summary>Stop when the gradient norm falls below this.</summary>
    public double MinGradNorm { get; init; } = 1e-7;
    /// <summary>PCA initialisation (true) or N(0, 1e-4²) from <see cref="Seed"/>.</summary>
    public bool PcaInit { get; init; } = true;
    /// <summary>Seed (random initialisation only; everything else is deterministic).</summary>
    public int Seed { get; init; }
    /// <summary>Run the per-point force loops on several threads (results are identical: each point writes its own
    /// slot and sums are reduced in index order).</summary>
    public bool Parallel { get; init; } = true;
}

/// <summary>Output of <see cref="BarnesHutTsne.Fit"/>.</summary>
/// <param name="Embedding">N×2 coordinates, row-major.</param>
/// <param name="KlDivergence">KL(P‖Q) at the last iteration (un-exaggerated P, Barnes-Hut Q).</param>
/// <param name="Iterations">Iterations run.</param>
/// <param name="LearningRate">Learning rate used.</param>
/// <param name="History">(iteration, KL) at every check (every 50 iterations and the last).</param>
public sealed record TsneResult(double[] Embedding, double KlDivergence, int Iterations, double LearningRate, List<(int Iteration, double Kl)> History);

/// <summary>Barnes-Hut t-SNE (van der Maaten &amp; Hinton 2008; van der Maaten 2014), two output dimensions,
/// following scikit-learn 1.2's <c>TSNE(method='barnes_hut')</c>: exact kNN with ⌊3·perplexity + 1⌋ neighbours on
/// squared Euclidean distances, per-point binary search of the Gaussian precision to the perplexity, P symmetrised
/// and normalised, Student-t (1 degree of freedom) Q, a quadtree summarising far cells (θ = 0.5), gradient descent
/// with momentum and sklearn's gains (+0.2 / ×0.8, min 0.01), early exaggeration then a restart of momentum/gains.
/// Written here because no well-maintained .NET t-SNE library exists (the NuGet ones are unmaintained ports without
/// Barnes-Hut or without tests). Deterministic for a seed: parallel loops only write per-point slots and every sum is
/// reduced sequentially in index order.</summary>
public static partial class BarnesHutTsne
{
    const double Epsilon = 1e-6;              // sklearn quadtree: coordinates closer than this are duplicates
    const double MachineEpsilon = 2.220446049250313e-16;
    const double Float32Tiny = 1.1754943508222875e-38;

    /// <summary>Number of neighbours used for P: min(N − 1, ⌊3·perplexity + 1⌋).</summary>
    public static int NeighbourCount(int n, double perplexity) => Math.Min(n - 1, (int)(3.0 * perplexity + 1));

    /// <summary>A clear message when the perplexity is impossible for N points (sklearn requires perplexity &lt; N), else null.</summary>
    public static string? CheckPerplexity(long n, double perplexity) =>
        n < 2 ? $"t-SNE needs at least 2 inputs, got {n}"
        : perplexity >= n ? $"perplexity {perplexity} must be smaller than the number of inputs ({n}); use at most {Math.Max(1, n - 1)} (typical: 5-50, with N well above 3·perplexity)"
        : null;

    /// <summary>Embeds the rows of <paramref name="x"/> (N×D) in 2-D.</summary>
    public static TsneResult Fit(Tensor x, TsneSettings s, Action<int, double>? progress = null, CancellationToken cancellation = default)
    {
        int n = (int)x.shape[0];
        if (CheckPerplexity(n, s.Perplexity) is { } msg) throw new LoupeException(msg);
        var (rowPtr, cols, vals) = JointProbabilities(x, s.Perplexity);
        var y = s.PcaInit ? PcaInit(x) : RandomInit(n, s.Seed);
        double lr = s.LearningRate ?? Math.Max(n / s.EarlyExaggeration / 4.0, 50.0);
        var history = new List<(int, double)>();
        var grad = new double[2 * n];
        var update = new double[2 * n];
        var gains = new double[2 * n];
        var p = (double[])vals.Clone();
        for (int k = 0; k < p.Length; k++) p[k] *= s.EarlyExaggeration;
        double kl = double.NaN;
        int it = 0, exploration = Math.Min(s.ExaggerationIterations, s.Iterations);
        var ws = new Workspace(n);
        // Phase 1 (exaggerated P, momentum 0.5), then phase 2 (P, momentum 0.8); each phase restarts update and gains, as sklearn.
        for (int phase = 0; phase < 2; phase++)
        {
            int end = phase == 0 ? exploration : s.Iterations;
            double momentum = phase == 0 ? s.MomentumEarly : s.MomentumLate;
            int withoutProgress = phase == 0 ? s.ExaggerationIterations : s.IterationsWithoutProgress;
            if (phase == 1) p = vals;
            Array.Clear(update); Array.Fill(gains, 1.0);
            double bestError = double.MaxValue; int bestIter = it;
            int i = it;
            for (; i < end; i++)
            {
                cancellation.ThrowIfCancellationRequested();
                bool check = (i + 1) % 50 == 0;
                bool computeError = check || i == s.Iterations - 1;
                double error = Gradient(y, n, rowPtr, cols, p, s.Theta, computeError, grad, ws, s.Parallel);
                double norm2 = 0;
                for (int k = 0; k < 2 * n; k++)
                {
                    double g = grad[k];
                    if (update[k] * g < 0) gains[k] += 0.2; else gains[k] *= 0.8;
                    if (gains[k] < 0.01) gains[k] = 0.01;
                    g *= gains[k];
                    norm2 += g * g;
                    update[k] = momentum * update[k] - lr * g;
                    y[k] += update[k];
                }
                if (computeError) { kl = error; history.Add((i + 1, error)); }
                if (check)
                {
                    progress?.Invoke(i + 1, error);
                    if (error < bestError) { bestError = error; bestIter = i; }
                    else if (i - bestIter > withoutProgress) { i++; break; }
                    if (Math.Sqrt(norm2) <= s.MinGradNorm) { i++; break; }
                }
            }
            it = i;
            if (phase == 0 && it < exploration) break;   // converged already
        }
        // The last checked KL may be from the exaggerated phase when iterations stop early; recompute for the result.
        if (history.Count == 0 || history[^1].Item1 != it || it <= exploration)
            kl = Gradient(y, n, rowPtr, cols, vals, s.Theta, true, grad, ws, s.Parallel);
        return new TsneResult(y, kl, it, lr, history);
    }

    /// <summary>Symmetric joint probabilities P (CSR, rows sum to the total 1 over the matrix) from exact kNN and a
    /// per-point binary search of the precision β so that the conditional distribution's perplexity matches.</summary>
    public static (int[] RowPtr, int[] Cols, double[] Vals) JointProbabilities(Tensor x, double perplexity)
    {
        int n = (int)x.shape[0];
        int k = NeighbourCount(n, perplexity);
        var (nbr, d2) = SquaredKnn(x, k);
        var cond = new double[n * k];
        double desired = Math.Log(perplexity);
        System.Threading.Tasks.Parallel.For(0, n, i =>
        {
            double beta = 1, betaMin = double.NegativeInfinity, betaMax = double.PositiveInfinity;
            var row = cond.AsSpan(i * k, k);
            for (int step = 0; step < 100; step++)
            {
                double sumP = 0;
                for (int j = 0; j < k; j++) { row[j] = Math.Exp(-d2[i * k + j] * beta); sumP += row[j]; }
                if (sumP == 0) sumP = 1e-8;
                double sumDP = 0;
                for (int j = 0; j < k; j++) { row[j] /= sumP; sumDP += d2[i * k + j] * row[j]; }
                double entropy = Math.Log(sumP) + beta * sumDP;
                double diff = entropy - desired;
                if (Math.Abs(diff) <= 1e-5) break;
                if (diff > 0)
                {
                    betaMin = beta;
                    beta = double.IsPositiveInfinity(betaMax) ? beta * 2 : (beta + betaMax) / 2;
                }
                else
                {
                    betaMax = beta;
                    beta = double.IsNegativeInfinity(betaMin) ? beta / 2 : (beta + betaMin) / 2;
                }
            }
        });
        // P = (P_cond + P_condᵀ) / sum, as sorted CSR.
        var keys = new long[2 * n * k];
        var values = new double[2 * n * k];
        int m = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < k; j++)
            {
                int c = nbr[i * k + j];
                keys[m] = (long)i * n + c; values[m++] = cond[i * k + j];
                keys[m] = (long)c * n + i; values[m++] = cond[i * k + j];
            }
        Array.Sort(keys, values);
        var rowPtr = new int[n + 1];
        var cols = new List<int>(m);
        var vals = new List<double>(m);
        double total = 0;
        for (int a = 0; a < m;)
        {
            int b = a; double v = 0;
            while (b < m && keys[b] == keys[a]) v += values[b++];
            int r = (int)(keys[a] / n);
            cols.Add((int)(keys[a] % n)); vals.Add(v); rowPtr[r + 1]++; total += v;
            a = b;
        }
        for (int i = 0; i < n; i++) rowPtr[i + 1] += rowPtr[i];
        total = Math.Max(total, MachineEpsilon);
        var pv = vals.Select(v => v / total).ToArray();
        return (rowPtr, cols.ToArray(), pv);
    }

    /// <summary>Exact k nearest neighbours (self excluded) with squared Euclidean distances, in blocks of rows (float64).</summary>
    public static (int[] Index, double[] SquaredDistance) SquaredKnn(Tensor x, int k, int block = 512)
    {
        using var scope = NewDisposeScope();
        long n = x.shape[0];
        var xd = x.to(ScalarType.Float64);
        var sq = (xd * xd).sum(1);
        var index = new int[n * k];
        var dist = new double[n * k];
        for (long start = 0; start < n; start += block)
        {
            using var inner = NewDisposeScope();
            long len = Math.Min(block, n - start);
            var q = xd.narrow(0, start, len);
            var d = (sq.narrow(0, start, len).unsqueeze(1) + sq.unsqueeze(0) - 2 * q.MatMul(xd.t())).clamp_min(0);
            var self = arange(start, start + len, dtype: ScalarType.Int64).unsqueeze(1);
            d = d.scatter(1, self, full(len, 1, double.PositiveInfinity, dtype: ScalarType.Float64));
            var (vals, idx) = d.topk(k, dim: 1, largest: false, sorted: true);
            vals.contiguous().ToArray<double>().CopyTo(dist, start * k);
            var ii = idx.contiguous().ToArray<long>();
            for (int t = 0; t < ii.Length; t++) index[start * k + t] = (int)ii[t];
        }
        return (index, dist);
    }

    /// <summary>sklearn's PCA initialisation: the first two principal components, as float32, divided by the standard
    /// deviation of the first column and multiplied by 1e-4.</summary>
    public static double[] PcaInit(Tensor x)
    {
        var pca = Pca.Fit(x, 2);
        int n = pca.Coordinates.GetLength(0);
        var y = new double[2 * n];
        for (int i = 0; i < n; i++)
        {
            y[2 * i] = (float)pca.Coordinates[i, 0];
            y[2 * i + 1] = pca.Coordinates.GetLength(1) > 1 ? (float)pca.Coordinates[i, 1] : 0;
        }
        double mean = 0; for (int i = 0; i < n; i++) mean += y[2 * i];
        mean /= n;
        double var = 0; for (int i = 0; i < n; i++) var += (y[2 * i] - mean) * (y[2 * i] - mean);
        double std = Math.Sqrt(var / n);
        if (std <= 0) throw new LoupeException("PCA initialisation failed: the features have no variance");
        for (int i = 0; i < 2 * n; i++) y[i] = y[i] / std * 1e-4;
        return y;
    }

    static double[] RandomInit(int n, int seed)
    {
        var rng = new Random(seed);
        var y = new double[2 * n];
        for (int i = 0; i < y.Length; i++)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            y[i] = 1e-4 * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
        }
        return y;
    }

    sealed class Workspace(int n)
    {
        public readonly double[] Neg = new double[2 * n];
        public readonly double[] SumQ = new double[n];
        public readonly double[] Pos = new double[2 * n];
        public readonly double[] Err = new double[n];
        public readonly QuadTree Tree = new(n);
    }

    /// <summary>KL gradient (×4, sklearn's c = 2(ν+1)/ν with ν = 1) into <paramref name="grad"/>; returns KL(P‖Q) when
    /// <paramref name="computeError"/>.</summary>
    static double Gradient(double[] y, int n, int[] rowPtr, int[] cols, double[] p, double theta, bool computeError, double[] grad, Workspace ws, bool parallel)
    {
        ws.Tree.Build(y, n);
        double theta2 = theta * theta;
        var tree = ws.Tree;
        For(n, parallel, i =>
        {
            var (sq, fx, fy) = tree.Summarize(y[2 * i], y[2 * i + 1], theta2);
            ws.SumQ[i] = sq; ws.Neg[2 * i] = fx; ws.Neg[2 * i + 1] = fy;
        });
        double sumQ = 0;
        for (int i = 0; i < n; i++) sumQ += ws.SumQ[i];
        For(n, parallel, i =>
        {
            double yix = y[2 * i], yiy = y[2 * i + 1], px = 0, py = 0, c = 0;
            for (int t = rowPtr[i]; t < rowPtr[i + 1]; t++)
            {
                int j = cols[t];
                double dx = yix - y[2 * j], dy = yiy - y[2 * j + 1];
                double q = 1.0 / (1.0 + dx * dx + dy * dy);
                double pij = p[t], f = pij * q;
                if (computeError)
                {
                    double qn = q / sumQ;
                    c += pij * Math.Log(Math.Max(pij, Float32Tiny) / Math.Max(qn, Float32Tiny));
                }
                px += f * dx; py += f * dy;
            }
            ws.Pos[2 * i] = px; ws.Pos[2 * i + 1] = py; ws.Err[i] = c;
        });
        double error = 0;
        for (int i = 0; i < n; i++)
        {
            error += ws.Err[i];
            grad[2 * i] = 4.0 * (ws.Pos[2 * i] - ws.Neg[2 * i] / sumQ);
            grad[2 * i + 1] = 4.0 * (ws.Pos[2 * i + 1] - ws.Neg[2 * i + 1] / sumQ);
        }
        return computeError ? error : double.NaN;
    }

    static void For(int n, bool parallel, Action<int> body)
    {
        if (!parallel || n < 256) { for (int i = 0; i < n; i++) body(i); return; }
        int chunks = Math.Min(Environment.ProcessorCount * 4, 64);
        int size = (n + chunks - 1) / chunks;
        System.Threading.Tasks.Parallel.For(0, chunks, c =>
        {
            int end = Math.Min(n, (c + 1) * size);
            for (int i = c * size; i < end; i++) body(i);
        });
    }
}
