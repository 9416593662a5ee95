using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>How the path integral is approximated (Captum's names).</summary>
public enum IntegrationRule
{
    /// <summary>Gauss–Legendre quadrature (Captum's default).</summary>
    GaussLegendre,
    /// <summary>Captum's <c>riemann_trapezoid</c>: α_i = i/(n−1), weights 1/n halved at both ends (they sum to (n−1)/n).</summary>
    RiemannTrapezoid,
    /// <summary>Left Riemann sum.</summary>
    RiemannLeft,
    /// <summary>Right Riemann sum.</summary>
    RiemannRight,
    /// <summary>Midpoint Riemann sum.</summary>
    RiemannMiddle,
    /// <summary>The textbook trapezoid rule: α_i = i/(n−1), weights 1/(n−1) halved at both ends (they sum to 1).</summary>
    Trapezoid,
}

/// <summary>Options of <c>integrated-gradients</c>.</summary>
public sealed record IntegratedGradientsOptions
{
    /// <summary>Integration steps.</summary>
    [Range(2, 100_000), Description("number of points on the path from the baseline to the input")]
    public int Steps { get; init; } = 50;
    /// <summary>Rule.</summary>
    [Description("gauss-legendre (Captum's default), riemann-trapezoid, riemann-left, riemann-right, riemann-middle (Captum's rules), or trapezoid (the textbook rule, weights sum to 1)")]
    public IntegrationRule Method { get; init; } = IntegrationRule.GaussLegendre;
    /// <summary>Baseline.</summary>
    [Alias("fill"), OrConstant(nameof(BaselineValue)), Description("baseline x′ (also spelled fill): zero (normalised), black, mean, blur, or a constant: one value or one per channel in normalised space (Captum's scalar / per-channel baselines), e.g. 0.5 or [0.1, 0.2, 0.3]; or a file (baseline_file)")]
    public Fill Baseline { get; init; } = Fill.Zero;
    /// <summary>Custom baseline.</summary>
    [FilePath, Description(Perturbation.BaselineFileDescription)]
    public string? BaselineFile { get; init; }
    /// <summary>Per-input baselines from a folder.</summary>
    [FilePath(Directory = true), Description(Perturbation.BaselineFolderDescription)]
    public string? BaselineFolder { get; init; }
    /// <summary>Constant baseline.</summary>
    [Description(Perturbation.ConstantDescription + "'fill' (or 'baseline')")]
    public float[]? BaselineValue { get; init; }
    /// <summary>Blur σ for the blur baseline.</summary>
    [Range(0.1, 1000), Description("σ of the blur baseline, in pixels")]
    public double BlurSigma { get; init; } = 5;
    /// <summary>Captum's multiply_by_inputs.</summary>
    [Description(Perturbation.MultiplyByInputsDescription)]
    public bool MultiplyByInputs { get; init; } = true;
    /// <summary>Baselines of the side inputs.</summary>
    [Description("baselines of the model's side inputs (Captum's per-input baselines): a list of { input: NAME, value: CONSTANT } or { input: NAME, file: X.npy }; side inputs not listed start from 0 (Captum's default)")]
    public SideBaseline[]? SideBaselines { get; init; }
    /// <summary>Path points per backward pass.</summary>
    [Range(1, 100_000), Description("path points (× inputs) per forward/backward pass (default: as many as fill ~64 MiB of activations, at least 8, within settings.memory_budget_mb)")]
    public int? InternalBatchSize { get; init; }
}

/// <summary>Integrated gradients (Sundararajan et al. 2017, Eq. 1 and its Riemann/Gauss–Legendre approximation):
/// (x − x′) ⊙ Σ_i w_i ∂F(x′ + α_i (x − x′))/∂x. Records the completeness error Σ attr − (F(x) − F(x′)) per input
/// (<c>completeness.json</c> and metrics).</summary>
public sealed class IntegratedGradients : AttributionAnalysis<IntegratedGradientsOptions>, IDeclaresMetrics, ITakesBaseline
{
    /// <inheritdoc/>
    public IReadOnlyList<string> MetricNames => ["completeness_error_max_abs", "completeness_error_mean_relative"];

    /// <inheritdoc/>
    protected override OverlayStyle? DefaultOverlay => OverlayStyle.Gradient;
    readonly Dictionary<string, double> _completeness = new();
    readonly List<double> _relative = new();

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Gradients) { HandlesSideInputs = true };
    /// <inheritdoc/>
    public override string ArtifactName => "integrated-gradients";

    /// <summary>Points α_i in [0,1] and weights w_i of a rule (Captum's <c>approximation_parameters</c>).</summary>
    public static (double[] Alphas, double[] Weights) Rule(IntegrationRule rule, int n)
    {
        switch (rule)
        {
            case IntegrationRule.GaussLegendre:
                var (nodes, weights) = GaussLegendre(n);
                return (nodes.Select(v => 0.5 * (v + 1)).ToArray(), weights.Select(v => 0.5 * v).ToArray());
            case IntegrationRule.RiemannTrapezoid or IntegrationRule.Trapezoid:
                // Captum 0.8's riemann_trapezoid divides by n, not n − 1: its maps are (n − 1)/n of the textbook rule's.
                double width = rule == IntegrationRule.Trapezoid ? n - 1 : n;
                return (Enumerable.Range(0, n).Select(i => i / (double)(n - 1)).ToArray(),
                        Enumerable.Range(0, n).Select(i => (i == 0 || i == n - 1 ? 0.5 : 1.0) / width).ToArray());
            case IntegrationRule.RiemannLeft:
                return (Enumerable.Range(0, n).Select(i => i / (double)n).ToArray(), Enumerable.Repeat(1.0 / n, n).ToArray());
            case IntegrationRule.RiemannRight:
                return (Enumerable.Range(1, n).Select(i => i / (double)n).ToArray(), Enumerable.Repeat(1.0 / n, n).ToArray());
            default:
                return (Enumerable.Range(0, n).Select(i => (i + 0.5) / n).ToArray(), Enumerable.Repeat(1.0 / n, n).ToArray());
        }
    }

    /// <summary>Gauss–Legendre nodes (ascending, in [−1, 1]) and weights, by Newton's method on P_n.</summary>
    public static (double[] Nodes, double[] Weights) GaussLegendre(int n)
    {
        var x = new double[n]; var w = new double[n];
        for (int i = 0; i < (n + 1) / 2; i++)
        {
            double z = Math.Cos(Math.PI * (i + 0.75) / (n + 0.5)), pp = 0;
            for (int iter = 0; iter < 100; iter++)
            {
                double p1 = 1, p2 = 0;
                for (int j = 1; j <= n; j++) { var p3 = p2; p2 = p1; p1 = ((2 * j - 1) * z * p2 - (j - 1) * p3) / j; }
                pp = n * (z * p1 - p2) / (z * z - 1);
                var z1 = z;
                z = z1 - p1 / pp;
                if (Math.Abs(z - z1) < 1e-15) break;
            }
            x[i] = -z; x[n - 1 - i] = z;
            w[i] = w[n - 1 - i] = 2 / ((1 - z * z) * pp * pp);
        }
        return (x, w);
    }

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(IntegratedGradientsOptions options, AnalysisValidationContext context)
    {
        foreach (var e in Perturbation.BaselineErrors(options, options.Baseline, options.BaselineFile, options.BaselineFolder, options.BaselineValue, "baseline_value", context.Model.DefaultInput)) yield return e;
        foreach (var e in SideBaseline.Check(options.SideBaselines, context.Model)) yield return e;
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(IntegratedGradientsOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0];
        var baseline = Perturbation.BaselineOrFile(input, options.BaselineFile, options.BaselineFolder, options.Baseline, options.BlurSigma, options.BaselineValue, "baseline_value");
        var (endScores, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        // Side inputs move along the same path, from their own baselines (Captum's tuple inputs and baselines).
        var side = SideInputs.Of(ctx.Model)?.Active ?? new Dictionary<string, Tensor>();
        var sideBase = side.ToDictionary(kv => kv.Key, kv => SideBaseline.Of(options.SideBaselines, kv.Key, kv.Value));
        var sideDelta = side.ToDictionary(kv => kv.Key, kv => kv.Value - sideBase[kv.Key]);
        var sideSum = side.ToDictionary(kv => kv.Key, kv => zeros_like(kv.Value));
        Tensor baseScores;
        using (SideInputs.Use(ctx.Model, sideBase)) (baseScores, _, _) = Explain.Scores(ctx, baseline, selection, input.Slot);
        var (alphas, weights) = Rule(options.Method, options.Steps);
        var delta = x - baseline;
        var sum = zeros_like(x);
        long perPass = Math.Max(1, Explain.CopiesPerForward(ctx, x, options.InternalBatchSize, gradients: true) / n);
        for (int s0 = 0; s0 < alphas.Length; s0 += (int)perPass)
        {
            using var chunk = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            int k = (int)Math.Min(perPass, alphas.Length - s0);
            var a = tensor(alphas.Skip(s0).Take(k).Select(v => (float)v).ToArray()).view(k, 1, 1, 1, 1);
            var wts = tensor(weights.Skip(s0).Take(k).Select(v => (float)v).ToArray()).view(k, 1, 1, 1, 1);
            var points = (baseline.unsqueeze(0) + a * delta.unsqueeze(0)).reshape(k * n, x.shape[1], x.shape[2], x.shape[3]);
            var rows = Enumerable.Range(0, k).SelectMany(_ => Enumerable.Range(0, (int)n)).ToArray();
            var sidePoints = side.Keys.ToDictionary(name => name, name => Path(sideBase[name], sideDelta[name], alphas.Skip(s0).Take(k)));
            var (g, gs, _) = Explain.InputGradients(ctx, points, sidePoints, selection.Rows(rows), input.Slot);
            sum.add_((g.view(k, n, x.shape[1], x.shape[2], x.shape[3]) * wts).sum(0, keepdim: false));
            foreach (var (name, gv) in gs)
                sideSum[name].add_((gv.view([k, .. side[name].shape]) * wts.view([k, .. side[name].shape.Select(_ => 1L)])).sum(0, keepdim: false));
        }
        var attr = delta * sum;
        var sideAttr = side.Keys.ToDictionary(name => name, name => sideDelta[name] * sideSum[name]);
        // The completeness check is of the global attribution, whichever the step returns.
        var total = sideAttr.Values.Aggregate(attr.flatten(1).sum(1), (acc, a) => acc + a.flatten(1).sum(1));
        var error = total - (endScores - baseScores);
        var errs = error.ToArray<float>();
        var gaps = (endScores - baseScores).ToArray<float>();
        lock (_completeness)
            for (int i = 0; i < errs.Length; i++)
            {
                _completeness[input.Ids?[i] ?? $"#{_completeness.Count}"] = errs[i];
                _relative.Add(Math.Abs(errs[i]) / Math.Max(1e-12, Math.Abs(gaps[i])));
            }
        if (!options.MultiplyByInputs) (attr, sideAttr) = (sum, sideSum);
        return new AttributionResult(attr, selection) { Side = sideAttr.Count > 0 ? sideAttr : null };
    }

    /// <summary>Points b + α (v − b) for the given α, k·N rows (α-major, as the image's points).</summary>
    static Tensor Path(Tensor b, Tensor d, IEnumerable<double> alphas)
    {
        var a = alphas.Select(v => (float)v).ToArray();
        var av = tensor(a).view([a.Length, .. b.shape.Select(_ => 1L)]);
        return (b.unsqueeze(0) + av * d.unsqueeze(0)).reshape([a.Length * b.shape[0], .. b.shape.Skip(1)]);
    }

    /// <inheritdoc/>
    protected override void Finish(IntegratedGradientsOptions options, IAnalysisContext ctx)
    {
        if (_completeness.Count == 0) return;
        ctx.Output.Json("completeness", _completeness);
        ctx.Output.Metric("completeness_error_max_abs", _completeness.Values.Max(Math.Abs));
        ctx.Output.Metric("completeness_error_mean_relative", _relative.Average());
    }

    /// <summary>Shards: completeness errors are per input (unioned); the mean relative error is the shards' means
    /// weighted by their input counts (equal to the unsharded value up to rounding, ~1e-15 relative).</summary>
    public override void Merge(IShardMerge merge)
    {
        base.Merge(merge);
        if (!merge.Has("completeness", "json")) return;
        var parts = merge.Json("completeness").Select(p => p.AsObject()).ToList();
        var all = new System.Text.Json.Nodes.JsonObject();
        foreach (var (id, v) in parts.SelectMany(p => p)) all[id] = v?.DeepClone();
        merge.Output.Json("completeness", all);
        merge.Output.Metric("completeness_error_max_abs", all.Max(kv => Math.Abs((float)kv.Value!)));
        merge.Output.Metric("completeness_error_mean_relative",
            parts.Select((p, i) => merge.Metrics[i]["completeness_error_mean_relative"] * p.Count).Sum() / all.Count);
    }
}
