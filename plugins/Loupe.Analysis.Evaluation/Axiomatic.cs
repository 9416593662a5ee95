using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Options of <c>completeness</c>.</summary>
public sealed record CompletenessOptions : PerturbOptions;

/// <summary>Options of <c>non-sensitivity</c>.</summary>
public sealed record NonSensitivityOptions : PerturbOptions
{
    /// <summary>Threshold.</summary>
    [Range(0.0, 1e6), Description("non-sensitivity: |a| < eps is a zero attribution and |Δf| < eps no change (Quantus: 1e-5)")]
    public double Eps { get; init; } = 1e-5;
    /// <summary>Features per step.</summary>
    [Range(1, int.MaxValue), Description("non-sensitivity: pixels replaced together (Quantus features_in_step: 1)")]
    public int FeaturesInStep { get; init; } = 1;
    /// <summary>What a feature is.</summary>
    [Description("pixels (the default: a pixel with all its channels, tested on the channel-summed map) or values (Quantus 0.6 on several channels: each channel value replaced alone and counted, a per-channel map used per channel, an H×W map copied to every channel)")]
    public FeatureUnit Features { get; init; }
}

/// <summary><c>completeness</c> (Sundararajan et al. 2017): attributions should sum to f(x) − f(x̄), x̄ the baseline
/// (Quantus: min, logits). The score is the relative gap |Σa − (f(x) − f(x̄))| / |f(x) − f(x̄)| of the map as given
/// (signed, summed over all its values, not normalised unless <c>normalise</c>/<c>abs</c> say so: Quantus normalises
/// by default), so 0 is complete. Quantus returns the bool Σa == Δf (exact float equality, which rarely holds); the
/// gap keeps the information. Lower is better.</summary>
public sealed class Completeness : QualityMetric<CompletenessOptions>
{
    /// <inheritdoc/>
    protected override bool HoldsSideInputs => true;

    /// <inheritdoc/>
    public override string Id => "completeness";
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(CompletenessOptions o, AnalysisValidationContext context) => o.FillOptionErrors(Fill.Min);

    /// <inheritdoc/>
    protected override double[] Score(CompletenessOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        bool softmax = o.Softmax ?? false;
        var a = b.Map.detach().to(ScalarType.Float64).reshape(b.N, -1);
        a = Normalisations.Rows(a, o.Normalise.Resolve(false), b.NormaliseGroup);
        if (o.Abs == true) a = a.abs();
        var sum = a.sum(1);
        var baseline = o.BaselineOf(b, Fill.Min);
        var delta = b.Clean(softmax) - b.Outputs(1, (_, _) => baseline.unsqueeze(1), softmax).squeeze(1);
        return ((sum - delta).abs() / delta.abs().clamp_min(1e-12)).ToArray<double>();
    }
}

/// <summary><c>non-sensitivity</c> (Nguyen &amp; Rodríguez Martínez 2020): pixels are replaced in groups (Quantus
/// features_in_step, default 1: each pixel alone; a group holds <c>features_in_step</c> consecutive pixels, in raster
/// order, of the same kind — zero or non-zero attribution — as Quantus groups them; baseline min, softmax); the score
/// counts the pixels where "zero attribution" (a &lt; eps of the channel-summed map, |·| and normalise_by_max by
/// default as Quantus's; with <c>abs: false</c> Quantus's signed test, so negative pixels count as zero) and "no effect"
/// (|Δf| &lt; eps when its group is replaced) disagree. One forward per group. Lower is better.</summary>
public sealed class NonSensitivity : QualityMetric<NonSensitivityOptions>
{
    /// <inheritdoc/>
    protected override bool HoldsSideInputs => true;

    /// <inheritdoc/>
    public override string Id => "non-sensitivity";
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;
    /// <inheritdoc/>
    protected override int? MicroBatch(NonSensitivityOptions options) => options.MicroBatch;

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(NonSensitivityOptions o, AnalysisValidationContext context) => o.FillOptionErrors(Fill.Min);

    /// <inheritdoc/>
    protected override double[] Score(NonSensitivityOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        bool softmax = o.Softmax ?? true;
        int fis = o.FeaturesInStep;
        var a = o.Features == FeatureUnit.Values ? b.ValueFeatures(o.Abs ?? true, o.Normalise.Resolve(true)) : b.Features(o.Abs ?? true, o.Normalise.Resolve(true));
        var zero = a < o.Eps;                                                           // N×D (or N×C·D)
        // Group of each pixel: zero-attribution pixels first (rank among them / fis), then the others.
        var zl = zero.to(ScalarType.Int64);
        var rankZero = zl.cumsum(1) - 1;
        var rankOther = (1 - zl).cumsum(1) - 1;
        var zeroGroups = (zl.sum(1, keepdim: true) + fis - 1).div(fis, rounding_mode: RoundingMode.floor);
        var group = where(zero, rankZero.div(fis, rounding_mode: RoundingMode.floor), zeroGroups + rankOther.div(fis, rounding_mode: RoundingMode.floor));
        long groups = group.max().item<long>() + 1;
        var baseline = b.PerStep(o.FillOf(Fill.Min), o.BaselineOf(b, Fill.Min), group, groups, o.UniformLow, o.UniformHigh);
        var f = b.Outputs(groups, (k0, k) => b.Replace(group.unsqueeze(1) == arange(k0, k0 + k).view(1, k, 1), baseline), softmax);
        var noEffect = (b.Clean(softmax).unsqueeze(1) - f.gather(1, group)).abs() < o.Eps;   // per pixel: its group's output
        return (noEffect ^ zero).sum(1).to(ScalarType.Float64).ToArray<double>();
    }
}

/// <summary>Options of <c>input-invariance</c>.</summary>
public sealed record InputInvarianceOptions : NormalisedMetricOptions
{
    /// <summary>Shift.</summary>
    [Range(-1e6, 1e6), Description("constant added to every input value, in normalised units (Quantus input_shift: −1)")]
    public double Shift { get; init; } = -1;
    /// <summary>First layer.</summary>
    [LayerName, Description("the layer that reads the input and is affine in it (conv or linear), whose output is corrected for the shift (default: the model's first layer)")]
    public string? Layer { get; init; }
    /// <summary>Absolute values.</summary>
    [Description("take |·| of both maps, after normalise (Quantus abs: false)")]
    public bool Abs { get; init; }
    /// <summary>Normalise.</summary>
    [Description("rescale both maps, each over all its values: false (Quantus's default), true (by max |·|), or " + Normalisations.Functions)]
    public Normalisation Normalise { get; init; }
}

/// <summary><c>input-invariance</c> (Kindermans et al. 2017; Quantus InputInvariance): a second model that sees
/// x + s but whose first layer subtracts L(s·1) − L(0) (exact for an affine first layer, padding included) computes the
/// same function as the original; an invariant method gives it the same map for x + s. The score is the relative
/// change ‖R'(x + s) − R(x)‖₁ / ‖R(x)‖₁ of the map as given (0: invariant; Quantus returns whether every value is
/// exactly equal). Gradients are invariant; gradient × input is not. Needs model interventions. Lower is better.</summary>
public sealed class InputInvariance : QualityMetric<InputInvarianceOptions>
{
    /// <inheritdoc/>
    protected override string? ExplainsAgain(InputInvarianceOptions options) => "the shifted inputs on a compensated model";

    /// <inheritdoc/>
    public override string Id => "input-invariance";
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Interventions) { HandlesSideInputs = true };   // the shifted batch, and probes of its first input

    /// <inheritdoc/>
    protected override double[] Score(InputInvarianceOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        var ctx = b.Context;
        var iv = ctx.Model as IModelInterventions ?? throw new LoupeException("input-invariance: the model does not support interventions");
        var x = b.X;
        var s = (float)o.Shift;
        var probe = x.narrow(0, 0, 1);
        var layer = o.Layer ?? FirstLayer(ctx, probe, b.Selection);
        Tensor First(Tensor input)
        {
            using var _ = no_grad();
            var rows = Enumerable.Repeat(0, (int)input.shape[0]).ToArray();
            using var held = SideInputs.ForRows(ctx.Model, rows);   // the probe is the first input's: its side inputs
            var (_, capture, _, _) = Explain.Forward(ctx.Model, ctx.Target, input, [layer], forGradients: false, b.Selection.Rows(rows));
            using (capture) return capture[layer].detach().clone();
        }
        var delta = First(full_like(probe, s)) - First(zeros_like(probe));
        var check = First(probe + s) - First(probe) - delta;
        double err = check.abs().max().item<float>(), scale = delta.abs().max().item<float>() + 1e-12;
        if (err > 1e-3 * scale + 1e-5)
            throw new LoupeException($"input-invariance: layer '{layer}' is not affine in the input (shifting the input changes its output by more than a constant); set 'layer' to the first convolution or linear layer");
        Tensor Flat(Tensor map)
        {
            var f = Normalisations.Rows(map.detach().to(ScalarType.Float64).reshape(b.N, -1), o.Normalise.Resolve(), b.NormaliseGroup);
            return o.Abs ? f.abs() : f;
        }
        var reference = Flat(b.Map);
        Tensor shifted;
        using (iv.Intervene(layer, t => t - delta.to(t.dtype)))
            shifted = Flat(LinkedMaps(o, ctx, x + s, null, b.Selection, b.Batch.Ids).Map);
        return ((shifted - reference).abs().sum(1) / reference.abs().sum(1).clamp_min(1e-300)).ToArray<double>();
    }

    /// <summary>Layers looked at for the default first layer.</summary>
    const int FirstCandidates = 32;

    /// <summary>The model's first layer that computes on the image: of its first <see cref="FirstCandidates"/> listed
    /// layers (aliases and containers aside), the first whose output is a floating-point tensor with one row per input
    /// — an exported graph lists its shape computations (Shape, Gather: integers) before the first convolution.</summary>
    static string FirstLayer(IAnalysisContext ctx, Tensor probe, TargetSelection selection)
    {
        var candidates = ctx.Model.Layers.Where(l => l.AliasOf is null && l.Kind is not ("Sequential" or "ModuleList" or "ModuleDict"))
            .Take(FirstCandidates).Select(l => l.Name).ToList();
        if (candidates.Count == 0) throw new LoupeException("input-invariance: the model lists no layers");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var two = cat([probe, probe]);   // two rows: a layer's output has them, a shape or an index does not
        using var held = SideInputs.ForRows(ctx.Model, [0, 0]);
        var (_, capture, _, _) = Explain.Forward(ctx.Model, ctx.Target, two, candidates, forGradients: false, selection.Rows([0, 0]));
        using (capture)
            foreach (var l in candidates)
                if (capture[l] is { } t && t.is_floating_point() && t.dim() >= 2 && t.shape[0] == 2) return l;
        throw new LoupeException($"input-invariance: none of the model's first {candidates.Count} layers outputs a tensor per input; set 'layer' to its first convolution or linear layer");
    }
}
