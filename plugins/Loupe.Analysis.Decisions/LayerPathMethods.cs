using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Decisions;

/// <summary>Layer integrated gradients (Captum <c>LayerIntegratedGradients</c>): the path runs in the layer's space —
/// the layer's output (or, with attribute_to_layer_input, its input) is replaced by A(x′) + αᵢ (A(x) − A(x′)) — and the result is (A(x) − A(x′)) ⊙ Σᵢ wᵢ ∂F/∂A there
/// (Σᵢ wᵢ ∂F/∂A alone with multiply_by_inputs = false). Any layer shape, as Captum's.
/// Needs layer interventions (the torchvision and onnx backends have them).</summary>
public sealed class LayerIntegratedGradients : LayerAttribution<LayerIntegratedGradientsOptions>, ITakesBaseline
{
    /// <inheritdoc/>
    public override string ArtifactName => "layer-integrated-gradients";
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(base.Requirements.Capabilities | ModelCapabilities.Interventions);

    /// <inheritdoc/>
    protected override Tensor LayerMap(LayerIntegratedGradientsOptions options, AttributionInput input, TargetSelection selection)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0];
        Tensor Act(Tensor inp)
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var (_, capture, _, _) = Explain.Forward(ctx.Model, ctx.Target, inp, [options.Layer], forGradients: false, options.AttributeToLayerInput, selection);
            using (capture) return scope.MoveToOuter(capture[options.Layer].clone());
        }
        var end = Act(x);
        var start = Act(LayerPaths.Baseline(options, input));
        var delta = end - start;
        var (alphas, weights) = IntegratedGradients.Rule(options.Method, options.Steps);
        var sum = zeros_like(end);
        long perPass = Math.Max(1, Explain.CopiesPerForward(ctx, x, options.InternalBatchSize, gradients: true) / n);
        for (int s0 = 0; s0 < alphas.Length; s0 += (int)perPass)
        {
            using var chunk = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            int k = (int)Math.Min(perPass, alphas.Length - s0);
            var shape = new long[] { k, 1 }.Concat(Enumerable.Repeat(1L, (int)end.dim() - 1)).ToArray();
            var a = tensor(alphas.Skip(s0).Take(k).Select(v => (float)v).ToArray()).view(shape);
            var scaled = (start.unsqueeze(0) + a * delta.unsqueeze(0)).reshape([k * n, .. end.shape.Skip(1)]).detach().requires_grad_(true);
            var sel = selection.Rows(Enumerable.Range(0, k).SelectMany(_ => Enumerable.Range(0, (int)n)).ToArray());
            Tensor g;
            using (LayerInputs.Intervene(ctx.Model, options.Layer, options.AttributeToLayerInput, _ => scaled, ArtifactName))
            {
                var (_, capture, ti, _) = Explain.Forward(ctx.Model, ctx.Target, x.repeat(k, 1, 1, 1), [], forGradients: false, sel);
                using (capture) g = Explain.Gradient(ctx.Target, ti, sel, scaled);
            }
            var w = tensor(weights.Skip(s0).Take(k).Select(v => (float)v).ToArray()).view(shape);
            sum.add_((g.view([k, n, .. end.shape.Skip(1)]) * w).sum(0, keepdim: false));
        }
        return options.MultiplyByInputs ? delta * sum : sum;
    }
}

/// <summary>Options of <c>layer-integrated-gradients</c>.</summary>
public sealed record LayerIntegratedGradientsOptions : LayerPathOptions
{
    /// <summary>Captum's multiply_by_inputs.</summary>
    [Description("(A(x) − A(x′)) ⊙ the integrated layer gradient (true, Captum's default) or the integrated gradient alone (false: Captum's multiply_by_inputs=False)")]
    public bool MultiplyByInputs { get; init; } = true;
}

/// <summary>Options of <c>neuron-conductance</c>.</summary>
public sealed record NeuronConductanceOptions : LayerPathOptions
{
    /// <summary>Captum's NeuronConductance integrates with riemann_trapezoid by default (its layer methods with
    /// gausslegendre); until 2026-12-05 neuron-conductance took Gauss–Legendre, 0.98× Captum's default at 50 steps for
    /// a gradient that is constant along the path (the trapezoid's weights sum to (n − 1)/n).</summary>
    public NeuronConductanceOptions() => Method = IntegrationRule.RiemannTrapezoid;

    /// <summary>Neuron index.</summary>
    [Required, Description("the neuron of the layer's output, one index per dim after the batch (Captum's neuron_selector as a tuple): [channel, y, x] of an N×K×h×w layer, [token, channel] of N×T×C, [unit] of N×K")]
    public int[]? Neuron { get; init; }
    /// <summary>Captum's multiply_by_inputs.</summary>
    [Description("(x − x′) ⊙ the integrated gradient through the neuron (true, Captum's default) or the integrated gradient alone (false: Captum's multiply_by_inputs=False)")]
    public bool MultiplyByInputs { get; init; } = true;
}

/// <summary>Neuron conductance (Dhamdhere et al. 2018; Captum <c>NeuronConductance</c>): how much each input pixel
/// contributes to the target through one neuron n of a layer, (x − x′) ⊙ Σᵢ wᵢ (∂F/∂Aₙ · ∂Aₙ/∂x)(x′ + αᵢ (x − x′)).</summary>
public sealed class NeuronConductance : AttributionAnalysis<NeuronConductanceOptions>, ITakesBaseline
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations | ModelCapabilities.Gradients);
    /// <inheritdoc/>
    public override string ArtifactName => "neuron-conductance";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(NeuronConductanceOptions options, AnalysisValidationContext context)
    {
        if (options.Neuron is not { Length: > 0 } nu || nu.Any(v => v < 0)) yield return "neuron must be one index per dim of the layer after the batch ([channel, y, x], [token, channel] or [unit]), each ≥ 0";
        if (LayerInputs.Check(options.AttributeToLayerInput, context.Model) is { } e) yield return e;
        foreach (var f in Perturbation.BaselineErrors(options, options.Baseline, options.BaselineFile, options.BaselineFolder, options.BaselineValue, "fill", context.Model.DefaultInput)) yield return f;
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(NeuronConductanceOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0];
        var (_, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        var baseline = LayerPaths.Baseline(options, input);
        var (alphas, weights) = IntegratedGradients.Rule(options.Method, options.Steps);
        var neuron = options.Neuron!;
        var sum = zeros_like(x);
        LayerPaths.Path(ctx, x, baseline, alphas, options.InternalBatchSize, selection, (s0, k, points, sel) =>
        {
            var xp = points.detach().requires_grad_(true);
            var (_, capture, ti, _) = Explain.Forward(ctx.Model, ctx.Target, xp, [options.Layer], forGradients: true, options.AttributeToLayerInput, sel);
            using (capture)
            {
                var a = capture[options.Layer];
                long unit = Unit(neuron, a.shape, options.Layer);
                var score = ctx.Target.Scores(ti, sel).sum();
                var dA = CheckedOps.Grad([score], [a], retainGraph: true)[0].flatten(1)[.., unit];   // ∂F/∂Aₙ per row
                var dx = CheckedOps.Grad([a.flatten(1)[.., unit].sum()], [xp])[0];                     // ∂Aₙ/∂x per row
                var w = tensor(weights.Skip(s0).Take(k).Select(v => (float)v).ToArray()).view(k, 1, 1, 1, 1);
                sum.add_(((dx * dA.view(-1, 1, 1, 1)).view(k, n, x.shape[1], x.shape[2], x.shape[3]) * w).sum(0, keepdim: false));
            }
        });
        return new AttributionResult(options.MultiplyByInputs ? (x - baseline) * sum : sum, selection);
    }

    /// <summary>The row-major index of <paramref name="neuron"/> within one row of a layer of <paramref name="shape"/>,
    /// or an error naming the layer when it has another rank or lies outside.</summary>
    static long Unit(int[] neuron, long[] shape, string layer)
    {
        var dims = shape.Skip(1).ToArray();
        if (neuron.Length != dims.Length || neuron.Where((v, i) => v >= dims[i]).Any())
            throw new LoupeException($"neuron [{string.Join(", ", neuron)}] is outside layer '{layer}' ({string.Join("×", dims)}): give one index per dim after the batch");
        long unit = 0;
        for (int i = 0; i < dims.Length; i++) unit = unit * dims[i] + neuron[i];
        return unit;
    }
}
