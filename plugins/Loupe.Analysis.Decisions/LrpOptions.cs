using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Zennit's composites: which rule each layer gets, by type and position.</summary>
public enum LrpComposite
{
    /// <summary>z⁺ on convolutions, ε on dense layers.</summary>
    EpsilonPlus,
    /// <summary>z^B on the first convolution, γ on the other convolutions, ε on dense layers.</summary>
    EpsilonGammaBox,
    /// <summary>α2β1 on convolutions, ε on dense layers.</summary>
    EpsilonAlpha2Beta1,
    /// <summary>Flat on the first layer with weights (convolution or dense), z⁺ on convolutions, ε on dense layers.</summary>
    EpsilonPlusFlat,
    /// <summary>Flat on the first layer with weights, α2β1 on convolutions, ε on dense layers.</summary>
    EpsilonAlpha2Beta1Flat,
    /// <summary>One rule (<c>rule:</c>) on every convolution and dense layer.</summary>
    Uniform,
    /// <summary>Zennit's ExcitationBackprop (Zhang et al. 2016): z⁺ on every convolution and dense layer, proportional
    /// (Norm) pools and sums, and — unlike the other composites, whose activations pass relevance on — every
    /// activation and unmerged batch norm differentiated.</summary>
    ExcitationBackprop,
}

/// <summary>Whose conventions the map follows.</summary>
public enum LrpConvention
{
    /// <summary>Zennit: the target's output gradient (one-hot for a class logit) is the output relevance; rules from the composite.</summary>
    Zennit,
    /// <summary>Captum's <c>LRP</c> defaults: ε (1e-9) on convolutions, dense layers and pools, ReLUs passed, and the
    /// relevance scaled by the target's output (so it sums to about the logit).</summary>
    Captum,
}

/// <summary>Options of <c>lrp</c>.</summary>
public sealed record LrpOptions
{
    /// <summary>Composite.</summary>
    [Description("Zennit composite assigning rules per layer type and position: epsilon-plus (default), epsilon-gamma-box, epsilon-alpha2-beta1, epsilon-plus-flat, epsilon-alpha2-beta1-flat, excitation-backprop (z+ everywhere, activations differentiated), or uniform (rule: on every layer with weights)")]
    public LrpComposite? Composite { get; init; }
    /// <summary>Rule of composite: uniform.</summary>
    [Description("the rule of every convolution and dense layer (sets composite: uniform): epsilon, gamma, alpha1-beta0, alpha2-beta1, z-plus, z-box, flat or w-square")]
    public LrpRuleKind? Rule { get; init; }
    /// <summary>Rule of every convolution (a type map entry).</summary>
    [Description("the rule of every convolution, replacing the composite's (Zennit's TypeMapComposite entry for Convolution layers, e.g. gamma with composite epsilon-plus); first_rule and rules: still win")]
    public LrpRuleKind? ConvRule { get; init; }
    /// <summary>Rule of every dense layer (a type map entry).</summary>
    [Description("the rule of every dense (Linear) layer, replacing the composite's (Zennit's TypeMapComposite entry for Linear layers); first_rule and rules: still win")]
    public LrpRuleKind? DenseRule { get; init; }
    /// <summary>Rule of the first layer with weights.</summary>
    [Description("overrides the rule of the first layer with weights (e.g. z-box for pixels, flat, w-square)")]
    public LrpRuleKind? FirstRule { get; init; }
    /// <summary>Conventions.</summary>
    [Description("zennit (relevance 1 at the target; the composite's rules) or captum (Captum LRP's defaults: ε everywhere, relevance × the target's output)")]
    public LrpConvention Convention { get; init; } = LrpConvention.Zennit;
    /// <summary>ε.</summary>
    [Range(0, 1e6), Description("ε of the epsilon rule (default 1e-6, Zennit's; 1e-9 under convention: captum, also on pools)")]
    public double? Epsilon { get; init; }
    /// <summary>The composite's stabilizer.</summary>
    [Range(0, 1e6), Description("stabilizer of every rule other than epsilon and pass (Zennit's composite-wide stabilizer, default 1e-6; 1e-9 under convention: captum); a rules entry's own stabilizer wins")]
    public double? Stabilizer { get; init; }
    /// <summary>α of the alpha-beta rule.</summary>
    [Range(1, 1e6), Description("α of rule alpha-beta (Zennit's AlphaBeta, β = α − 1; default 2)")]
    public double? Alpha { get; init; }
    /// <summary>γ.</summary>
    [Range(0, 1e6), Description("γ of the gamma rule (Zennit's default 0.25)")]
    public double Gamma { get; init; } = 0.25;
    /// <summary>Rules per layer.</summary>
    [Description("rules for named layers, before the composite's (Zennit's NameMapComposite in a MixedComposite; Captum's layer.rule): a list of { layer: NAME, rule: RULE } with optional epsilon, gamma, stabilizer, zero_bias; NAME a convolution or dense layer (module path, e.g. features.0, or graph node name), or under convention: captum a batch norm or a pool (rule: epsilon). Rules: zennit: epsilon, gamma, alpha1-beta0, alpha2-beta1, z-plus, z-box, flat, w-square, pass; captum: epsilon, gamma, alpha1-beta0 (Captum's forms) and pass (IdentityRule)")]
    public LrpLayerRule[]? Rules { get; init; }
    /// <summary>Zennit's composite zero_params: ['bias'].</summary>
    [Description("every rule takes the layers' biases as zero (Zennit's composite zero_params=['bias']); per layer: rules' zero_bias")]
    public bool ZeroBias { get; init; }
    /// <summary>The layer whose relevance is the result (Captum's LayerLRP).</summary>
    [Description("keep the relevance at this layer instead of the input's (Captum's LayerLRP): a module path (the module's output) or graph node name; written as <id>.lrp-layer.npy (N×K×h×w), the map its channel sum resized to the input")]
    public string? Layer { get; init; }
    /// <summary>The layer's input relevance instead of its output's.</summary>
    [Description("with layer: the relevance the layer hands its input (Captum's attribute_to_layer_input=True; a layer of one operator with one input)")]
    public bool AttributeToLayerInput { get; init; }
    /// <summary>Inputs per propagation.</summary>
    [Range(1, 100_000), Description("inputs per forward and relevance pass (default: as many as fill ~64 MiB of activations, at least 8, within settings.memory_budget_mb; a batch above it is split, with the same maps)")]
    public int? InternalBatchSize { get; init; }
    /// <summary>Lowest pixel.</summary>
    [Description("z-box: lowest possible pixel value in [0,1] pixel space (normalised with the model's mean/std)")]
    public double Low { get; init; } = 0;
    /// <summary>Highest pixel.</summary>
    [Description("z-box: highest possible pixel value in pixel space")]
    public double High { get; init; } = 1;
    /// <summary>Lowest values per element.</summary>
    [FilePath, Description("z-box: the lowest value of every input element, a .npy C×H×W (or 1×C×H×W; C×1×1 per channel) in normalised input space, instead of low — Zennit's EpsilonGammaBox(low=tensor)")]
    public string? LowFile { get; init; }
    /// <summary>Highest values per element.</summary>
    [FilePath, Description("z-box: the highest value of every input element, as low_file — Zennit's EpsilonGammaBox(high=tensor)")]
    public string? HighFile { get; init; }
}

/// <summary>The rule of one named layer (<c>lrp</c>'s <c>rules:</c>).</summary>
public sealed record LrpLayerRule
{
    /// <summary>The layer.</summary>
    [Description("a convolution or dense layer (its module path, e.g. features.0, or its graph node name); a max pool with rule: takes-most (zennit); under convention: captum also a batch norm, or a max / average pool (rule: epsilon, Captum's EpsilonRule with its own epsilon)")]
    public string Layer { get; init; } = "";
    /// <summary>The rule.</summary>
    [Description("epsilon, gamma, alpha1-beta0, alpha2-beta1, alpha-beta (with alpha), z-plus, z-box, flat, w-square or pass (zennit), takes-most at a max pool (zennit); epsilon, gamma, alpha1-beta0 or pass (captum)")]
    public LrpRuleKind Rule { get; init; } = LrpRuleKind.Epsilon;
    /// <summary>ε of the epsilon rule.</summary>
    [Range(0, 1e6), Description("ε of the epsilon rule (default: lrp's epsilon)")]
    public double? Epsilon { get; init; }
    /// <summary>γ of the gamma rule.</summary>
    [Range(0, 1e6), Description("γ of the gamma rule (default: lrp's gamma)")]
    public double? Gamma { get; init; }
    /// <summary>α of the alpha-beta rule.</summary>
    [Range(1, 1e6), Description("α of the alpha-beta rule, β = α − 1 (default: lrp's alpha)")]
    public double? Alpha { get; init; }
    /// <summary>β of takes-most.</summary>
    [Range(0, 1e6), Description("β of the takes-most rule: the softmax's sharpness within each pooling window (Zennit's beta, default 1; large β gives all to the maximum)")]
    public double? Beta { get; init; }
    /// <summary>Stabiliser of the other rules.</summary>
    [Range(0, 1e6), Description("the stabiliser of a rule other than epsilon (Zennit's stabilizer, default 1e-6; Captum's 1e-9)")]
    public double? Stabilizer { get; init; }
    /// <summary>Bias taken as zero.</summary>
    [Description("the layer's bias taken as zero (Zennit's zero_params=['bias'], Captum's set_bias_to_zero)")]
    public bool ZeroBias { get; init; }
}
