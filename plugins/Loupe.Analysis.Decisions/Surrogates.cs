using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Surrogate model fitted to the coalition scores (Captum's interpretable model).</summary>
public enum SurrogateFit
{
    /// <summary>sklearn <c>Lasso(alpha)</c> with sample weights and an intercept (Captum Lime's default, α = 0.01).</summary>
    Lasso,
    /// <summary>Weighted least squares with an intercept, minimum-norm when underdetermined (sklearn <c>LinearRegression</c>).</summary>
    Linear,
    /// <summary>sklearn <c>Ridge(alpha)</c> with sample weights and an intercept (Captum's <c>SkLearnRidge</c>).</summary>
    Ridge,
}

/// <summary>Distance of LIME's similarity kernel (Captum <c>get_exp_kernel_similarity_function</c>).</summary>
public enum LimeDistance
{
    /// <summary>1 − cosine similarity of the flattened original and perturbed inputs.</summary>
    Cosine,
    /// <summary>Euclidean distance of the flattened inputs.</summary>
    Euclidean,
}

/// <summary>Options of <c>kernel-shap</c>.</summary>
public sealed record KernelShapOptions : FeatureOptions
{
    /// <summary>Coalitions per input.</summary>
    [Range(3, 1_000_000), Description("coalitions per input (Captum's n_samples, default 25); the first two are all features and none")]
    public int Samples { get; init; } = 25;
    /// <summary>Coalitions from a file.</summary>
    [FilePath, Description("a .npy S×M of 0/1 coalitions (1 = feature kept), used for every input instead of the seeded draws")]
    public string? CoalitionsFile { get; init; }
}

/// <summary>Options of <c>lime</c>.</summary>
public sealed record LimeOptions : FeatureOptions
{
    /// <summary>Perturbations per input.</summary>
    [Range(2, 1_000_000), Description("perturbed samples per input (Captum Lime.attribute's n_samples, default 25; its docstring and LimeBase say 50)")]
    public int Samples { get; init; } = 25;
    /// <summary>Coalitions from a file.</summary>
    [FilePath, Description("a .npy S×M of 0/1 samples (1 = feature kept), used for every input instead of the seeded draws")]
    public string? CoalitionsFile { get; init; }
    /// <summary>Surrogate.</summary>
    [Description("interpretable model: lasso (Captum's default, sklearn Lasso with sample weights), linear (weighted least squares, Captum's SkLearnLinearRegression) or ridge (sklearn Ridge with sample weights, Captum's SkLearnRidge)")]
    public SurrogateFit Model { get; init; } = SurrogateFit.Lasso;
    /// <summary>Regularisation α (null: the model's default).</summary>
    [Range(0.0, 1e6), Description("lasso: L1 weight α of (1/2)·Σ pᵢ rᵢ² + α‖w‖₁, pᵢ = weights normalised to sum 1 (sklearn's objective; default 0.01, Captum's); ridge: L2 weight α of Σ wᵢ rᵢ² + α‖w‖², the kernel weights as they are (sklearn Ridge's objective; default 1.0, sklearn's)")]
    public double? Alpha { get; init; }
    /// <summary>Distance.</summary>
    [Description("similarity kernel distance between the input and a perturbed copy (normalised space): cosine (Captum's default) or euclidean")]
    public LimeDistance Distance { get; init; } = LimeDistance.Cosine;
    /// <summary>Kernel width.</summary>
    [Range(1e-9, 1e9), Description("width w of the similarity kernel exp(−d²/(2w²)) (Captum's default 1.0)")]
    public double KernelWidth { get; init; } = 1.0;
}

/// <summary>Shared loop of the surrogate methods: per image, features, coalitions, their scores in batched forwards,
/// per-coalition weights and a weighted linear fit; the coefficients are the features' attributions.</summary>
public abstract class SurrogateAnalysis<TOptions> : AttributionAnalysis<TOptions>, ITakesBaseline where TOptions : FeatureOptions, new()
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(TOptions options, AnalysisValidationContext context) => Features.SegmentErrors(options, ArtifactName);

    /// <summary>Seeded coalitions (S×M, 0/1) of one input.</summary>
    protected abstract Tensor Draw(TOptions options, Generator g, long m);
    /// <summary>Coalitions file, or null.</summary>
    protected abstract string? CoalitionsFile(TOptions options);
    /// <summary>Sample weights of the coalitions (S, double).</summary>
    protected abstract Tensor Weights(TOptions options, Tensor x, Tensor fill, Tensor labels, Tensor z);
    /// <summary>Fitted coefficients (M, double).</summary>
    protected abstract Tensor Fit(TOptions options, Tensor z, Tensor y, Tensor weights);

    /// <inheritdoc/>
    public override AttributionResult Attribute(TOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0], c = x.shape[1];
        var (_, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        var fill = Perturbation.BaselineOrFile(input, options.BaselineFile, options.BaselineFolder, options.Baseline, options.Cell / 2.0, options.BaselineValue);
        var file = CoalitionsFile(options) is { } f ? Npy.Read(f).ToTensor() : null;
        var maps = new List<Tensor>();
        for (int i = 0; i < n; i++)
        {
            using var scope = NewDisposeScope();
            var labels = Features.Labels(options, ctx, x, i);
            long m = Features.Count(labels);
            Tensor z;
            if (file is not null)
            {
                if (file.dim() != 2 || file.shape[1] != m)
                    throw new LoupeException($"{CoalitionsFile(options)}: coalitions_file must be S×{m} (the image has {m} features); it is {string.Join("×", file.shape)}");
                z = file;
            }
            else
            {
                if (m < 2) throw new LoupeException($"{ArtifactName}: the image has {m} feature; at least 2 are needed (smaller cell or more segments)");
                using var g = new Generator(InputSeeds.For(ctx.Seed, input.Ids?[i] ?? $"#{i}"));
                z = Draw(options, g, m);
            }
            var xi = x[i].unsqueeze(0); var fi = fill[i].unsqueeze(0);
            var y = Features.CoalitionScores(ctx, xi, fi, labels, z, selection.Rows([i]), options.MicroBatch);
            var coef = Fit(options, z.to(ScalarType.Float64), y.to(ScalarType.Float64), Weights(options, xi, fi, labels, z));
            maps.Add(scope.MoveToOuter(Features.ToPixels(coef.to(ScalarType.Float32), labels, c)));
        }
        return new AttributionResult(cat(maps, 0).contiguous(), selection);
    }
}

/// <summary>Kernel SHAP (Lundberg &amp; Lee 2017), Captum <c>KernelShap</c>'s convention: coalitions sampled from the
/// Shapley kernel (all features, none, then k ~ P(k) ∝ (M−1)/(k(M−k)), k = 1..M−1, and the k features with the largest
/// of M standard normals), weights 1 (10⁶ for the all/none coalitions, which pins the efficiency constraint) and
/// a weighted linear regression with intercept. Seeded draws per input: u = rand(S−2), then randn(S−2, M).</summary>
public sealed class KernelShap : SurrogateAnalysis<KernelShapOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "kernel-shap";
    /// <inheritdoc/>
    protected override string? CoalitionsFile(KernelShapOptions o) => o.CoalitionsFile;

    /// <inheritdoc/>
    protected override Tensor Draw(KernelShapOptions options, Generator g, long m)
    {
        long s = options.Samples - 2;
        var u = rand(s, dtype: ScalarType.Float64, generator: g);
        var r = randn([s, m], generator: g);
        var k = arange(1, m, dtype: ScalarType.Float64);
        var cdf = ((m - 1) / (k * (m - k))).cumsum(0);
        cdf /= cdf[-1];
        var count = (searchsorted(cdf, u.contiguous()) + 1).clamp_max(m - 1);         // k per coalition
        var rank = r.argsort(1, descending: true).argsort(1);                       // 0 = largest
        var z = (rank < count.view(-1, 1)).to(ScalarType.Float32);
        return cat([ones(1, m), zeros(1, m), z], 0);
    }

    /// <inheritdoc/>
    protected override Tensor Weights(KernelShapOptions options, Tensor x, Tensor fill, Tensor labels, Tensor z)
    {
        var k = z.sum(1, keepdim: false).to(ScalarType.Float64);
        return k.eq(0).logical_or(k.eq(z.shape[1])).to(ScalarType.Float64) * (1e6 - 1) + 1;
    }

    /// <inheritdoc/>
    protected override Tensor Fit(KernelShapOptions options, Tensor z, Tensor y, Tensor weights) => LinearFits.Least(z, y, weights);
}

/// <summary>LIME (Ribeiro et al. 2016), Captum <c>Lime</c>'s convention: samples with each feature kept with
/// probability ½ (seeded per input: rand(S, M) &lt; ½), weights exp(−d²/(2w²)) from the distance between the input and
/// the perturbed copy, and a weighted Lasso (α = 0.01) or linear fit with intercept; the coefficients are the map.</summary>
public sealed class Lime : SurrogateAnalysis<LimeOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "lime";
    /// <inheritdoc/>
    protected override string? CoalitionsFile(LimeOptions o) => o.CoalitionsFile;

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(LimeOptions options, AnalysisValidationContext context) =>
        base.Validate(options, context).Concat(options.Alpha is not null && options.Model == SurrogateFit.Linear
            ? ["option 'alpha' applies to model lasso or ridge (linear has no regularisation)"] : []);

    /// <inheritdoc/>
    protected override Tensor Draw(LimeOptions options, Generator g, long m) =>
        (rand([options.Samples, m], generator: g) < 0.5).to(ScalarType.Float32);

    /// <inheritdoc/>
    protected override Tensor Weights(LimeOptions options, Tensor x, Tensor fill, Tensor labels, Tensor z)
    {
        // Per-feature sums give the distances of all copies at once: a copy holds x on kept features and the fill elsewhere.
        long m = z.shape[1];
        var flat = labels.flatten();
        // per feature: the sum over its pixels of every channel (a region's), or over its scalars (per-channel labels)
        bool perChannel = Features.Planes(labels) > 1;
        Tensor Sum(Tensor v) => zeros(m, dtype: ScalarType.Float64).index_add_(0, flat, (perChannel ? v.flatten() : v.sum(0, keepdim: false)).to(ScalarType.Float64), 1);
        var xi = x[0].flatten(1); var fi = fill[0].flatten(1);
        var zd = z.to(ScalarType.Float64); var off = 1 - zd;
        Tensor d;
        if (options.Distance == LimeDistance.Euclidean)
            d = off.MatMul(Sum((xi - fi).square())).sqrt();
        else
        {
            var dot = zd.MatMul(Sum(xi * xi)) + off.MatMul(Sum(xi * fi));
            var nc = zd.MatMul(Sum(xi * xi)) + off.MatMul(Sum(fi * fi));
            var nx = Sum(xi * xi).sum();
            d = 1 - dot / (nx * nc).clamp_min(1e-16).sqrt();                           // torch's cosine_similarity (eps 1e-8)
        }
        return (-(d * d) / (2 * options.KernelWidth * options.KernelWidth)).exp();
    }

    /// <inheritdoc/>
    protected override Tensor Fit(LimeOptions options, Tensor z, Tensor y, Tensor weights) =>
        options.Model switch
        {
            SurrogateFit.Lasso => LinearFits.Lasso(z, y, weights, options.Alpha ?? 0.01),
            SurrogateFit.Ridge => LinearFits.Ridge(z, y, weights, options.Alpha ?? 1.0),
            _ => LinearFits.Least(z, y, weights),
        };
}

/// <summary>Weighted linear fits with intercept, as sklearn computes them (double precision).</summary>
public static class LinearFits
{
    /// <summary>Weighted-mean centring of X and y (sklearn's <c>_preprocess_data</c> with sample weights).</summary>
    static (Tensor Xc, Tensor Yc, Tensor P) Centre(Tensor x, Tensor y, Tensor w)
    {
        var p = w / w.sum();
        return (x - (p.view(-1, 1) * x).sum(0, keepdim: false), y - (p * y).sum(), p);
    }

    /// <summary>Weighted least squares coefficients (minimum norm when the system is underdetermined).</summary>
    public static Tensor Least(Tensor x, Tensor y, Tensor w)
    {
        var (xc, yc, p) = Centre(x, y, w);
        var sq = p.sqrt();
        return linalg.pinv(xc * sq.view(-1, 1)).MatMul(yc * sq);
    }

    /// <summary>Ridge coefficients: argmin Σ wᵢ (ycᵢ − xcᵢ·β)² + α‖β‖² with the raw weights (sklearn <c>Ridge</c> with
    /// sample_weight; the intercept, from the weighted means, is not penalised): (XcᵀWXc + αI)⁻¹XcᵀWyc.</summary>
    public static Tensor Ridge(Tensor x, Tensor y, Tensor w, double alpha)
    {
        var (xc, yc, _) = Centre(x, y, w);
        var xw = xc * w.view(-1, 1);
        var gram = xw.t().MatMul(xc) + alpha * eye(xc.shape[1], dtype: xc.dtype);
        return linalg.pinv(gram).MatMul(xw.t().MatMul(yc));
    }

    /// <summary>Lasso coefficients: argmin (1/2) Σ pᵢ (ycᵢ − xcᵢ·β)² + α‖β‖₁ by cyclic coordinate descent to convergence.</summary>
    public static Tensor Lasso(Tensor x, Tensor y, Tensor w, double alpha)
    {
        var (xc, yc, p) = Centre(x, y, w);
        long s = xc.shape[0], m = xc.shape[1];
        var X = xc.contiguous().ToArray<double>(); var r = yc.contiguous().ToArray<double>(); var P = p.ToArray<double>();
        var beta = new double[m]; var norm = new double[m];
        for (long j = 0; j < m; j++) for (long i = 0; i < s; i++) norm[j] += P[i] * X[i * m + j] * X[i * m + j];
        for (int sweep = 0; sweep < 100_000; sweep++)
        {
            double change = 0, size = 0;
            for (long j = 0; j < m; j++)
            {
                if (norm[j] == 0) continue;
                double rho = 0;
                for (long i = 0; i < s; i++) rho += P[i] * X[i * m + j] * (r[i] + X[i * m + j] * beta[j]);
                double next = Math.Sign(rho) * Math.Max(Math.Abs(rho) - alpha, 0) / norm[j], step = next - beta[j];
                if (step != 0) for (long i = 0; i < s; i++) r[i] -= X[i * m + j] * step;
                beta[j] = next;
                change = Math.Max(change, Math.Abs(step)); size = Math.Max(size, Math.Abs(next));
            }
            if (change <= 1e-13 * Math.Max(1, size)) break;
        }
        return tensor(beta);
    }
}
