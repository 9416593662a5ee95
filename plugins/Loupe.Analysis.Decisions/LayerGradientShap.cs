using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Options of <c>layer-gradient-shap</c>.</summary>
public sealed record LayerGradientShapOptions : GradientShapDraws, ILayerOptions
{
    /// <summary>Layer.</summary>
    [Required, LayerName, Description(LayerAttributions.LayerDescription)]
    public string Layer { get; init; } = "";
    /// <summary>The layer's input instead of its output.</summary>
    [Description(LayerInputs.Description)]
    public bool AttributeToLayerInput { get; init; }
    /// <summary>Captum's multiply_by_inputs.</summary>
    [Description("true: (A(x + ε) − A(b)) ⊙ the layer gradient (Captum's default); false: the averaged layer gradients")]
    public bool MultiplyByInputs { get; init; } = true;
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
