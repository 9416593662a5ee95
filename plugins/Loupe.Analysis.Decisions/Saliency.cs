using System.ComponentModel;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>How a per-channel gradient map becomes the saved map.</summary>
public enum ChannelReduce
{
    /// <summary>Keep every channel, N×C×H×W (Captum <c>Saliency</c>).</summary>
    None,
    /// <summary>Maximum over colour channels, N×H×W (Simonyan et al. 2014, §3.1).</summary>
    Max,
}

/// <summary>Options of <c>saliency</c>.</summary>
public sealed record SaliencyOptions
{
    /// <summary>Absolute value of the gradient.</summary>
    [Description("take |∂y/∂x| (Captum's default, abs=True)")]
    public bool Abs { get; init; } = true;
    /// <summary>Channel reduction.</summary>
    [Description("none: per-channel map as Captum; max: max over channels as the paper")]
    public ChannelReduce Reduce { get; init; } = ChannelReduce.None;
}

/// <summary>Saliency (Simonyan et al. 2014): the gradient of the target score w.r.t. the input, one backward pass per batch.</summary>
public sealed class Saliency : AttributionAnalysis<SaliencyOptions>
{
    /// <inheritdoc/>
    protected override OverlayStyle? DefaultOverlay => OverlayStyle.Gradient;
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Gradients) { HandlesSideInputs = true };
    /// <inheritdoc/>
    public override string ArtifactName => "saliency";

    /// <inheritdoc/>
    public override AttributionResult Attribute(SaliencyOptions options, AttributionInput input)
    {
        var (g, side, selection) = Explain.InputGradients(input.Context, input.Input, null, input.Selection, input.Slot);
        // §3.1 of arxiv 1312.6034: M_ij = max_c |w_h(i,j,c)|.
        var map = options.Reduce == ChannelReduce.Max ? g.abs().amax([1]) : options.Abs ? g.abs() : g;
        // Side inputs (Captum's tuple inputs): |∂y/∂s| per element (reduce: max applies to the image's colour channels only).
        var sideMaps = side.ToDictionary(kv => kv.Key, kv => options.Abs || options.Reduce == ChannelReduce.Max ? kv.Value.abs() : kv.Value);
        return new AttributionResult(map, selection) { Side = sideMaps.Count > 0 ? sideMaps : null };
    }
}

/// <summary>Gradient × input (Shrikumar et al. 2016; Captum <c>InputXGradient</c>): x ⊙ ∂y/∂x, per channel.</summary>
public sealed class GradientXInput : AttributionAnalysis<NoOptions>
{
    /// <inheritdoc/>
    protected override OverlayStyle? DefaultOverlay => OverlayStyle.Gradient;
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Gradients) { HandlesSideInputs = true };
    /// <inheritdoc/>
    public override string ArtifactName => "gradient-x-input";

    /// <inheritdoc/>
    public override AttributionResult Attribute(NoOptions options, AttributionInput input)
    {
        var active = SideInputs.Of(input.Context.Model)?.Active;
        var (g, side, selection) = Explain.InputGradients(input.Context, input.Input, null, input.Selection, input.Slot);
        var sideMaps = side.ToDictionary(kv => kv.Key, kv => kv.Value * active![kv.Key]);
        return new AttributionResult(g * input.Input, selection) { Side = sideMaps.Count > 0 ? sideMaps : null };
    }
}

/// <summary>Base of the modified-ReLU gradient methods: the input gradient with every ReLU's backward replaced.</summary>
public abstract class ReluRuleGradient : AttributionAnalysis<NoOptions>
{
    /// <inheritdoc/>
    protected override OverlayStyle? DefaultOverlay => OverlayStyle.Gradient;
    /// <summary>The ReLU backward rule.</summary>
    protected abstract ReluRule Rule { get; }
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Gradients | ModelCapabilities.ReluOverride);

    /// <inheritdoc/>
    public override AttributionResult Attribute(NoOptions options, AttributionInput input)
    {
        var model = (IModelInterventions)input.Context.Model;
        using var _ = model.OverrideRelu(Rule);
        var (g, selection) = Explain.InputGradient(input.Context, input.Input, input.Selection, input.Slot);
        return new AttributionResult(g, selection);
    }
}

/// <summary>Guided backprop (Springenberg et al. 2015; Captum <c>GuidedBackprop</c>): at every ReLU the gradient passes
/// only where the forward input &gt; 0 and the incoming gradient &gt; 0. Signed map, per channel.</summary>
public sealed class GuidedBackprop : ReluRuleGradient
{
    /// <inheritdoc/>
    protected override ReluRule Rule => ReluRule.Guided;
    /// <inheritdoc/>
    public override string ArtifactName => "guided-backprop";
}

/// <summary>DeconvNet (Zeiler &amp; Fergus 2014; Captum <c>Deconvolution</c>): at every ReLU the backward pass is
/// relu(incoming gradient), whatever the forward input was. Signed map, per channel.</summary>
public sealed class Deconvnet : ReluRuleGradient
{
    /// <inheritdoc/>
    protected override ReluRule Rule => ReluRule.Deconvnet;
    /// <inheritdoc/>
    public override string ArtifactName => "deconvnet";
}
