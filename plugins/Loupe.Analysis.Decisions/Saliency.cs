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
public sealed class Saliency : Analysis<SaliencyOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Gradients);

    /// <inheritdoc/>
    public override void Run(SaliencyOptions options, IAnalysisContext ctx)
    {
        var tiles = new List<RgbImage>();
        long done = 0;
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            var x = batch.Input.detach().requires_grad_(true);
            var (_, capture, ti, selection) = Explain.Forward(ctx.Model, ctx.Target, x, [], forGradients: true);
            using (capture)
            {
                var g = Explain.Gradient(ctx.Target, ti, selection, x);
                var attr = options.Abs ? g.abs() : g;
                // Equation (Simonyan et al. 2014, §3.1): M_ij = max_c |w_h(i,j,c)|.
                if (options.Reduce == ChannelReduce.Max) attr = g.abs().amax([1]);
                var display = options.Reduce == ChannelReduce.Max ? attr : attr.abs().amax([1]);
                Explain.Emit(ctx, "saliency", batch, attr, display, selection, tiles);
            }
            done += batch.Ids.Length;
            if (ctx.InputCount is > 0) ctx.Progress(done / (double)ctx.InputCount.Value);
        }
        Explain.EmitGrid(ctx, "saliency", tiles);
    }
}
