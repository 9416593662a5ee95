using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Which units of a layer <c>layer-feature-ablation</c> ablates together.</summary>
public enum LayerUnitGroups
{
    /// <summary>Each value of the layer alone (Captum's default, no layer_mask): K·h·w forwards per input.</summary>
    Neurons,
    /// <summary>Each channel, all its positions (a layer_mask of shape K×1×1).</summary>
    Channels,
    /// <summary>Each spatial position, all channels (a layer_mask of shape 1×h×w).</summary>
    Positions,
}

/// <summary>Options of <c>layer-feature-ablation</c>.</summary>
public sealed record LayerFeatureAblationOptions : LayerOptions
{
    /// <summary>Unit groups.</summary>
    [Description("which units are ablated together: neurons (each value, Captum's default), channels (each channel) or positions (each spatial position, all channels); layer_mask overrides")]
    public LayerUnitGroups Groups { get; init; } = LayerUnitGroups.Neurons;
    /// <summary>Captum's layer_mask.</summary>
    [FilePath, Description("a .npy of group ids broadcastable to the layer's K×h×w (Captum's layer_mask, e.g. 1×h×w or K×1×1): units with the same id are ablated together")]
    public string? LayerMask { get; init; }
    /// <summary>Captum's layer_baselines.</summary>
    [Description("the value an ablated unit takes (Captum's layer_baselines, default 0)")]
    public float LayerBaseline { get; init; }
    /// <summary>Copies per forward.</summary>
    [Range(1, 100_000), Description("ablated copies per forward pass (Captum's perturbations_per_eval; default: as many as fill ~64 MiB of activations, at least 8, within settings.memory_budget_mb)")]
    public int? MicroBatch { get; init; }
}

/// <summary>Layer feature ablation (Captum <c>LayerFeatureAblation</c>): each group of a layer's units (each value by
/// default, or <c>groups</c> / <c>layer_mask</c>) is set to <c>layer_baseline</c> in the forward pass, and every unit
/// of the group gets score(x) − score(x with the group ablated). Many copies, each with its own group ablated, go
/// through one forward.</summary>
public sealed class LayerFeatureAblation : LayerAttribution<LayerFeatureAblationOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations | ModelCapabilities.Interventions);
    /// <inheritdoc/>
    public override string ArtifactName => "layer-feature-ablation";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(LayerFeatureAblationOptions options, AnalysisValidationContext context) =>
        base.Validate(options, context).Concat(options.LayerMask is not null && options.Groups != LayerUnitGroups.Neurons
            ? ["give 'groups' or 'layer_mask', not both (the mask sets the groups)"] : []);

    /// <inheritdoc/>
    protected override Tensor LayerMap(LayerFeatureAblationOptions options, AttributionInput input, TargetSelection selection)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0];
        var (baseScores, _, _) = Explain.Scores(ctx, x, selection, input.Slot);
        var shape = LayerPaths.Activation(ctx, options.Layer, x.narrow(0, 0, 1), options.AttributeToLayerInput).shape.Skip(1).ToArray();
        var ids = Groups(options, shape);                                   // K×h×w (or the layer's shape), 0..M−1
        long m = ids.max().item<long>() + 1;
        var flat = ids.flatten();
        long perPass = Math.Max(1, Explain.CopiesPerForward(ctx, x, options.MicroBatch) / n);
        var diffs = new List<Tensor>();
        for (long g0 = 0; g0 < m; g0 += perPass)
        {
            using var scope = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            long p = Math.Min(perPass, m - g0);
            // Copy r = i·p + j: input i with group g0 + j ablated.
            var masks = (flat.view(1, -1) == arange(g0, g0 + p).view(-1, 1)).view([p, .. shape]);
            var ablate = masks.unsqueeze(0).expand([n, p, .. shape]).reshape([n * p, .. shape]);
            var copies = x.unsqueeze(1).expand([n, p, .. x.shape.Skip(1)]).reshape([n * p, .. x.shape.Skip(1)]);
            var rows = selection.Rows(Enumerable.Range(0, (int)n).SelectMany(i => Enumerable.Repeat(i, (int)p)).ToArray());
            Tensor scores;
            using (no_grad())
            using (LayerInputs.Intervene(ctx.Model, options.Layer, options.AttributeToLayerInput, a => a.masked_fill(ablate, options.LayerBaseline), ArtifactName))
            {
                var (_, capture, ti, _) = Explain.Forward(ctx.Model, ctx.Target, copies, [], forGradients: false, rows);
                using (capture) scores = ctx.Target.Scores(ti, rows);
            }
            diffs.Add(scope.MoveToOuter(baseScores.view(n, 1) - scores.view(n, p)));
        }
        var perGroup = cat(diffs, 1);                                       // N×M
        return perGroup.index_select(1, flat).view([n, .. shape]);
    }

    /// <summary>The group id of every unit of a layer of shape <paramref name="shape"/> (without the batch).</summary>
    static Tensor Groups(LayerFeatureAblationOptions options, long[] shape)
    {
        long units = shape.Aggregate(1L, (a, b) => a * b);
        if (options.LayerMask is { } file)
        {
            var mask = Npy.Read(file).ToTensor().to(ScalarType.Int64);
            Tensor full;
            try { full = mask.expand(shape).contiguous(); }
            catch (Exception) { throw new LoupeException($"{file}: layer_mask of shape ({string.Join("×", mask.shape)}) does not broadcast to the layer's {string.Join("×", shape)}"); }
            // Ids relabelled 0..M−1 in ascending order (Captum asks for 0..M−1; a mask with gaps gives the same groups).
            var (_, inverse, _) = unique(full.flatten(), sorted: true, return_inverse: true);
            return inverse!.view(shape);
        }
        if (options.Groups == LayerUnitGroups.Neurons || shape.Length < 2) return arange(units).view(shape);
        if (options.Groups == LayerUnitGroups.Channels) return arange(shape[0]).view([shape[0], .. Enumerable.Repeat(1L, shape.Length - 1)]).expand(shape).contiguous();
        long positions = units / shape[0];
        return arange(positions).view([1, .. shape.Skip(1)]).expand(shape).contiguous();
    }
}
