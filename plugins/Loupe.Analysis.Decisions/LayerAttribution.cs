using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>What a layer attribution's options hold: the layer, and whether its input is attributed.</summary>
public interface ILayerOptions : IAttributesToLayerInput
{
    /// <summary>Layer.</summary>
    string Layer { get; }
}

/// <summary>Options of <c>layer-gradient-x-activation</c>.</summary>
public record LayerOptions : ILayerOptions
{
    /// <summary>Layer.</summary>
    [Required, LayerName, Description(LayerAttributions.LayerDescription)]
    public string Layer { get; init; } = "";
    /// <summary>The layer's input instead of its output.</summary>
    [Description(LayerInputs.Description)]
    public bool AttributeToLayerInput { get; init; }
}

/// <summary>Options of <c>layer-gradient-x-activation</c>.</summary>
public sealed record LayerGradientXActivationOptions : LayerOptions
{
    /// <summary>Captum's multiply_by_inputs.</summary>
    [Description("A ⊙ ∂F/∂A (true, Captum's default) or the layer gradient ∂F/∂A alone (false: Captum's multiply_by_inputs=False)")]
    public bool MultiplyByInputs { get; init; } = true;
}

/// <summary>Options of the path methods at a layer (layer-conductance, internal-influence, layer-integrated-gradients).</summary>
public record LayerPathOptions : LayerOptions
{
    /// <summary>Integration steps.</summary>
    [Range(2, 100_000), Description("points on the path from the baseline to the input (Captum's n_steps)")]
    public int Steps { get; init; } = 50;
    /// <summary>Rule.</summary>
    [Description("gauss-legendre (Captum's default for the layer methods), riemann-trapezoid (Captum NeuronConductance's default, and neuron-conductance's), riemann-left, riemann-right, riemann-middle")]
    public IntegrationRule Method { get; init; } = IntegrationRule.GaussLegendre;
    /// <summary>Baseline.</summary>
    [Alias("fill"), OrConstant(nameof(BaselineValue)), Description("input baseline x′ (also spelled fill): zero (normalised; Captum's default), black, mean, blur, or a constant: one value or one per channel in normalised space (Captum's scalar / per-channel baselines), e.g. 0.5 or [0.1, 0.2, 0.3]")]
    public Fill Baseline { get; init; } = Fill.Zero;
    /// <summary>Constant baseline (older spelling; <c>fill: 0.5</c> binds here).</summary>
    [Description(Perturbation.ConstantDescription + "'fill' (or 'baseline')")]
    public float[]? BaselineValue { get; init; }
    /// <summary>Blur σ for the blur baseline.</summary>
    [Range(0.1, 1000), Description("σ of the blur baseline, in pixels")]
    public double BlurSigma { get; init; } = 5;
    /// <summary>Baseline from a file.</summary>
    [FilePath, Description(Perturbation.BaselineFileDescription)]
    public string? BaselineFile { get; init; }
    /// <summary>Per-input baselines from a folder.</summary>
    [FilePath(Directory = true), Description(Perturbation.BaselineFolderDescription)]
    public string? BaselineFolder { get; init; }
    /// <summary>Points per pass.</summary>
    [Range(1, 100_000), Description("path points (× inputs) per forward/backward pass (default: as many as fill ~64 MiB of activations, at least 8, within settings.memory_budget_mb)")]
    public int? InternalBatchSize { get; init; }
}

/// <summary>What the layer attributions share.</summary>
public static class LayerAttributions
{
    /// <summary>The description of their <c>layer</c> option.</summary>
    public const string LayerDescription = "layer whose output A is attributed, any shape as in Captum: N×K×h×w (e.g. relu3, layer3), "
        + "tokens N×T×C (a ViT block) or N×K (fc, flatten)";

    /// <summary>The input-sized map of a layer attribution <paramref name="raw"/>: the channel sum of an N×K×h×w one
    /// resized to <paramref name="h"/>×<paramref name="w"/>; a token layer's (N×T×C, T = h·w or 1 + h·w) laid on the
    /// image's grid first (as <c>reshape: auto</c>); any other (N×K, or tokens of no grid) kept as N×(units)×1×1, which
    /// the overlay shows as its largest |value| everywhere.</summary>
    public static Tensor MapOf(Tensor raw, long h, long w)
    {
        if (raw.dim() == 4) return Display.Resize(raw.sum(1, keepdim: false), h, w);
        if (raw.dim() == 3 && LayerReshapes.Resolve(LayerReshape.Auto, raw.shape, (h, w)) is (var mode and not LayerReshape.None, null))
            return Display.Resize(LayerReshapes.ToGrid(raw, mode, (h, w)).sum(1, keepdim: false), h, w);
        return raw.reshape(raw.shape[0], -1, 1, 1);
    }

    /// <summary>Per-point weights of a path chunk, shaped to broadcast over k×N×(a layer's shape of <paramref name="rank"/> dims).</summary>
    public static Tensor PointWeights(IEnumerable<double> weights, long rank)
    {
        var w = weights.Select(v => (float)v).ToArray();
        return tensor(w).view([w.Length, .. Enumerable.Repeat(1L, (int)rank)]);
    }
}

/// <summary>Base of the layer attributions: the raw result is the layer attribution (the layer's shape, Captum's
/// output, written as <c>&lt;id&gt;-layer</c>); the overlay is <see cref="LayerAttributions.MapOf"/> of it.</summary>
public abstract class LayerAttribution<TOptions> : AttributionAnalysis<TOptions> where TOptions : class, ILayerOptions, new()
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations | ModelCapabilities.Gradients);
    /// <inheritdoc/>
    protected override string RawName => ArtifactName + "-layer";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(TOptions options, AnalysisValidationContext context)
    {
        if (LayerInputs.Check(options.AttributeToLayerInput, context.Model) is { } e) yield return e;
        if (options is LayerPathOptions p)
        {
            foreach (var f in Perturbation.BaselineErrors(p, p.Baseline, p.BaselineFile, p.BaselineFolder, p.BaselineValue, "fill", context.Model.DefaultInput)) yield return f;
        }
    }

    /// <summary>The layer attribution of a batch (N×K×h×w).</summary>
    protected abstract Tensor LayerMap(TOptions options, AttributionInput input, TargetSelection selection);

    /// <inheritdoc/>
    public override AttributionResult Attribute(TOptions options, AttributionInput input)
    {
        var (_, _, selection) = Explain.Scores(input.Context, input.Input, input.Selection, input.Slot);
        var layer = LayerMap(options, input, selection);
        long h = input.Input.shape[2], w = input.Input.shape[3];
        Tensor MapOf(Tensor raw) => LayerAttributions.MapOf(raw, h, w);
        return new AttributionResult(MapOf(layer), selection, layer) { MapOfRaw = MapOf };
    }
}

/// <summary>Steps shared by the layer and neuron path methods.</summary>
public static class LayerPaths
{
    /// <summary>Activations and ∂(target)/∂A at <paramref name="points"/> (both detached); with <paramref name="layerInput"/>
    /// A is the layer's input (Captum's attribute_to_layer_input=True).</summary>
    public static (Tensor Activation, Tensor Gradient) LayerGradient(IAnalysisContext ctx, string layer, Tensor points, TargetSelection selection, bool layerInput = false)
    {
        using var scope = NewDisposeScope();
        var (_, capture, ti, _) = Explain.Forward(ctx.Model, ctx.Target, points, [layer], forGradients: true, layerInput, selection);
        using (capture)
        {
            var a = capture[layer];
            var g = Explain.Gradient(ctx.Target, ti, selection, a);
            return (scope.MoveToOuter(a.detach()), scope.MoveToOuter(g));
        }
    }

    /// <summary>The activation (or, with <paramref name="layerInput"/>, the input) of <paramref name="layer"/> on
    /// <paramref name="x"/>, without gradients.</summary>
    public static Tensor Activation(IAnalysisContext ctx, string layer, Tensor x, bool layerInput = false)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (_, capture, _, _) = Explain.Forward(ctx.Model, ctx.Target, x, [layer], forGradients: false, layerInput);
        using (capture) return scope.MoveToOuter(capture[layer].detach().clone());
    }

    /// <summary>Visits the path points x′ + α (x − x′) in chunks: <paramref name="visit"/>(first point index, points
    /// (k·N×C×H×W, point-major), their selection).</summary>
    public static void Path(IAnalysisContext ctx, Tensor x, Tensor baseline, double[] alphas, int? perPassOption, TargetSelection selection, Action<int, int, Tensor, TargetSelection> visit)
    {
        long n = x.shape[0];
        var delta = x - baseline;
        int perPass = (int)Math.Max(1, Explain.CopiesPerForward(ctx, x, perPassOption, gradients: true) / n);
        for (int s0 = 0; s0 < alphas.Length; s0 += perPass)
        {
            using var chunk = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            int k = Math.Min(perPass, alphas.Length - s0);
            var a = tensor(alphas.Skip(s0).Take(k).Select(v => (float)v).ToArray()).view(k, 1, 1, 1, 1);
            var points = (baseline.unsqueeze(0) + a * delta.unsqueeze(0)).reshape(k * n, x.shape[1], x.shape[2], x.shape[3]);
            visit(s0, k, points, selection.Rows(Enumerable.Range(0, k).SelectMany(_ => Enumerable.Range(0, (int)n)).ToArray()));
        }
    }

    /// <summary>The input baseline of a path method.</summary>
    public static Tensor Baseline(LayerPathOptions o, AttributionInput input) =>
        Perturbation.BaselineOrFile(input, o.BaselineFile, o.BaselineFolder, o.Baseline, o.BlurSigma, o.BaselineValue);
}

/// <summary>Layer gradient × activation (Captum <c>LayerGradientXActivation</c>): A ⊙ ∂F/∂A at the layer (∂F/∂A alone
/// with multiply_by_inputs = false).</summary>
public sealed class LayerGradientXActivation : LayerAttribution<LayerGradientXActivationOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => base.Requirements with { HandlesSideInputs = true };   // one forward of the batch
    /// <inheritdoc/>
    public override string ArtifactName => "layer-gradient-x-activation";
    /// <inheritdoc/>
    protected override Tensor LayerMap(LayerGradientXActivationOptions options, AttributionInput input, TargetSelection selection)
    {
        var (a, g) = LayerPaths.LayerGradient(input.Context, options.Layer, input.Input, selection, options.AttributeToLayerInput);
        return options.MultiplyByInputs ? a * g : g;
    }
}

/// <summary>Internal influence (Leino et al. 2018; Captum <c>InternalInfluence</c>): the layer gradient integrated along
/// the input path, Σᵢ wᵢ ∂F/∂A(x′ + αᵢ (x − x′)), with IG's rules (α, w).</summary>
public sealed class InternalInfluence : LayerAttribution<LayerPathOptions>, ITakesBaseline
{
    /// <inheritdoc/>
    public override string ArtifactName => "internal-influence";
    /// <inheritdoc/>
    protected override Tensor LayerMap(LayerPathOptions options, AttributionInput input, TargetSelection selection)
    {
        var ctx = input.Context;
        long n = input.Input.shape[0];
        var (alphas, weights) = IntegratedGradients.Rule(options.Method, options.Steps);
        Tensor? sum = null;
        LayerPaths.Path(ctx, input.Input, LayerPaths.Baseline(options, input), alphas, options.InternalBatchSize, selection, (s0, k, points, sel) =>
        {
            var (_, g) = LayerPaths.LayerGradient(ctx, options.Layer, points, sel, options.AttributeToLayerInput);
            var w = LayerAttributions.PointWeights(weights.Skip(s0).Take(k), g.dim());
            var part = (g.view([k, n, .. g.shape.Skip(1)]) * w).sum(0, keepdim: false);
            if (sum is null) sum = part.MoveToOuterDisposeScope(); else sum.add_(part);
        });
        return sum!;
    }
}

/// <summary>Layer conductance (Dhamdhere et al. 2018; Captum <c>LayerConductance</c>): Σᵢ ∂F/∂A(xᵢ) ⊙ (A(xᵢ₊₁) − A(xᵢ))
/// over steps + 1 points xᵢ = x′ + αᵢ (x − x′) of the rule (Captum evaluates n_steps + 1 points and takes differences;
/// with gauss-legendre the ends are not exactly x′ and x, so the sum approximates F(x) − F(x′) as Captum's does).</summary>
public sealed class LayerConductance : LayerAttribution<LayerPathOptions>, ITakesBaseline
{
    /// <inheritdoc/>
    public override string ArtifactName => "layer-conductance";
    /// <inheritdoc/>
    protected override Tensor LayerMap(LayerPathOptions options, AttributionInput input, TargetSelection selection)
    {
        var ctx = input.Context;
        long n = input.Input.shape[0];
        var (alphas, _) = IntegratedGradients.Rule(options.Method, options.Steps + 1);
        Tensor? sum = null, lastA = null, lastG = null;
        LayerPaths.Path(ctx, input.Input, LayerPaths.Baseline(options, input), alphas, options.InternalBatchSize, selection, (_, k, points, sel) =>
        {
            var (a, g) = LayerPaths.LayerGradient(ctx, options.Layer, points, sel, options.AttributeToLayerInput);
            var av = a.view([k, n, .. a.shape.Skip(1)]); var gv = g.view([k, n, .. g.shape.Skip(1)]);
            // Differences with the previous chunk's last point, then within the chunk.
            var prevA = lastA is null ? av[..^1] : cat([lastA.unsqueeze(0), av[..^1]], 0);
            var prevG = lastG is null ? gv[..^1] : cat([lastG.unsqueeze(0), gv[..^1]], 0);
            var part = (prevG * (lastA is null ? av[1..] : av) - prevG * prevA).sum(0, keepdim: false);
            if (sum is null) sum = part.MoveToOuterDisposeScope(); else sum.add_(part);
            lastA?.Dispose(); lastG?.Dispose();
            lastA = av[-1].clone().MoveToOuterDisposeScope(); lastG = gv[-1].clone().MoveToOuterDisposeScope();
        });
        lastA?.Dispose(); lastG?.Dispose();
        return sum!;
    }
}
