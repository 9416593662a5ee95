using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Cam;

/// <summary>Options of <c>ablation-cam</c>.</summary>
public sealed record AblationCamOptions : ScoreCamOptions
{
    /// <summary>pytorch-grad-cam's batch_size.</summary>
    [Range(1, 65536), Description("pytorch-grad-cam's batch_size (default 32): under convention pytorch-grad-cam, on a layer whose smallest value is not 0 a channel at position j of its batch is set to min − (j + 1)·1e7, as that library's AblationLayer does; forward chunks are micro_batch")]
    public int BatchSize { get; init; } = 32;
    /// <summary>pytorch-grad-cam's ratio_channels_to_ablate.</summary>
    [Range(1e-9, 1.0), Description("pytorch-grad-cam's ratio_channels_to_ablate (default 1: every channel): below 1, per image only the ⌊K·ratio⌋ channels whose |activation| (shifted to 0, scaled to max 1) lies most inside Eigen-CAM's mask (|projection| min-max scaled > 0.01) and the ⌊K·ratio⌋ that lie least inside it are ablated, in that order (a constant channel counts as most inside); the others get weight 0. Above 0.5 the two sets overlap; under convention pytorch-grad-cam, as that library assembles the scores, every channel after the first one ablated twice then gets weight 0")]
    public double RatioChannelsToAblate { get; init; } = 1.0;
}

/// <summary>Ablation-CAM (Desai &amp; Ramaswamy 2020, as pytorch-grad-cam): w_k = (y − y_k) / y, where y_k is the target
/// score with channel k of the layer ablated: set to 0 (the paper; pytorch-grad-cam too when the layer's smallest value
/// is 0, after a ReLU), or under <c>convention: pytorch-grad-cam</c> on a layer with other values, to that library's
/// min − (j + 1)·1e7 (j: the channel's place in its batch of <c>batch_size</c>; the minimum is taken again after each
/// row of the batch is ablated, in float32; over the layer's own output, so a ViT's class token counts, as in its
/// AblationLayerVit). A token layer's channel is ablated in every token, the class token too. Forward passes only (the
/// model runs with the channel ablated).</summary>
public sealed class AblationCam : CamAnalysis<AblationCamOptions>
{
    /// <inheritdoc/>
    protected override bool ForwardsCopies => true;
    /// <inheritdoc/>
    public override string ArtifactName => "ablation-cam";
    /// <inheritdoc/>
    protected override bool UsesGradients => false;
    /// <inheritdoc/>
    protected override ModelCapabilities ExtraCapabilities => ModelCapabilities.Interventions;
    /// <inheritdoc/>
    protected override Tensor WeightedActivations(AblationCamOptions o, CamLayer l)
    {
        var a = l.Activation; var x = l.Input; var ctx = l.Context;
        long n = a.shape[0], k = a.shape[1];
        var (baseScores, _, _) = Explain.Scores(ctx, x, l.Selection, 0);
        // pytorch-grad-cam takes the minimum of the layer's own output: a ViT's class token included (AblationLayerVit).
        var minima = o.Convention == CamConvention.PytorchGradCam ? (l.Own ?? a).flatten(1).amin([1]).to(ScalarType.Float32).ToArray<float>() : null;
        long chunk = o.MicroBatch ?? 64;
        bool pgc = o.Convention == CamConvention.PytorchGradCam;
        var scores = new List<Tensor>();
        using (no_grad())
            for (int i = 0; i < n; i++)
            {
                // The channels ablated, in the order they are ablated (pytorch-grad-cam's batches run over this list).
                var order = o.RatioChannelsToAblate >= 1.0 ? Enumerable.Range(0, (int)k).Select(j => (long)j).ToArray()
                    : AblationChannels.Select(a[i], o.RatioChannelsToAblate);
                long m = order.Length;
                var per = new List<Tensor>();
                for (long c0 = 0; c0 < m; c0 += chunk)
                {
                    using var scope = NewDisposeScope();
                    long c = Math.Min(chunk, m - c0);
                    // Row r of the copies ablates channel order[c0 + r].
                    var keepRows = ones(c, k).scatter_(1, tensor(order[(int)c0..(int)(c0 + c)]).view(c, 1), zeros(c, 1));
                    var keep = keepRows.view(LayerReshapes.ChannelShape(l.Reshape, c, k));
                    var value = minima is null || minima[i] == 0 ? null
                        : ((1 - keepRows) * tensor(PgcAblationValues(minima[i], c0, c, o.BatchSize)).view(c, 1)).view(LayerReshapes.ChannelShape(l.Reshape, c, k));
                    var copies = x[i].unsqueeze(0).expand(c, -1, -1, -1);
                    var sel = l.Selection.Repeat(i, (int)c);
                    using (LayerInputs.Intervene(ctx.Model, l.Layer, o.AttributeToLayerInput, act => value is null ? act * keep : act * keep + value, ArtifactName))
                    {
                        var (_, cap, ti, _) = Explain.Forward(ctx.Model, ctx.Target, copies, [], false, sel);
                        using (cap) per.Add(scope.MoveToOuter(ctx.Target.Scores(ti, sel)));
                    }
                }
                using var entries = m == 0 ? zeros(0, dtype: baseScores.dtype) : cat(per, 0);
                using var values = entries.to(ScalarType.Float64).cpu();
                using var baseScore = baseScores[i].to(ScalarType.Float64).cpu();
                scores.Add(tensor(AblationChannels.Assemble(order, values.ToArray<double>(), baseScore.item<double>(), (int)k, pgc))
                    .to(entries.dtype).to(baseScores.device));
            }
        var ablated = stack(scores, 0);                                            // N×K
        var b = baseScores.view(n, 1);
        var weights = ((b - ablated) / (b + 1e-7f)).view(n, k, 1, 1);
        return weights * a;
    }

    /// <summary>pytorch-grad-cam's ablation values for channels c0 … c0 + c − 1 of an image whose layer minimum is
    /// <paramref name="min"/> ≠ 0: the channel at place j of its batch (j = channel mod batch size) takes the minimum of
    /// the batch's tensor after the j rows before it were ablated, minus 1e7, in float32: min − 1e7, then − 1e7 again.</summary>
    static float[] PgcAblationValues(float min, long c0, long c, int batch)
    {
        var byPlace = new float[batch];
        float v = min;
        for (int j = 0; j < batch; j++) byPlace[j] = v = v - 1e7f;
        return Enumerable.Range(0, (int)c).Select(r => byPlace[(c0 + r) % batch]).ToArray();
    }
}
