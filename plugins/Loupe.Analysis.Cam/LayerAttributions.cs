using System.ComponentModel;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Cam;

/// <summary>Options of <c>layer-activation</c>.</summary>
public sealed record LayerAttributionOptions : IAttributesToLayerInput
{
    /// <summary>The layer.</summary>
    [LayerName, System.ComponentModel.DataAnnotations.Required, Description("layer whose output is attributed (any layer with a tensor output)")]
    public string? Layer { get; init; }
    /// <summary>The layer's input instead of its output.</summary>
    [Description(LayerInputs.Description)]
    public bool AttributeToLayerInput { get; init; }
}

/// <summary>Captum's layer attributions that keep every unit of a layer: the map of an input is the layer's K×h×w (or
/// any shape) output, saved raw at layer resolution; the overlay shows max_k |·| resized to the input.</summary>
public abstract class LayerAttribution : AttributionAnalysis<LayerAttributionOptions>
{
    /// <summary>True when the map needs ∂y/∂A.</summary>
    protected abstract bool UsesGradients { get; }

    /// <summary>The map of the layer from its activation A and (when <see cref="UsesGradients"/>) ∂y/∂A.</summary>
    protected abstract Tensor Map(Tensor activation, Tensor? gradient);

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations
        | (UsesGradients ? ModelCapabilities.Gradients : ModelCapabilities.None)) { HandlesSideInputs = true };   // one forward of the batch

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(LayerAttributionOptions options, AnalysisValidationContext context)
    {
        if (LayerInputs.Check(options.AttributeToLayerInput, context.Model) is { } e) yield return e;
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(LayerAttributionOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var layer = options.Layer!;
        var (_, capture, ti, selection) = Explain.Forward(ctx.Model, ctx.Target, input.Input, [layer], UsesGradients, options.AttributeToLayerInput, input.Selection, input.Slot);
        using (capture)
        {
            var a = capture[layer];
            var g = UsesGradients ? Explain.Gradient(ctx.Target, ti, selection, a) : null;
            var map = Map(a.detach(), g);
            return new AttributionResult(map.dim() == 4 ? map : map.reshape(map.shape[0], -1, 1, 1), selection);
        }
    }
}

/// <summary>Captum <c>LayerActivation</c>: the layer's output A itself (no target).</summary>
public sealed class LayerActivation : LayerAttribution
{
    /// <inheritdoc/>
    public override string ArtifactName => "layer-activation";
    /// <inheritdoc/>
    protected override bool UsesGradients => false;
    /// <inheritdoc/>
    protected override Tensor Map(Tensor activation, Tensor? gradient) => activation.clone();
}

/// <summary>Registers the layer attributions.</summary>
public sealed class LayerAttributionRegistrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) => services
        .AddLoupeAnalysis<LayerActivation>("layer-activation", "a layer's output for every input (Captum LayerActivation)");
    // layer-gradient-x-activation lives with the other layer attributions (Loupe.Analysis.Decisions, LayerAttribution.cs).
}
