using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Options of <c>occlusion</c>.</summary>
public sealed record OcclusionOptions
{
    /// <summary>Window size in pixels: one value (square) or [height, width].</summary>
    [Range(1, 4096), Description("occluding window in input pixels: one value (square) or [height, width] (Captum sliding_window_shapes)")]
    public int[] Window { get; init; } = [8];
    /// <summary>Stride in pixels: one value or [height, width].</summary>
    [Range(1, 4096), Description("stride between windows: one value or [height, width] (default: window / 2 per axis; Captum strides)")]
    public int[]? Stride { get; init; }
    /// <summary>Fill of the window.</summary>
    [OrConstant(nameof(FillValue)), Description("fill: zero (normalised), mean, blur (σ = window/2), black, or a constant: one value or one per channel in normalised space (Captum's scalar / per-channel baselines), e.g. 0.5 or [0.1, 0.2, 0.3]")]
    public Fill Fill { get; init; } = Fill.Zero;
    /// <summary>Constant fill.</summary>
    [Description(Perturbation.ConstantDescription + "'fill'")]
    public float[]? FillValue { get; init; }
    /// <summary>Baseline from a file.</summary>
    [FilePath, Description(Perturbation.BaselineFileDescription)]
    public string? BaselineFile { get; init; }
    /// <summary>Per-input baselines from a folder.</summary>
    [FilePath(Directory = true), Description(Perturbation.BaselineFolderDescription)]
    public string? BaselineFolder { get; init; }
    /// <summary>Occluded copies per forward pass.</summary>
    [Range(1, 65536), Description("occluded copies per forward pass (default: as many as fill ~64 MiB of activations, at least 8, within settings.memory_budget_mb)")]
    public int? MicroBatch { get; init; }
}

/// <summary>Occlusion (Zeiler &amp; Fergus 2014) with Captum's <c>Occlusion</c> semantics: h×w windows at offsets 0, s, 2s, … per axis
/// that fit inside the image, covering all channels; a pixel's attribution is the mean, over the windows covering it,
/// of y_c(x) − y_c(x with the window filled). Forward passes only.</summary>
public sealed class Occlusion : AttributionAnalysis<OcclusionOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward) { HandlesSideInputs = true };
    /// <inheritdoc/>
    public override string ArtifactName => "occlusion";

    /// <summary>[height, width] of a one- or two-value option.</summary>
    public static (int H, int W) Pair(int[] v) => v.Length == 1 ? (v[0], v[0]) : (v[0], v[1]);

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(OcclusionOptions options, AnalysisValidationContext context)
    {
        var spec = context.Model.DefaultInput;
        foreach (var (name, v) in new[] { ("window", options.Window), ("stride", options.Stride) })
            if (v is not null && v.Length is not (1 or 2))
                yield return $"option '{name}': give one value or [height, width] (got [{string.Join(", ", v)}])";
        if (options.Window.Length is 1 or 2 && (Pair(options.Window).H > spec.Height || Pair(options.Window).W > spec.Width))
            yield return $"option 'window' ([{string.Join(", ", options.Window)}]) is larger than the input ({spec.Height}×{spec.Width})";
        foreach (var e in Perturbation.CheckConstant(options.FillValue, "fill_value", spec)) yield return e;
        foreach (var e in Perturbation.TensorBaselineErrors(options.BaselineFile, options.BaselineFolder, options.FillValue, "fill")) yield return e;
        foreach (var e in Perturbation.NamedBesideTensorErrors(options, "Fill", options.BaselineFile, options.BaselineFolder)) yield return e;
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(OcclusionOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var (winH, winW) = Pair(options.Window);
        var (strideH, strideW) = options.Stride is { } st ? Pair(st) : (Math.Max(1, winH / 2), Math.Max(1, winW / 2));
        if (winH > h || winW > w) throw new LoupeException($"window {winH}×{winW} is larger than the input {h}×{w}");
        var (baseScores, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        // Window origins, as Captum: ⌈(H − h) / s⌉ + 1 of them, 0, s, 2s, ..., the last window cut off at the image's
        // edge when (H − h) is not a multiple of s (BoxMasks clips it), so every pixel is covered. Until 2026-12-05 only
        // the windows that fit were taken, which left the far rows and columns without a window: 0 there.
        var ys = Enumerable.Range(0, (int)((h - winH + strideH - 1) / strideH + 1)).Select(i => (long)i * strideH).ToArray();
        var xs = Enumerable.Range(0, (int)((w - winW + strideW - 1) / strideW + 1)).Select(i => (long)i * strideW).ToArray();
        var originY = tensor(ys).repeat_interleave(xs.Length);
        var originX = tensor(xs).repeat(ys.Length);
        var fill = Perturbation.BaselineOrFile(input, options.BaselineFile, options.BaselineFolder, options.Fill, Math.Max(winH, winW) / 2.0, options.FillValue, "fill_value");
        Tensor Masks(long p0, long p) => Perturbation.BoxMasks(originY.narrow(0, p0, p), originX.narrow(0, p0, p), winH, winW, h, w);
        // When the batch is the whole data (one image in the explorer), progress counts windows, not inputs.
        long windows = originY.shape[0];
        Action<double>? progress = ctx.InputCount == n ? f => ctx.Progress(f, $"window {Math.Round(f * windows)}/{windows}") : null;
        var scores = Perturbation.MaskedScores(ctx, x, fill, windows, Masks, selection, options.MicroBatch, progress: progress);
        var diff = baseScores.view(n, 1) - scores;                                            // N×P
        var total = zeros(n, h * w);
        var count = zeros(h * w);
        for (long p0 = 0, positions = originY.shape[0]; p0 < positions; p0 += 256)
        {
            using var chunk = NewDisposeScope();
            long p = Math.Min(256, positions - p0);
            var m = Masks(p0, p).view(p, h * w);
            total.add_(diff.narrow(1, p0, p).MatMul(m));
            count.add_(m.sum(0, keepdim: false));
        }
        total = total.view(n, 1, h, w);
        count = count.view(1, 1, h, w);
        var attr = where(count > 0, total / count.clamp_min(1), zeros_like(total)).expand(n, c, h, w).contiguous();
        return new AttributionResult(attr, selection);
    }
}
