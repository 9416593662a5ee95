using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Options of <c>infidelity</c>. The replacement options (<c>baseline</c> and its constant, images, uniform
/// range and noise parameters: Quantus's perturb_baseline and perturb_func_kwargs) are those of the other perturbing
/// metrics and apply to <c>perturbation: blocks</c>; Quantus's defaults: baseline min ("black"), abs, normalise and
/// softmax off.</summary>
public sealed record InfidelityOptions : PerturbOptions
{
    /// <summary>Perturbations.</summary>
    [Description("gaussian (Captum's infidelity: I ~ N(0, σ²) per input element, `samples` draws) or blocks (Quantus 0.6's Infidelity: patch × patch blocks of every channel replaced by the baseline cumulatively, in raster order)")]
    public InfidelityPerturbation Perturbation { get; init; } = InfidelityPerturbation.Gaussian;
    /// <summary>Perturbations.</summary>
    [Range(1, 100_000), Description("gaussian: perturbations per input (Captum n_perturb_samples: 10); blocks: passes with a random baseline, each drawn afresh (with a fixed baseline Quantus's repeated passes give the same number: one runs)")]
    public int Samples { get; init; } = 10;
    /// <summary>σ.</summary>
    [Range(0.0, 1000.0), Description("gaussian: σ of the perturbation I ~ N(0, σ²), in normalised input units")]
    public double Sigma { get; init; } = 0.1;
    /// <summary>Captum's normalize.</summary>
    [Description("Captum's normalize: scale IᵀΦ by β = E[IᵀΦ·Δf] / E[(IᵀΦ)²] (1 when the denominator is 0), so the score does not depend on the map's scale")]
    public bool Normalize { get; init; }
    /// <summary>Block sides.</summary>
    [Description("blocks: the block sides, one pass each, scores averaged (Quantus perturb_patch_sizes: [4]); the image is padded evenly to a multiple of each")]
    public int[] PatchSizes { get; init; } = [4];
}

/// <summary>How <c>infidelity</c> perturbs its inputs.</summary>
public enum InfidelityPerturbation
{
    /// <summary>Captum's: Gaussian noise subtracted from the input.</summary>
    Gaussian,
    /// <summary>Quantus 0.6's: blocks replaced by the baseline cumulatively, in raster order.</summary>
    Blocks,
}

/// <summary>Infidelity (Yeh et al. 2019): the mean squared gap between the map's prediction of an output change,
/// Σ Φ·(x − x'), and the change itself, f(x) − f(x'); f the target score (the class logit for class targets, as the
/// attribution methods explain; the probability with <c>softmax</c>), Φ the linked step's map as is (signed; an
/// N×H×W map is broadcast over channels). Lower is better.
/// <para><c>perturbation: gaussian</c> is Captum's <c>infidelity</c>: x' = x − I, I ~ N(0, σ²) per input element
/// (seeded per input), the mean over <c>samples</c>; <c>normalize</c> as Captum's. <c>perturbation: blocks</c> is
/// Quantus 0.6's Infidelity: for each block side p, the image (padded evenly to multiples of p, as Quantus pads) is cut
/// into p×p blocks of every channel, replaced by the baseline one after another in raster order (x_k has blocks 1..k
/// replaced), the mean over k of the squared gap; the mean over block sides. Quantus repeats that deterministic pass
/// n_perturb_samples times (the same number); here a random baseline draws once per input.</para>
/// Note: <c>saliency</c> with its default <c>abs: true</c> has no sign, so its infidelity is large by construction.</summary>
public sealed class Infidelity : MetricAnalysis<InfidelityOptions>, IShardable
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward) { HandlesSideInputs = true };   // copies through MetricBatch.Outputs
    /// <inheritdoc/>
    public override IReadOnlyList<string> MetricNames => ["infidelity_mean", "infidelity_std"];

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(InfidelityOptions o, AnalysisValidationContext context)
    {
        if (o.PatchSizes.Length == 0 || o.PatchSizes.Any(p => p < 1))
            yield return $"option 'patch_sizes': give one or more block sides ≥ 1, got [{string.Join(", ", o.PatchSizes)}]";
        bool blocks = o.Perturbation == InfidelityPerturbation.Blocks;
        // Captum's Gaussian perturbation subtracts noise: no baseline; the blocks take the fill and its companions.
        foreach (var e in OptionRules.OnlyWith(o, blocks, "perturbation: blocks", nameof(o.Baseline), nameof(o.BaselineValue), nameof(o.BaselineImages), nameof(o.PatchSizes)))
            yield return e;
        foreach (var e in OptionRules.OnlyWith(o, !blocks, "perturbation: gaussian", nameof(o.Sigma))) yield return e;
        if (blocks) foreach (var e in o.FillOptionErrors(Fill.Min)) yield return e;
        else foreach (var e in OptionRules.OnlyWith(o, false, "perturbation: blocks", nameof(o.UniformLow), nameof(o.UniformHigh), nameof(o.PerturbMean), nameof(o.PerturbStd), nameof(o.LowerBound), nameof(o.UpperBound))) yield return e;
    }

    /// <inheritdoc/>
    protected override void Evaluate(InfidelityOptions o, IAnalysisContext ctx, MetricWriter writer)
    {
        var (ids, values) = NoisyInputs.PerInput(ctx, (batch, gens) =>
        {
            var x = batch.Input;
            long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
            var result = LinkedMaps(o, ctx, batch);
            var phi = result.Map.detach().to(ScalarType.Float32);
            if (phi.dim() == 3) phi = phi.unsqueeze(1);
            if (phi.shape[2] != h || phi.shape[3] != w)
                throw new LoupeException($"the maps of '{o.Of!.Id}' have shape ({string.Join("×", result.Map.shape)}), not the input's {h}×{w}: infidelity needs input-resolution maps");
            phi = Normalisations.Rows(phi.flatten(1), o.Normalise.Resolve(false), o.Together(n)).view_as(phi);
            if (o.Abs ?? false) phi = phi.abs();
            phi = phi.expand(n, c, h, w);
            var b = new MetricBatch(ctx, batch, phi, result.Selection, gens, o.MicroBatch);
            // Per input: Σ (IᵀΦ)², Σ IᵀΦ·Δf, Σ Δf² and Σ (IᵀΦ − Δf)² over its perturbations, and their count.
            var (aa, ab, bb, gap, count) = o.Perturbation == InfidelityPerturbation.Blocks ? Blocks(o, b, phi) : Gaussian(o, b, phi);
            if (!o.Normalize) return (gap / count).ToArray<double>();
            var beta = ab / where(aa == 0, ones_like(aa), aa);
            return ((beta * beta * aa - 2 * beta * ab + bb) / count).ToArray<double>();
        });
        ctx.Output.Raw("infidelity", null, new NdArray(values.Select(v => (float)v).ToArray(), [values.Count]));
        ctx.Output.Json("infidelity", new
        {
            of = o.Of!.Id, perturbation = o.Perturbation.ToString().ToLowerInvariant(), sigma = o.Sigma, samples = o.Samples,
            normalize = o.Normalize, patch_sizes = o.PatchSizes, inputs = ids.Select((id, i) => new { id, infidelity = values[i] }).ToArray(),
        });
        writer.Stat("infidelity", values, higherIsBetter: false);
    }

    /// <summary>Captum's perturbations: x' = x − I, I ~ N(0, σ²), every input's k copies drawn at a time (the same
    /// numbers whatever the chunking).</summary>
    static (Tensor, Tensor, Tensor, Tensor, double) Gaussian(InfidelityOptions o, MetricBatch b, Tensor phi)
    {
        var x = b.X;
        long n = b.N, c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var fx = b.Clean(o.Softmax ?? false);
        // IᵀΦ of each copy, kept as numbers: the copies' tensors live only within their pass.
        var dots = new double[n * o.Samples];
        var drop = fx.unsqueeze(1) - b.Outputs(o.Samples, (k0, k) =>
        {
            var noise = InputSeeds.Randn(b.Generators, [k, c, h, w]).transpose(0, 1) * (float)o.Sigma;   // n×k×c×h×w
            var dot = (noise * phi.unsqueeze(1)).sum([2, 3, 4]).to(ScalarType.Float64).ToArray<double>();
            for (long i = 0; i < n; i++) Array.Copy(dot, i * k, dots, i * o.Samples + k0, k);
            return x.unsqueeze(1) - noise;
        }, o.Softmax ?? false);
        return Sums(tensor(dots).view(n, o.Samples), drop, o.Samples);
    }

    /// <summary>Quantus 0.6's perturbations: per block side, the blocks replaced cumulatively in raster order; the sums
    /// are means over the blocks, added over the block sides (their count divides).</summary>
    static (Tensor, Tensor, Tensor, Tensor, double) Blocks(InfidelityOptions o, MetricBatch b, Tensor phi)
    {
        var x = b.X;
        long n = b.N, h = x.shape[2], w = x.shape[3];
        var fx = b.Clean(o.Softmax ?? false);
        // A random fill is drawn afresh for each of `samples` passes (Quantus repeats its pass n_perturb_samples
        // times); a fixed one gives the same pass every time, so it runs once.
        var kind = o.FillOf(Fill.Min);   // null: a constant or baseline images
        bool random = kind is Fill.Uniform or Fill.UniformInput or Fill.UniformStep || NoiseFill.Adds(kind);
        int passes = random ? o.Samples : 1;
        Tensor? aa = null, ab = null, bb = null, gap = null;
        for (int pass = 0; pass < passes; pass++)
            foreach (int p in o.PatchSizes)
            {
                var baseline = o.BaselineOf(b, Fill.Min);
                var block = tensor(BlockOfPixel(h, w, p));
                long blocks = block.max().ToInt64() + 1;
                // uniform-step: one value per block, as Quantus draws one per replacement call.
                // running-mean: Quantus's "mean" of the array as perturbed so far (the blocks are cumulative).
                var fill = kind == Fill.RunningMean ? b.RunningMean(block.expand(n, -1), blocks)
                    : b.PerStep(kind, baseline, block.expand(n, -1), blocks, o.UniformLow, o.UniformHigh);
                // Σ_c Φ·(x − fill) per pixel: a copy's IᵀΦ is the sum over the pixels it replaced.
                var contribution = (phi * (x - fill)).sum(1).to(ScalarType.Float64).reshape(n, h * w);
                var dot = zeros(n, blocks, dtype: ScalarType.Float64).index_add_(1, block, contribution, 1).cumsum(1);
                var drop = fx.unsqueeze(1) - b.Outputs(blocks, (k0, k) => b.Replace((block.view(1, 1, -1) <= arange(k0, k0 + k).view(1, k, 1)).expand(n, k, -1), fill), o.Softmax ?? false);
                var (a2, a1, b2, g, _) = Sums(dot, drop, 1);
                aa = Add(aa, a2 / blocks); ab = Add(ab, a1 / blocks); bb = Add(bb, b2 / blocks); gap = Add(gap, g / blocks);
            }
        return (aa!, ab!, bb!, gap!, o.PatchSizes.Length * passes);
    }

    static Tensor Add(Tensor? sum, Tensor t) => sum is null ? t : sum + t;

    static (Tensor, Tensor, Tensor, Tensor, double) Sums(Tensor dot, Tensor drop, double count) =>
        ((dot * dot).sum(1), (dot * drop).sum(1), (drop * drop).sum(1), (dot - drop).pow(2).sum(1), count);

    /// <summary>Each pixel's block for side <paramref name="p"/>: the image padded to multiples of p, the smaller half
    /// of the padding before (Quantus's <c>get_padding_size</c>), blocks numbered row by row.</summary>
    internal static long[] BlockOfPixel(long h, long w, int p)
    {
        long padH = (p - h % p) % p, padW = (p - w % p) % p, top = padH / 2, left = padW / 2, across = (w + padW) / p;
        var block = new long[h * w];
        for (long y = 0; y < h; y++)
            for (long x = 0; x < w; x++) block[y * w + x] = (y + top) / p * across + (x + left) / p;
        return block;
    }

    /// <inheritdoc/>
    protected override void MergeDetails(IShardMerge merge)
    {
        merge.Rows("infidelity");
        merge.Concat("infidelity", "inputs");
    }
}

/// <summary>Options of <c>sensitivity-max</c>.</summary>
public sealed record SensitivityOptions : MetricOptions
{
    /// <summary>Samples.</summary>
    [Range(1, 100_000), Description("perturbed inputs per input (Captum n_perturb_samples: 10)")]
    public int Samples { get; init; } = 10;
    /// <summary>Radius.</summary>
    [Range(0.0, 1000.0), Description("radius r of the L∞ ball, in normalised input units (Captum perturb_radius: 0.02)")]
    public double Radius { get; init; } = 0.02;
}

/// <summary>Max-sensitivity (Yeh et al. 2019; Captum <c>sensitivity_max</c> with its defaults): max over
/// <c>samples</c> δ ~ U[−r, r]^d of ‖Φ(x + δ) − Φ(x)‖_F / ‖Φ(x)‖_F, per input; the target classes are those chosen on
/// the clean input. Lower is better (more stable).</summary>
public sealed class SensitivityMax : MetricAnalysis<SensitivityOptions>, IShardable
{
    /// <inheritdoc/>
    protected override string? ExplainsAgain(SensitivityOptions options) => "noisy copies of the inputs";

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward) { HandlesSideInputs = true };   // one noisy copy of the batch at a time
    /// <inheritdoc/>
    public override IReadOnlyList<string> MetricNames => ["sensitivity_mean", "sensitivity_std"];

    /// <inheritdoc/>
    protected override void Evaluate(SensitivityOptions o, IAnalysisContext ctx, MetricWriter writer)
    {
        var (ids, values) = NoisyInputs.PerInput(ctx, (batch, gens) =>
        {
            var x = batch.Input;
            long n = x.shape[0];
            var result = LinkedMaps(o, ctx, batch);
            var phi = result.Map.detach().to(ScalarType.Float64).reshape(n, -1);
            var norm = phi.norm(1).clamp_min(1e-30);
            var worst = zeros(n, dtype: ScalarType.Float64);
            for (int s = 0; s < o.Samples; s++)
            {
                using var inner = NewDisposeScope();
                ctx.Cancellation.ThrowIfCancellationRequested();
                var delta = (InputSeeds.Rand(gens, [1, .. x.shape.Skip(1)]).squeeze(0) * 2 - 1) * (float)o.Radius;
                var m = LinkedMaps(o, ctx, x + delta, null, result.Selection, batch.Ids).Map.detach().to(ScalarType.Float64).reshape(n, -1);
                worst = inner.MoveToOuter(maximum(worst, (m - phi).norm(1) / norm));
            }
            return worst.ToArray<double>();
        });
        ctx.Output.Raw("sensitivity", null, new NdArray(values.Select(v => (float)v).ToArray(), [values.Count]));
        ctx.Output.Json("sensitivity", new { of = o.Of!.Id, radius = o.Radius, samples = o.Samples, norm = "fro", inputs = ids.Select((id, i) => new { id, sensitivity = values[i] }).ToArray() });
        writer.Stat("sensitivity", values, higherIsBetter: false);
    }

    /// <inheritdoc/>
    protected override void MergeDetails(IShardMerge merge)
    {
        merge.Rows("sensitivity");
        merge.Concat("sensitivity", "inputs");
    }
}

/// <summary>The loop both noise metrics share: per batch, seeded generators per input id (shards draw the same noise as
/// a whole run), one value per input from <c>perBatch</c>, collected with the ids in order.</summary>
static class NoisyInputs
{
    public static (List<string> Ids, List<double> Values) PerInput(IAnalysisContext ctx, Func<InputBatch, Generator[], double[]> perBatch)
    {
        var ids = new List<string>();
        var values = new List<double>();
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            var gens = InputSeeds.Generators(ctx.Seed, batch.Ids)!;
            try { values.AddRange(perBatch(batch, gens)); }
            finally { foreach (var g in gens) g.Dispose(); }
            ids.AddRange(batch.Ids);
        }
        return (ids, values);
    }
}
