using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Options of <c>deeplift</c>.</summary>
public sealed record DeepLiftOptions
{
    /// <summary>Baseline.</summary>
    [Description("reference input x′: zero (normalised; Captum's default), black, mean or blur")]
    public Fill Baseline { get; init; } = Fill.Zero;
    /// <summary>Blur σ for the blur baseline.</summary>
    [Range(0.1, 1000), Description("σ of the blur baseline, in pixels")]
    public double BlurSigma { get; init; } = 5;
}

/// <summary>Options of <c>deeplift-shap</c>.</summary>
public sealed record DeepLiftShapOptions
{
    /// <summary>Baseline set.</summary>
    [Required, FilePath, Description("a .npy float32 B×C×H×W set of references in normalised input space (B ≥ 2); the map is the mean of DeepLift over them")]
    public string? BaselinesFile { get; init; }
    /// <summary>Pairs per pass.</summary>
    [Range(1, 100_000), Description("input × reference pairs per forward/backward pass (default: as many as settings.memory_budget_mb holds)")]
    public int? InternalBatchSize { get; init; }
}

/// <summary>DeepLift with the rescale rule (Shrikumar et al. 2017; Captum <c>DeepLift</c>): one forward of the batch
/// [x; x′], the target scores of both halves summed (Captum's main-model hook keeps both), every ReLU and max pool back-propagating Δout/Δin multipliers (Captum's <c>nonlinear</c> and
/// <c>maxpool</c> rules; linear layers keep their gradients), and attribution (x − x′) ⊙ multipliers. Its sum is
/// F(x) − F(x′) (summation to delta). Needs the ReLU override of the torchvision backend.</summary>
public sealed class DeepLift : AttributionAnalysis<DeepLiftOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Gradients | ModelCapabilities.ReluOverride);
    /// <inheritdoc/>
    public override string ArtifactName => "deeplift";

    /// <summary>Multipliers × (x − x′) for rows of inputs and references (same count).</summary>
    public static Tensor Attribute(IAnalysisContext ctx, Tensor x, Tensor reference, TargetSelection selection, int slot)
    {
        using var scope = NewDisposeScope();
        long n = x.shape[0];
        var both = cat([x, reference], 0).detach().requires_grad_(true);
        var rows = Enumerable.Range(0, (int)n).Concat(Enumerable.Range(0, (int)n)).ToArray();
        Tensor g;
        using (((IModelInterventions)ctx.Model).OverrideRelu(ReluRule.Rescale))
        {
            var sel = selection.Rows(rows);
            var (_, capture, ti, _) = Explain.Forward(ctx.Model, ctx.Target, both, [], forGradients: false, sel, slot);
            using (capture)
            {
                var score = ctx.Target.Scores(ti, sel).sum();                       // both halves, as Captum's forward hook
                g = autograd.grad([score], [both])[0].narrow(0, 0, n);
            }
        }
        return scope.MoveToOuter((x - reference) * g);
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(DeepLiftOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var (_, _, selection) = Explain.Scores(ctx, input.Input, input.Selection, input.Slot);
        var reference = Perturbation.Baseline(input.Input, options.Baseline, options.BlurSigma, ctx.Input);
        return new AttributionResult(Attribute(ctx, input.Input, reference, selection, input.Slot), selection);
    }
}

/// <summary>DeepLiftShap (Lundberg &amp; Lee 2017; Captum <c>DeepLiftShap</c>): DeepLift of each input against every
/// reference of a set, averaged over the references (pairs batched).</summary>
public sealed class DeepLiftShap : AttributionAnalysis<DeepLiftShapOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Gradients | ModelCapabilities.ReluOverride);
    /// <inheritdoc/>
    public override string ArtifactName => "deeplift-shap";

    /// <inheritdoc/>
    public override AttributionResult Attribute(DeepLiftShapOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0];
        var refs = Npy.Read(options.BaselinesFile!).ToTensor();
        if (refs.dim() != 4 || refs.shape[0] < 2 || refs.shape[1] != x.shape[1] || refs.shape[2] != x.shape[2] || refs.shape[3] != x.shape[3])
            throw new LoupeException($"{options.BaselinesFile}: baselines_file must be B×{x.shape[1]}×{x.shape[2]}×{x.shape[3]} with B ≥ 2 (a single reference: use deeplift); it is {string.Join("×", refs.shape)}");
        long b = refs.shape[0];
        var (_, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        // Pair p = i·B + j: input i with reference j (Captum's repeat_interleave / repeat order).
        long perPass = Math.Max(1, Explain.CopiesPerForward(ctx, x, options.InternalBatchSize, gradients: true) / 2);
        var parts = new List<Tensor>();
        for (long p0 = 0; p0 < n * b; p0 += perPass)
        {
            using var chunk = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            long k = Math.Min(perPass, n * b - p0);
            var pairs = arange(p0, p0 + k);
            var xi = x.index_select(0, pairs.div(b, rounding_mode: RoundingMode.floor));
            var ri = refs.index_select(0, pairs.remainder(b));
            var sel = selection.Rows(Enumerable.Range((int)p0, (int)k).Select(p => (int)(p / b)).ToArray());
            parts.Add(chunk.MoveToOuter(DeepLift.Attribute(ctx, xi, ri, sel, input.Slot)));
        }
        var all = cat(parts, 0);
        return new AttributionResult(all.view([n, b, .. x.shape.Skip(1)]).mean([1]), selection);
    }
}
