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
    [Range(1, 65536), Description("occluded copies per forward pass (default: as many as 64 RGB 224² images hold, at most 1024)")]
    public int? MicroBatch { get; init; }
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

    /// <summary>Input elements per forward pass when <c>micro_batch</c> is not set: 64 RGB images at 224².</summary>
    public const long DefaultElementBudget = 64L * 3 * 224 * 224;

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
            // Window origins, as Captum: 0, s, 2s, ... while the window fits.
            var ys = new List<long>(); var xs = new List<long>();
            for (long y = 0; y + win <= h; y += stride) ys.Add(y);
            for (long xx = 0; xx + win <= w; xx += stride) xs.Add(xx);
            long positions = ys.Count * xs.Count;
            var originY = tensor(ys.ToArray()).repeat_interleave(xs.Count);
            var originX = tensor(xs.ToArray()).repeat(ys.Count);
            var fill = Baseline(x, options.Fill, win);
            // Copies per forward: all images of the batch × a chunk of window positions.
            long perForward = options.MicroBatch ?? Math.Clamp(DefaultElementBudget / (c * h * w), 8, 1024);
            long chunk = Math.Max(1, perForward / n);
            var total = zeros(n, 1, h, w);
            var count = zeros(1, 1, h, w);
            var rows = arange(h).view(1, -1);
            var cols = arange(w).view(1, -1);
            for (long p0 = 0; p0 < positions; p0 += chunk)
            {
                using var chunkScope = NewDisposeScope();
                ctx.Cancellation.ThrowIfCancellationRequested();
                long p = Math.Min(chunk, positions - p0);
                var oy = originY.narrow(0, p0, p).view(-1, 1);
                var ox = originX.narrow(0, p0, p).view(-1, 1);
                var inRow = (rows >= oy).logical_and(rows < oy + win).to(ScalarType.Float32);   // p×h
                var inCol = (cols >= ox).logical_and(cols < ox + win).to(ScalarType.Float32);   // p×w
                var mask = (inRow.unsqueeze(2) * inCol.unsqueeze(1)).unsqueeze(1);              // p×1×h×w
                var m = mask.unsqueeze(0);                                                      // 1×p×1×h×w
                var occluded = (x.unsqueeze(1) * (1 - m) + fill.unsqueeze(1) * m).reshape(n * p, c, h, w);
                var rowsOf = Enumerable.Range(0, (int)n).SelectMany(i => Enumerable.Repeat(i, (int)p)).ToArray();
                var (_, cap, tiChunk, _) = Explain.Forward(ctx.Model, ctx.Target, occluded, [], forGradients: false);
                Tensor scores;
                using (cap) scores = ctx.Target.Scores(tiChunk, selection.Rows(rowsOf)).view(n, p);
                var diff = (baseScores.view(n, 1) - scores).view(n, p, 1, 1);
                total.add_((diff * mask.squeeze(1).unsqueeze(0)).sum(1, keepdim: true));
                count.add_(mask.sum(0, keepdim: true));
                ctx.Progress((done + n * (p0 + p) / (double)positions) / (ctx.InputCount ?? n));
            }
            var all = where(count > 0, total / count.clamp_min(1), zeros_like(total)).expand(n, c, h, w).contiguous();
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
