using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;

namespace Loupe.Analysis.Decisions;

/// <summary>Options of <c>beta-smooth</c>.</summary>
public sealed record BetaSmoothOptions
{
    /// <summary>The wrapped attribution step.</summary>
    [Required, Description("the gradient method whose ReLU gradients are smoothed: { uses: saliency, with: { ... } } (or gradient-x-input, integrated-gradients, grad-cam, noise-tunnel, …)")]
    public StepReference? Inner { get; init; }
    /// <summary>β.</summary>
    [Range(1e-6, 1e6), Description("β of the softplus whose derivative sigmoid(β·x) replaces each ReLU's step in the backward pass (Zennit's beta_smooth, default 10); large β tends to the plain gradient")]
    public double Beta { get; init; } = 10;
}

/// <summary>β-smoothed gradients (Dombrowski et al. 2019, "Explanations can be manipulated and geometry is to blame";
/// Zennit's BetaSmooth composite, ReLUBetaSmooth on every ReLU): the inner method runs with every ReLU of the model
/// back-propagating the incoming gradient times sigmoid(β·x), x the ReLU's input — the derivative of softplus_β — in
/// place of the step x &gt; 0. The forward pass, and so the target, is unchanged; only gradients change. Needs a backend
/// that can replace ReLU backward rules (<c>torchvision</c>: every ReLU module and the ReLU that ends a residual block;
/// <c>onnx</c>: every Relu node).</summary>
public sealed class BetaSmooth : AttributionAnalysis<BetaSmoothOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Gradients | ModelCapabilities.ReluOverride);
    /// <inheritdoc/>
    public override string ArtifactName => "beta-smooth";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(BetaSmoothOptions options, AnalysisValidationContext context)
    {
        if (context.Referenced(options.Inner)?.Analysis is not { } inner) yield break;
        if (inner is not IAttribution)
            yield return $"inner step '{options.Inner!.Uses}' is not an attribution method (it must produce one map per input, like saliency or integrated-gradients)";
        else if (inner is BetaSmooth)
            yield return "beta-smooth cannot wrap another beta-smooth";
        else if (inner.Requirements.Capabilities.HasFlag(ModelCapabilities.ReluOverride))
            yield return $"inner step '{options.Inner!.Uses}' sets the ReLUs' backward rule itself (guided backprop, DeconvNet, DeepLift): it cannot also be β-smoothed";
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(BetaSmoothOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var innerStep = ctx.Referenced(options.Inner!);
        using (((IModelInterventions)ctx.Model).OverrideRelu(ReluRule.BetaSmooth, options.Beta))
            return ((IAttribution)innerStep.Analysis).Attribute(innerStep.Options, input);
    }
}
