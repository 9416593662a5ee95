using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>What an occluded window is filled with (in normalised input space, as Captum's baselines).</summary>
public enum OcclusionFill
{
    /// <summary>Zero (Captum's default baseline).</summary>
    Zero,
    /// <summary>The image's per-channel mean.</summary>
    Mean,
    /// <summary>A Gaussian-blurred copy of the image (σ = window / 2).</summary>
    Blur,
}

/// <summary>Options of <c>occlusion</c>.</summary>
public sealed record OcclusionOptions
{
    /// <summary>Window side in pixels.</summary>
    [Range(1, 4096), Description("side of the square occluding window, in input pixels")]
    public int Window { get; init; } = 8;
    /// <summary>Stride in pixels.</summary>
    [Range(1, 4096), Description("stride between windows (default: window / 2)")]
    public int? Stride { get; init; }
    /// <summary>Fill of the window.</summary>
    [Description("fill value: zero, mean or blur")]
    public OcclusionFill Fill { get; init; } = OcclusionFill.Zero;
    /// <summary>Occluded copies per forward pass.</summary>
    [Range(1, 65536), Description("occluded copies per forward pass")]
    public int MicroBatch { get; init; } = 64;
}

/// <summary>Occlusion (Zeiler &amp; Fergus 2014) with Captum's <c>Occlusion</c> semantics: windows at offsets 0, s, 2s, …
/// that fit inside the image, covering all channels; a pixel's attribution is the mean, over the windows covering it,
/// of y_c(x) − y_c(x with the window filled). Forward passes only.</summary>
public sealed class Occlusion : Analysis<OcclusionOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(OcclusionOptions options, AnalysisValidationContext context)
    {
        var spec = context.Model.DefaultInput;
        if (options.Window > Math.Min(spec.Height, spec.Width))
            yield return $"option 'window' ({options.Window}) is larger than the input ({spec.Height}×{spec.Width})";
    }

    /// <inheritdoc/>
    public override void Run(OcclusionOptions options, IAnalysisContext ctx)
    {
        var tiles = new List<RgbImage>();
        int win = options.Window, stride = options.Stride ?? Math.Max(1, win / 2);
        long done = 0;
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var x = batch.Input;
            long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
            if (win > h || win > w) throw new LoupeException($"window {win} is larger than the input {h}×{w}");
            var (_, capture, ti, selection) = Explain.Forward(ctx.Model, ctx.Target, x, [], forGradients: false);
            Tensor baseScores;
            using (capture) baseScores = ctx.Target.Scores(ti, selection);
            var positions = new List<(int Y, int X)>();
            for (int y = 0; y + win <= h; y += stride)
                for (int xx = 0; xx + win <= w; xx += stride) positions.Add((y, xx));
            var fill = Baseline(x, options.Fill, win);
            var attributions = new List<Tensor>();
            for (int i = 0; i < n; i++)
            {
                using var imageScope = NewDisposeScope();
                var xi = x[i].unsqueeze(0);
                var bi = fill[i].unsqueeze(0);
                var total = zeros(1, 1, h, w);
                var count = zeros(1, 1, h, w);
                for (int p0 = 0; p0 < positions.Count; p0 += options.MicroBatch)
                {
                    using var chunkScope = NewDisposeScope();
                    ctx.Cancellation.ThrowIfCancellationRequested();
                    var chunk = positions.Skip(p0).Take(options.MicroBatch).ToList();
                    var mask = zeros(chunk.Count, 1, h, w);
                    for (int k = 0; k < chunk.Count; k++)
                        mask[k, 0, TensorIndex.Slice(chunk[k].Y, chunk[k].Y + win), TensorIndex.Slice(chunk[k].X, chunk[k].X + win)] = 1f;
                    var occluded = xi * (1 - mask) + bi * mask;
                    var (_, cap, tiChunk, _) = Explain.Forward(ctx.Model, ctx.Target, occluded, [], forGradients: false);
                    Tensor scores;
                    using (cap) scores = ctx.Target.Scores(tiChunk, selection.Repeat(i, chunk.Count));
                    var diff = (baseScores[i] - scores).view(-1, 1, 1, 1);
                    total.add_((diff * mask).sum(0, keepdim: true));
                    count.add_(mask.sum(0, keepdim: true));
                }
                var attr = where(count > 0, total / count.clamp_min(1), zeros_like(total)).expand(1, c, h, w).contiguous();
                attributions.Add(imageScope.MoveToOuter(attr));
                ctx.Progress((done + i + 1) / (double)(ctx.InputCount ?? n));
            }
            var all = cat(attributions, 0);
            Explain.Emit(ctx, "occlusion", batch, all, all[.., 0], selection, tiles);
            done += n;
        }
        Explain.EmitGrid(ctx, "occlusion", tiles);
    }

    static Tensor Baseline(Tensor x, OcclusionFill fill, int window)
    {
        switch (fill)
        {
            case OcclusionFill.Zero: return zeros_like(x);
            case OcclusionFill.Mean: return x.mean([2, 3], keepdim: true).expand_as(x);
            default:
                double sigma = Math.Max(0.5, window / 2.0);
                int radius = (int)Math.Ceiling(3 * sigma);
                var k1 = arange(-radius, radius + 1, dtype: ScalarType.Float32);
                k1 = exp(-(k1 * k1) / (float)(2 * sigma * sigma));
                k1 = k1 / k1.sum();
                long c = x.shape[1];
                var kh = k1.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous();
                var kw = k1.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous();
                var mode = radius < x.shape[2] && radius < x.shape[3] ? PaddingModes.Reflect : PaddingModes.Replicate;
                var padded = nn.functional.pad(x, [radius, radius, radius, radius], mode);
                var b = nn.functional.conv2d(padded, kh, groups: c);
                return nn.functional.conv2d(b, kw, groups: c);
        }
    }
}

/// <summary>Registers the decision techniques.</summary>
public sealed class Registrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) => services
        .AddLoupeAnalysis<Saliency>("saliency", "gradient of the target w.r.t. the input (Simonyan et al. 2014; Captum Saliency)")
        .AddLoupeAnalysis<GradCam>("grad-cam", "gradient-weighted class activation map at a conv layer (Selvaraju et al. 2017)")
        .AddLoupeAnalysis<Occlusion>("occlusion", "sliding-window occlusion, Captum semantics (Zeiler & Fergus 2014); forward passes only");
}
