using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Options of <c>layer-gradient-shap</c>.</summary>
public sealed record LayerGradientShapOptions : LayerOptions, IGradientShapDraws
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
    [FilePath, Description("a .npy float32 B×C×H×W set of baselines in normalised input space (the distribution of Captum's baselines); each sample draws one uniformly")]
    public string? BaselinesFile { get; init; }
    /// <summary>Draws from a file.</summary>
    [FilePath, Description("a .npy float32 S×(2 + C·H·W): per sample α ∈ [0,1], the baseline index, then standard-normal noise (× stdevs), or S×2 without noise; the same draws for every input (overrides samples and the seeded draws)")]
    public string? DrawsFile { get; init; }
    /// <summary>Blur σ for the blur baseline.</summary>
    [Range(0.1, 1000), Description("σ of the blur baseline, in pixels")]
    public double BlurSigma { get; init; } = 5;
    /// <summary>Captum's multiply_by_inputs.</summary>
    [Description("true: (A(x + ε) − A(b)) ⊙ the layer gradient (Captum's default); false: the averaged layer gradients")]
    public bool MultiplyByInputs { get; init; } = true;
    /// <summary>Points per backward pass.</summary>
    [Range(1, 100_000), Description("samples (× inputs) per forward/backward pass (default: as many as fill ~64 MiB of activations, at least 8, within settings.memory_budget_mb)")]
    public int? InternalBatchSize { get; init; }
}

/// <summary>Layer GradientSHAP (Captum <c>LayerGradientShap</c>): the expected gradients at a layer,
/// E[(A(x + ε) − A(b)) ⊙ ∂F/∂A at b + α (x + ε − b)] over the same draws as <c>gradient-shap</c> (baselines b from a
/// set, noise ε, α ~ U(0, 1); Captum's NoiseTunnel(LayerInputBaselineXGradient)).</summary>
public sealed class LayerGradientShap : LayerAttribution<LayerGradientShapOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "layer-gradient-shap";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(LayerGradientShapOptions options, AnalysisValidationContext context) =>
        base.Validate(options, context).Concat(Perturbation.CheckConstant(options.BaselineValue, "fill", context.Model.DefaultInput));

    /// <inheritdoc/>
    protected override Tensor LayerMap(LayerGradientShapOptions options, AttributionInput input, TargetSelection selection)
    {
        var ctx = input.Context;
        long n = input.Input.shape[0];
        Tensor? sum = null;
        long s = GradientShap.Samples(options, input, selection, (k, noisy, baseline, points, rows) =>
        {
            var (_, g) = LayerPaths.LayerGradient(ctx, options.Layer, points, rows, options.AttributeToLayerInput);
            var part = options.MultiplyByInputs
                ? (LayerPaths.Activation(ctx, options.Layer, noisy, options.AttributeToLayerInput) - LayerPaths.Activation(ctx, options.Layer, baseline, options.AttributeToLayerInput)) * g
                : g;
            var summed = part.view([n, k, .. part.shape.Skip(1)]).sum(1, keepdim: false);
            if (sum is null) sum = summed.MoveToOuterDisposeScope(); else sum.add_(summed);
        });
        return sum! / s;
    }
}
