using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>The draws of GradientSHAP (<c>gradient-shap</c>, <c>layer-gradient-shap</c>).</summary>
public record GradientShapDraws
{
    /// <summary>Samples per input.</summary>
    [Range(1, 100_000), Description("samples per input (Captum's n_samples, default 5): each draws a baseline, a noise and a point α on the path")]
    public int Samples { get; init; } = 5;
    /// <summary>Noise σ.</summary>
    [Range(0.0, 1000.0), Description("σ of the Gaussian noise added to the input, in normalised units (Captum's stdevs, default 0)")]
    public double Stdevs { get; init; }
    /// <summary>Single baseline.</summary>
    [Alias("fill"), OrConstant(nameof(BaselineValue)), Description("the baseline when no baselines file is given (also spelled fill): zero (normalised), black, mean, blur, or a constant: one value or one per channel in normalised space (Captum's scalar / per-channel baselines), e.g. 0.5 or [0.1, 0.2, 0.3]")]
    public Fill Baseline { get; init; } = Fill.Zero;
    /// <summary>Constant baseline (older spelling; <c>fill: 0.5</c> binds here).</summary>
    [Description(Perturbation.ConstantDescription + "'fill' (or 'baseline')")]
    public float[]? BaselineValue { get; init; }
    /// <summary>Baseline distribution.</summary>
    [FilePath, Description("a .npy B×C×H×W set of baselines in normalised input space (the distribution of Captum's baselines); each sample draws one uniformly")]
    public string? BaselinesFile { get; init; }
    /// <summary>Draws from a file.</summary>
    [FilePath, Description("a .npy S×(2 + C·H·W): per sample α ∈ [0,1], the baseline index, then standard-normal noise (× stdevs), or S×2 without noise; the same draws for every input (overrides samples and the seeded draws)")]
    public string? DrawsFile { get; init; }
    /// <summary>Blur σ for the blur baseline.</summary>
    [Range(0.1, 1000), Description("σ of the blur baseline, in pixels")]
    public double BlurSigma { get; init; } = 5;
    /// <summary>Points per backward pass.</summary>
    [Range(1, 100_000), Description("samples (× inputs) per forward/backward pass (default: as many as fill ~64 MiB of activations, at least 8, within settings.memory_budget_mb)")]
    public int? InternalBatchSize { get; init; }
}

/// <summary>Options of <c>gradient-shap</c>.</summary>
public sealed record GradientShapOptions : GradientShapDraws
{
    /// <summary>Captum's multiply_by_inputs.</summary>
    [Description(Perturbation.MultiplyByInputsDescription)]
    public bool MultiplyByInputs { get; init; } = true;
}

/// <summary>GradientSHAP (Lundberg &amp; Lee 2017; Captum <c>GradientShap</c>): the expected gradients approximation
/// E[(x + ε − b) ⊙ ∂F(b + α (x + ε − b))/∂x] over baselines b from a set, noise ε ~ N(0, σ²) and α ~ U(0, 1), as
/// Captum's NoiseTunnel(InputBaselineXGradient). Draws: per input, a generator seeded by the step seed and the input
/// id: α = rand(S), baseline index = ⌊rand(S)·B⌋, noise = randn(S, C, H, W) — or all from <c>draws_file</c>.</summary>
public sealed class GradientShap : AttributionAnalysis<GradientShapOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Gradients);
    /// <inheritdoc/>
    public override string ArtifactName => "gradient-shap";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(GradientShapOptions options, AnalysisValidationContext context) =>
        Perturbation.BaselineErrors(options, options.Baseline, null, null, options.BaselineValue, "fill", context.Model.DefaultInput)
            .Concat(OptionRules.OnlyWith(options, options.BaselinesFile is null, "a single baseline (baselines_file's baselines replace it)",
                nameof(options.Baseline), nameof(options.BaselineValue), nameof(options.BlurSigma)));

    /// <inheritdoc/>
    public override AttributionResult Attribute(GradientShapOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0];
        var (_, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        var sum = zeros_like(x);
        long s = Samples(options, input, selection, (k, noisy, baseline, points, rows) =>
        {
            var (g, _) = Explain.InputGradient(ctx, points, rows, input.Slot);
            var part = options.MultiplyByInputs ? g * (noisy - baseline) : g;
            sum.add_(part.view([n, k, .. x.shape.Skip(1)]).sum(1, keepdim: false));
        });
        return new AttributionResult(sum / s, selection);
    }

    /// <summary>GradientSHAP's samples of a batch, a chunk at a time under the memory budget: per input, S draws of
    /// α ~ U(0, 1), a baseline b from the set (or the one baseline) and noise ε ~ N(0, σ²) — seeded per input, or from
    /// <c>draws_file</c> — and <paramref name="visit"/>(k, noisy inputs x + ε, their baselines b, the points
    /// b + α (x + ε − b), the points' selection), each (N·k)×C×H×W input-major (row i·k + j: sample j of input i), in
    /// the chunk's dispose scope. Returns S.</summary>
    public static long Samples(GradientShapDraws options, AttributionInput input, TargetSelection selection, Action<long, Tensor, Tensor, Tensor, TargetSelection> visit)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3], d = c * h * w;
        var baselines = options.BaselinesFile is { } bf ? LoadBaselines(bf, x) : null;
        long b = baselines?.shape[0] ?? 1;
        // Draws: n × S of α and baseline index, n × S × C×H×W of noise.
        Tensor alphas, index, noise;
        if (options.DrawsFile is { } df)
        {
            var t = Npy.Read(df).ToTensor();
            if (t.dim() != 2 || (t.shape[1] != 2 + d && t.shape[1] != 2))
                throw new LoupeException($"{df}: draws_file must be S×{2 + d} (α, baseline index, C·H·W noise values) or S×2 (no noise); it is {string.Join("×", t.shape)}");
            alphas = t[.., 0].unsqueeze(0).expand(n, -1);
            index = t[.., 1].to(ScalarType.Int64).unsqueeze(0).expand(n, -1);
            if (index.min().item<long>() < 0 || index.max().item<long>() >= b)
                throw new LoupeException($"{df}: draws_file baseline indices must lie in 0..{b - 1}");
            noise = t.shape[1] == 2 ? zeros([1, t.shape[0], c, h, w]).expand(n, -1, c, h, w) : t[.., 2..].reshape(1, -1, c, h, w).expand(n, -1, c, h, w);
        }
        else
        {
            var gens = Features.Generators(ctx, input.Ids, n);
            alphas = stack(gens.Select(g => rand(options.Samples, generator: g)).ToArray());
            index = stack(gens.Select(g => (rand(options.Samples, generator: g) * b).floor().clamp_max(b - 1).to(ScalarType.Int64)).ToArray());
            noise = stack(gens.Select(g => randn([options.Samples, c, h, w], generator: g)).ToArray());
            foreach (var g in gens) g.Dispose();
        }
        long s = alphas.shape[1];
        var baseSet = baselines is null ? Perturbation.Baseline(input.BaselineOf, options.Baseline, options.BlurSigma, ctx.Input, options.BaselineValue, "fill").unsqueeze(1) : null;
        long perPass = Math.Max(1, Explain.CopiesPerForward(ctx, x, options.InternalBatchSize, gradients: true) / n);
        for (long s0 = 0; s0 < s; s0 += perPass)
        {
            using var chunk = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            long k = Math.Min(perPass, s - s0);
            var bsel = baselines is null ? baseSet!.expand(n, k, c, h, w)
                : baselines.index_select(0, index.narrow(1, s0, k).reshape(-1)).view(n, k, c, h, w);
            var noisy = x.unsqueeze(1) + noise.narrow(1, s0, k) * (float)options.Stdevs;        // n×k×C×H×W
            var points = bsel + alphas.narrow(1, s0, k).view(n, k, 1, 1, 1) * (noisy - bsel);
            var rows = Enumerable.Range(0, (int)n).SelectMany(i => Enumerable.Repeat(i, (int)k)).ToArray();
            visit(k, noisy.reshape(n * k, c, h, w), bsel.reshape(n * k, c, h, w), points.reshape(n * k, c, h, w), selection.Rows(rows));
        }
        return s;
    }

    /// <summary>A baselines file, B×C×H×W (or C×H×W), checked against the input.</summary>
    public static Tensor LoadBaselines(string file, Tensor x)
    {
        var b = Npy.Read(file).ToTensor();
        if (b.dim() == 3) b = b.unsqueeze(0);
        if (b.dim() != 4 || b.shape[1] != x.shape[1] || b.shape[2] != x.shape[2] || b.shape[3] != x.shape[3])
            throw new LoupeException($"{file}: baselines_file shape ({string.Join("×", b.shape)}) is not B×{x.shape[1]}×{x.shape[2]}×{x.shape[3]}");
        return b;
    }
}
