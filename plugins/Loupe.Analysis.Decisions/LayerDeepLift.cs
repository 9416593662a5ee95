using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Options of <c>layer-deeplift</c>.</summary>
public sealed record LayerDeepLiftOptions : DeepLiftReference, ILayerOptions
{
    /// <summary>Layer.</summary>
    [Required, LayerName, Description(LayerAttributions.LayerDescription)]
    public string Layer { get; init; } = "";
    /// <summary>The layer's input instead of its output.</summary>
    [Description(LayerInputs.Description)]
    public bool AttributeToLayerInput { get; init; }
    /// <summary>Captum's multiply_by_inputs.</summary>
    [Description("true: (A(x) − A(x′)) ⊙ the layer's multipliers (Captum's default); false: the multipliers alone")]
    public bool MultiplyByInputs { get; init; } = true;
    /// <summary>DeepLift's eps.</summary>
    [Range(0.0, 1e6), Description(DeepLift.EpsDescription)]
    public double Eps { get; init; } = Rescale.DefaultEpsilon;
}

/// <summary>Options of <c>layer-deeplift-shap</c>.</summary>
public sealed record LayerDeepLiftShapOptions : DeepLiftReferences, ILayerOptions
{
    /// <summary>Layer.</summary>
    [Required, LayerName, Description(LayerAttributions.LayerDescription)]
    public string Layer { get; init; } = "";
    /// <summary>The layer's input instead of its output.</summary>
    [Description(LayerInputs.Description)]
    public bool AttributeToLayerInput { get; init; }
    /// <summary>Captum's multiply_by_inputs.</summary>
    [Description("true: (A(x) − A(x′)) ⊙ the layer's multipliers (Captum's default); false: the multipliers alone")]
    public bool MultiplyByInputs { get; init; } = true;
}

/// <summary>Layer DeepLift (Captum <c>LayerDeepLift</c>): DeepLift's rescale rule from the output down to a layer, one
/// forward of [x; x′] with both halves' target scores (as <c>deeplift</c>), and attribution (A(x) − A(x′)) ⊙ ∂*F/∂A,
/// the multipliers at the layer's output (or input). Its sum over the layer is F(x) − F(x′) when the layer cuts every
/// path from the input (summation to delta).</summary>
public sealed class LayerDeepLift : LayerAttribution<LayerDeepLiftOptions>, ITakesBaseline
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations | ModelCapabilities.Gradients | ModelCapabilities.ReluOverride);
    /// <inheritdoc/>
    public override string ArtifactName => "layer-deeplift";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(LayerDeepLiftOptions options, AnalysisValidationContext context) =>
        base.Validate(options, context).Concat(options.Errors(context.Model));

    /// <inheritdoc/>
    protected override Tensor LayerMap(LayerDeepLiftOptions options, AttributionInput input, TargetSelection selection) =>
        At(input.Context, options.Layer, options.AttributeToLayerInput, input.Input, options.Of(input), selection, options.MultiplyByInputs, options.Eps);

    /// <summary>(A(x) − A(x′)) ⊙ multipliers at <paramref name="layer"/> (or the multipliers alone) for rows of inputs
    /// and references (same count), explaining <paramref name="selection"/>.</summary>
    public static Tensor At(IAnalysisContext ctx, string layer, bool layerInput, Tensor x, Tensor reference, TargetSelection selection, bool multiplyByInputs, double eps = Rescale.DefaultEpsilon)
    {
        using var scope = NewDisposeScope();
        using var threshold = Rescale.WithEpsilon(eps);
        int n = (int)x.shape[0];
        var half = Enumerable.Range(0, n).ToArray();
        var rows = selection.Rows(half.Concat(half).ToArray());
        // A layer's input is captured before the rescale rule is installed, its output after: the rule's hooks on a
        // ReLU take its input and replace its output, so the capture must see the input first and the output last.
        using var inputs = layerInput ? LayerInputs.Of(ctx.Model, "attribute_to_layer_input").CaptureInputs([layer], forGradients: true) : null;
        using (((IModelInterventions)ctx.Model).OverrideRelu(ReluRule.Rescale))
        {
            var (_, capture, ti, _) = Explain.Forward(ctx.Model, ctx.Target, cat([x, reference], 0).detach(), layerInput ? [] : [layer], forGradients: true, rows);
            using (capture)
            {
                var a = inputs is not null ? inputs[layer] : capture[layer];
                var g = Explain.Gradient(ctx.Target, ti, rows, a).narrow(0, 0, n);   // both halves' scores, as Captum's hook
                var ad = a.detach();
                return scope.MoveToOuter(multiplyByInputs ? (ad.narrow(0, 0, n) - ad.narrow(0, n, n)) * g : g);
            }
        }
    }
}

/// <summary>Layer DeepLiftShap (Captum <c>LayerDeepLiftShap</c>): <c>layer-deeplift</c> of each input against every
/// reference of a set (a file, or drawn from the data source), averaged over the references (pairs batched).</summary>
public sealed class LayerDeepLiftShap : LayerAttribution<LayerDeepLiftShapOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations | ModelCapabilities.Gradients | ModelCapabilities.ReluOverride);
    /// <inheritdoc/>
    public override string ArtifactName => "layer-deeplift-shap";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(LayerDeepLiftShapOptions options, AnalysisValidationContext context) =>
        base.Validate(options, context).Concat(DeepLiftShap.ReferenceErrors(options));

    /// <inheritdoc/>
    protected override Tensor LayerMap(LayerDeepLiftShapOptions options, AttributionInput input, TargetSelection selection) =>
        DeepLiftShap.OverReferences(options, input.Context, input.Input, selection,
            (xi, ri, sel) => LayerDeepLift.At(input.Context, options.Layer, options.AttributeToLayerInput, xi, ri, sel, options.MultiplyByInputs));
}
