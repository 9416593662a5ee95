using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Options of <c>infidelity</c>.</summary>
public sealed record InfidelityOptions : MetricOptions
{
    /// <summary>Perturbations.</summary>
    [Range(1, 100_000), Description("Gaussian perturbations per input (Captum n_perturb_samples: 10)")]
    public int Samples { get; init; } = 10;
    /// <summary>σ.</summary>
    [Range(0.0, 1000.0), Description("σ of the perturbation I ~ N(0, σ²), in normalised input units")]
    public double Sigma { get; init; } = 0.1;
    /// <summary>Copies per forward.</summary>
    [Range(1, 100_000), Description("perturbed copies per forward pass (default: within 64 RGB 224² images)")]
    public int? MicroBatch { get; init; }
}

/// <summary>Infidelity (Yeh et al. 2019; Captum <c>infidelity</c> with <c>normalize=False</c>, its default):
/// INFD = E_I[(Iᵀ Φ − (f(x) − f(x − I)))²] with I ~ N(0, σ²) per input element (seeded), f the target score (the class
/// logit for class targets, as the attribution methods explain), Φ the linked step's map as is (signed; an N×H×W map
/// is broadcast over channels). Lower is better. Note: <c>saliency</c> with its default <c>abs: true</c> has no sign,
/// so its infidelity is large by construction.</summary>
public sealed class Infidelity : MetricAnalysis<InfidelityOptions>, IShardable
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    /// <inheritdoc/>
    public override IReadOnlyList<string> MetricNames => ["infidelity_mean", "infidelity_std"];

    /// <inheritdoc/>
    protected override void Evaluate(InfidelityOptions o, IAnalysisContext ctx, MetricWriter writer)
    {
        var (ids, values) = NoisyInputs.PerInput(ctx, (batch, gens) =>
        {
            var x = batch.Input;
            long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
            var result = LinkedMaps(o, ctx, x, batch.Ids);
            var phi = result.Map.detach().to(ScalarType.Float32);
            if (phi.dim() == 3) phi = phi.unsqueeze(1);
            if (phi.shape[2] != h || phi.shape[3] != w)
                throw new LoupeException($"the maps of '{o.Of!.Id}' have shape ({string.Join("×", result.Map.shape)}), not the input's {h}×{w}: infidelity needs input-resolution maps");
            phi = phi.expand(n, c, h, w);
            var (fx, _, sel) = Explain.Scores(ctx, x, result.Selection, 0);
            long chunk = Math.Max(1, Explain.CopiesPerForward(ctx, x, o.MicroBatch) / n);
            var sum = zeros(n, dtype: ScalarType.Float64);
            for (long s0 = 0; s0 < o.Samples; s0 += chunk)
            {
                using var inner = NewDisposeScope();
                ctx.Cancellation.ThrowIfCancellationRequested();
                long k = Math.Min(chunk, o.Samples - s0);
                var noise = InputSeeds.Randn(gens, [k, c, h, w]).transpose(0, 1) * (float)o.Sigma;   // n×k×c×h×w
                var copies = (x.unsqueeze(1) - noise).reshape(n * k, c, h, w);
                var rows = Enumerable.Range(0, (int)n).SelectMany(i => Enumerable.Repeat(i, (int)k)).ToArray();
                var (fxi, _, _) = Explain.Scores(ctx, copies, sel.Rows(rows), 0);
                var dot = (noise * phi.unsqueeze(1)).sum([2, 3, 4]);                     // n×k
                var err = dot.to(ScalarType.Float64) - (fx.unsqueeze(1) - fxi.view(n, k)).to(ScalarType.Float64);
                sum = inner.MoveToOuter(sum + (err * err).sum(1));
            }
            return (sum / o.Samples).ToArray<double>();
        });
        ctx.Output.Raw("infidelity", null, new NdArray(values.Select(v => (float)v).ToArray(), [values.Count]));
        ctx.Output.Json("infidelity", new { of = o.Of!.Id, sigma = o.Sigma, samples = o.Samples, normalize = false, inputs = ids.Select((id, i) => new { id, infidelity = values[i] }).ToArray() });
        writer.Stat("infidelity", values, higherIsBetter: false);
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
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    /// <inheritdoc/>
    public override IReadOnlyList<string> MetricNames => ["sensitivity_mean", "sensitivity_std"];

    /// <inheritdoc/>
    protected override void Evaluate(SensitivityOptions o, IAnalysisContext ctx, MetricWriter writer)
    {
        var (ids, values) = NoisyInputs.PerInput(ctx, (batch, gens) =>
        {
            var x = batch.Input;
            long n = x.shape[0];
            var result = LinkedMaps(o, ctx, x, batch.Ids);
            var phi = result.Map.detach().to(ScalarType.Float64).reshape(n, -1);
            var norm = phi.norm(1).clamp_min(1e-30);
            var worst = zeros(n, dtype: ScalarType.Float64);
            for (int s = 0; s < o.Samples; s++)
            {
                using var inner = NewDisposeScope();
                ctx.Cancellation.ThrowIfCancellationRequested();
                var delta = (InputSeeds.Rand(gens, [1, .. x.shape.Skip(1)]).squeeze(0) * 2 - 1) * (float)o.Radius;
                var m = LinkedMaps(o, ctx, x + delta, null, result.Selection).Map.detach().to(ScalarType.Float64).reshape(n, -1);
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
