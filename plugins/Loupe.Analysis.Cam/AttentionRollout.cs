using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Cam;

/// <summary>How the heads of one attention layer are combined.</summary>
public enum HeadFusion
{
    /// <summary>Average over heads (Abnar &amp; Zuidema 2020).</summary>
    Mean,
    /// <summary>Maximum over heads (a variant popularised by vit-explain).</summary>
    Max,
    /// <summary>Minimum over heads.</summary>
    Min,
}

/// <summary>Options of <c>attention-rollout</c>.</summary>
public sealed record AttentionRolloutOptions
{
    /// <summary>The attention layers.</summary>
    [Required, LayerName, Description("the attention-probability layers (softmax outputs, N×heads×T×T or PyTorch's (N·heads)×T×T), first block to last")]
    public string[] Layers { get; init; } = [];
    /// <summary>Head fusion.</summary>
    [Description("how the heads of a layer are combined: mean (the paper), max or min")]
    public HeadFusion HeadFusion { get; init; } = HeadFusion.Mean;
    /// <summary>Weight of the identity (residual connection).</summary>
    [Range(0.0, 1.0), Description("residual weight r: Â = (1 − r)·A + r·I, rows renormalised (the paper: 0.5)")]
    public double Residual { get; init; } = 0.5;
    /// <summary>Leading non-patch tokens.</summary>
    [Range(0, 16), Description("leading tokens that are not patches (ViT: 1, the class token); the map is token 0's rolled-out attention to the patches, or the mean over tokens when 0")]
    public int PrefixTokens { get; init; } = 1;
}

/// <summary>Attention rollout (Abnar &amp; Zuidema 2020, "Quantifying Attention Flow in Transformers"): per layer the
/// heads' attention averaged, the residual added as 0.5·A + 0.5·I with rows renormalised, the layers multiplied
/// (Ã_l = Â_l·Ã_{l−1}); the map is the class token's row over the patch tokens, on the patch grid, upsampled
/// bilinearly to the input. Forward pass only; it does not depend on the target (class-agnostic, as in the paper).</summary>
public sealed class AttentionRollout : AttributionAnalysis<AttentionRolloutOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "attention-rollout";

    /// <inheritdoc/>
    protected override string RawName => ArtifactName + "-grid";

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations, UsesTarget: false);

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(AttentionRolloutOptions options, AnalysisValidationContext context)
    {
        if (options.Layers.Length == 0) yield return "give the attention layers in 'layers'";
    }

    /// <summary>The rollout Ã (N×T×T) of attention probabilities given per layer (N×heads×T×T, first to last).</summary>
    public static Tensor Rollout(IReadOnlyList<Tensor> attentions, HeadFusion fusion, double residual)
    {
        using var scope = NewDisposeScope();
        Tensor? r = null;
        foreach (var att in attentions)
        {
            var a = att.to(ScalarType.Float64);
            a = fusion switch { HeadFusion.Max => a.amax([1]), HeadFusion.Min => a.amin([1]), _ => a.mean([1]) };
            var id = eye(a.shape[1], dtype: a.dtype, device: a.device).unsqueeze(0);
            var hat = a * (1 - residual) + id * residual;
            hat = hat / hat.sum([2], keepdim: true);
            r = r is null ? hat : hat.MatMul(r);
        }
        return scope.MoveToOuter(r!.to(ScalarType.Float32));
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(AttentionRolloutOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var x = input.Input;
        var selection = new TargetSelection(null, Enumerable.Repeat("class-agnostic", (int)x.shape[0]).ToArray());
        Tensor rollout;
        using (var capture = ctx.Model.Capture(options.Layers, forGradients: false))
        {
            using (no_grad()) ctx.Model.Forward(x).Dispose();
            // PyTorch's MultiheadAttention exports its probabilities as (N·heads)×T×T (batch-major): view them per input.
            var atts = options.Layers.Select(l => capture[l]).Select(a => a.dim() == 3 && a.shape[0] % x.shape[0] == 0 && a.shape[1] == a.shape[2]
                ? a.view(x.shape[0], a.shape[0] / x.shape[0], a.shape[1], a.shape[2]) : a).ToList();
            for (int i = 0; i < atts.Count; i++)
                if (atts[i].dim() != 4 || atts[i].shape[2] != atts[i].shape[3] || (i > 0 && !atts[i].shape[2..].SequenceEqual(atts[0].shape[2..])))
                    throw new LoupeException($"attention-rollout: layer '{options.Layers[i]}' has shape ({string.Join("×", atts[i].shape)}); every layer must be attention probabilities N×heads×T×T with the same T");
            rollout = Rollout(atts, options.HeadFusion, options.Residual);
        }
        long n = rollout.shape[0], t = rollout.shape[1], p = options.PrefixTokens;
        var (gh, gw) = LayerReshapes.Grid(t - p, (x.shape[2], x.shape[3]));
        if (gh < 0) throw new LoupeException($"attention-rollout: {t} tokens minus {p} prefix token(s) are not a grid of the image's {x.shape[2]}×{x.shape[3]} aspect; set prefix_tokens");
        var row = p > 0 ? rollout[.., 0, TensorIndex.Slice(p)] : rollout.mean([1]);
        var grid = row.reshape(n, gh, gw);
        return new AttributionResult(Display.Resize(grid, x.shape[2], x.shape[3]), selection, grid);
    }
}
