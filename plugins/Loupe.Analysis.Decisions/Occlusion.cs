using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

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
    [Description("fill value: zero (normalised), mean, blur (σ = window/2) or black")]
    public Fill Fill { get; init; } = Fill.Zero;
    /// <summary>Occluded copies per forward pass.</summary>
    [Range(1, 65536), Description("occluded copies per forward pass (default: as many as settings.memory_budget_mb holds)")]
    public int? MicroBatch { get; init; }
}

/// <summary>Occlusion (Zeiler &amp; Fergus 2014) with Captum's <c>Occlusion</c> semantics: windows at offsets 0, s, 2s, …
/// that fit inside the image, covering all channels; a pixel's attribution is the mean, over the windows covering it,
/// of y_c(x) − y_c(x with the window filled). Forward passes only.</summary>
public sealed class Occlusion : AttributionAnalysis<OcclusionOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    /// <inheritdoc/>
    public override string ArtifactName => "occlusion";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(OcclusionOptions options, AnalysisValidationContext context)
    {
        var spec = context.Model.DefaultInput;
        if (options.Window > Math.Min(spec.Height, spec.Width))
            yield return $"option 'window' ({options.Window}) is larger than the input ({spec.Height}×{spec.Width})";
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(OcclusionOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        int win = options.Window, stride = options.Stride ?? Math.Max(1, win / 2);
        if (win > h || win > w) throw new LoupeException($"window {win} is larger than the input {h}×{w}");
        var (baseScores, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        // Window origins, as Captum: 0, s, 2s, ... while the window fits.
        var ys = Enumerable.Range(0, (int)((h - win) / stride + 1)).Select(i => (long)i * stride).ToArray();
        var xs = Enumerable.Range(0, (int)((w - win) / stride + 1)).Select(i => (long)i * stride).ToArray();
        var originY = tensor(ys).repeat_interleave(xs.Length);
        var originX = tensor(xs).repeat(ys.Length);
        var fill = Perturbation.Baseline(x, options.Fill, win / 2.0, ctx.Input);
        Tensor Masks(long p0, long p) => Perturbation.BoxMasks(originY.narrow(0, p0, p), originX.narrow(0, p0, p), win, win, h, w);
        var scores = Perturbation.MaskedScores(ctx, x, fill, originY.shape[0], Masks, selection, options.MicroBatch);
        var diff = baseScores.view(n, 1) - scores;                                            // N×P
        var total = zeros(n, h * w);
        var count = zeros(h * w);
        for (long p0 = 0, positions = originY.shape[0]; p0 < positions; p0 += 256)
        {
            using var chunk = NewDisposeScope();
            long p = Math.Min(256, positions - p0);
            var m = Masks(p0, p).view(p, h * w);
            total.add_(diff.narrow(1, p0, p).matmul(m));
            count.add_(m.sum(0, keepdim: false));
        }
        total = total.view(n, 1, h, w);
        count = count.view(1, 1, h, w);
        var attr = where(count > 0, total / count.clamp_min(1), zeros_like(total)).expand(n, c, h, w).contiguous();
        return new AttributionResult(attr, selection);
    }
}
