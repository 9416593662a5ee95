using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Whose occlusion <c>occlusion</c> computes.</summary>
public enum OcclusionConvention
{
    /// <summary>Captum's <c>Occlusion</c>: the window filled, y(x) − y(occluded) averaged over the windows covering a value.</summary>
    Captum,
    /// <summary>Zennit's <c>Occlusion</c> attributor with its default occlusion function: everything but the window filled,
    /// windows at 0, s, 2s, … &lt; size that wrap around the image's edges (its roll of the mask), and a value's
    /// attribution the sum of y(occluded) over the windows covering it.</summary>
    Zennit,
}

/// <summary>Options of <c>occlusion</c>.</summary>
public sealed record OcclusionOptions
{
    /// <summary>Whose convention.</summary>
    [Description("captum (default): the window filled, attribution the mean over covering windows of y(x) − y(occluded); zennit: Zennit's Occlusion attributor — everything outside the window filled (its default occlude_independent, invert=False), windows at 0, s, 2s, … wrapping around the edges as its rolled mask, attribution the sum of y(occluded) over the windows covering a pixel; default stride = window (Zennit's 8 and 8)")]
    public OcclusionConvention Convention { get; init; } = OcclusionConvention.Captum;
    /// <summary>Zennit's invert.</summary>
    [Description("convention zennit: fill the window instead of everything else (Zennit's occlude_independent with invert=True)")]
    public bool Invert { get; init; }
    /// <summary>Window size in pixels: one value (square) or [height, width], or [channels, height, width].</summary>
    [Range(1, 4096), Description("occluding window in input pixels: one value (square) or [height, width], covering every channel; or [channels, height, width] (Captum sliding_window_shapes with the channel axis, e.g. [1, 8, 8]: each channel occluded on its own)")]
    public int[] Window { get; init; } = [8];
    /// <summary>Stride in pixels: one value or [height, width] ([channels, height, width] with a 3-value window).</summary>
    [Range(1, 4096), Description("stride between windows: one value or [height, width] ([channels, height, width] with a 3-value window; Captum strides; default: window / 2 per axis, where Captum's default is 1 — give stride: 1 for it)")]
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
/// (the last one cut off at the edge), covering all channels — or, with a [channels, height, width] window, c×h×w boxes
/// slid along the channel axis too (Captum's 3-D sliding_window_shapes); a value's attribution is the mean, over the
/// windows covering it, of y_c(x) − y_c(x with the window filled). Forward passes only. <c>convention: zennit</c> gives
/// Zennit's Occlusion attributor instead (<see cref="OcclusionConvention.Zennit"/>).</summary>
public sealed class Occlusion : AttributionAnalysis<OcclusionOptions>, ITakesBaseline
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward) { HandlesSideInputs = true };
    /// <inheritdoc/>
    public override string ArtifactName => "occlusion";

    /// <summary>[height, width] of a one- or two-value option.</summary>
    public static (int H, int W) Pair(int[] v) => v.Length == 1 ? (v[0], v[0]) : (v[0], v[1]);

    /// <summary>[channels, height, width] of a window (a one- or two-value window covers all <paramref name="channels"/>)
    /// and of its stride (default: window / 2 per axis, at least 1; one value: every axis).</summary>
    static ((long C, long H, long W) Window, (long C, long H, long W) Stride) Geometry(OcclusionOptions o, long channels)
    {
        (long C, long H, long W) win = o.Window.Length == 3 ? (o.Window[0], o.Window[1], o.Window[2]) : (channels, Pair(o.Window).H, Pair(o.Window).W);
        (long C, long H, long W) stride = o.Stride switch
        {
            null when o.Convention == OcclusionConvention.Zennit => win,
            null => (Math.Max(1, win.C / 2), Math.Max(1, win.H / 2), Math.Max(1, win.W / 2)),
            [var v] => (o.Window.Length == 3 ? v : win.C, v, v),
            [var sy, var sx] => (win.C, sy, sx),
            _ => (o.Stride[0], o.Stride[1], o.Stride[2]),
        };
        if (o.Window.Length != 3) stride = (Math.Max(1, win.C), stride.H, stride.W);   // one window across the channels
        return (win, stride);
    }

    /// <summary>Origins 0, s, 2s, … along an axis of <paramref name="size"/>, as Captum: ⌈(size − window) / s⌉ + 1 of them,
    /// the last window cut off at the edge.</summary>
    static long[] Origins(long size, long window, long stride) =>
        Enumerable.Range(0, (int)((size - window + stride - 1) / stride + 1)).Select(i => i * stride).ToArray();

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(OcclusionOptions options, AnalysisValidationContext context)
    {
        var spec = context.Model.DefaultInput;
        foreach (var (name, v) in new[] { ("window", options.Window), ("stride", options.Stride) })
            if (v is not null && v.Length is not (1 or 2 or 3))
                yield return $"option '{name}': give one value, [height, width] or [channels, height, width] (got [{string.Join(", ", v)}])";
        if (options.Stride is { Length: 3 } && options.Window.Length != 3)
            yield return "option 'stride': [channels, height, width] goes with a window of [channels, height, width]";
        if (options.Window.Length == 3 && options.Stride is { Length: 2 })
            yield return "option 'stride': give one value or [channels, height, width] with a window of [channels, height, width]";
        if (options.Window.Length is 1 or 2 && (Pair(options.Window).H > spec.Height || Pair(options.Window).W > spec.Width))
            yield return $"option 'window' ([{string.Join(", ", options.Window)}]) is larger than the input ({spec.Height}×{spec.Width})";
        if (options.Window is [var wc, var wh, var ww] && (wc > spec.Channels || wh > spec.Height || ww > spec.Width))
            yield return $"option 'window' ([{string.Join(", ", options.Window)}]) is larger than the input ({spec.Channels}×{spec.Height}×{spec.Width})";
        if (options.Convention == OcclusionConvention.Zennit && options.Window.Length == 3)
            yield return "convention zennit: give the window as one value or [height, width] (it covers every channel, as Zennit's window on images)";
        foreach (var e in OptionRules.OnlyWith(options, options.Convention == OcclusionConvention.Zennit, "convention: zennit", nameof(options.Invert))) yield return e;
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
        var ((winC, winH, winW), (strideC, strideH, strideW)) = Geometry(options, c);
        if (winC > c || winH > h || winW > w) throw new LoupeException($"window {winC}×{winH}×{winW} is larger than the input {c}×{h}×{w}");
        if (options.Convention == OcclusionConvention.Zennit) return Zennit(options, input, winH, winW, strideH, strideW);
        var (baseScores, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        // Window origins, as Captum: ⌈(H − h) / s⌉ + 1 of them, 0, s, 2s, ..., the last window cut off at the image's
        // edge when (H − h) is not a multiple of s (BoxMasks clips it), so every pixel is covered. Until 2026-12-05 only
        // the windows that fit were taken, which left the far rows and columns without a window: 0 there.
        var cs = Origins(c, winC, strideC);
        var ys = Origins(h, winH, strideH);
        var xs = Origins(w, winW, strideW);
        var originC = tensor(cs).repeat_interleave(ys.Length * xs.Length);
        var originY = tensor(ys).repeat_interleave(xs.Length).repeat(cs.Length);
        var originX = tensor(xs).repeat(cs.Length * ys.Length);
        bool perChannel = winC < c;
        var fill = Perturbation.BaselineOrFile(input, options.BaselineFile, options.BaselineFolder, options.Fill, Math.Max(winH, winW) / 2.0, options.FillValue, "fill_value");
        // P×1×H×W boxes over every channel, or P×C×H×W boxes of winC channels (Captum's 3-D sliding window)
        Tensor Masks(long p0, long p)
        {
            var box = Perturbation.BoxMasks(originY.narrow(0, p0, p), originX.narrow(0, p0, p), winH, winW, h, w);
            if (!perChannel) return box;
            var channel = arange(c).view(1, -1);
            var oc = originC.narrow(0, p0, p).view(-1, 1);
            return box * channel.ge(oc).logical_and(channel.lt(oc + winC)).to(box.dtype).view(p, c, 1, 1);
        }
        // When the batch is the whole data (one image in the explorer), progress counts windows, not inputs.
        long windows = originY.shape[0];
        Action<double>? progress = ctx.InputCount == n ? f => ctx.Progress(f, $"window {Math.Round(f * windows)}/{windows}") : null;
        var scores = Perturbation.MaskedScores(ctx, x, fill, windows, Masks, selection, options.MicroBatch, progress: progress);
        var diff = baseScores.view(n, 1) - scores;                                            // N×P
        long planes = perChannel ? c : 1;
        var total = zeros(n, planes * h * w);
        var count = zeros(planes * h * w);
        for (long p0 = 0, positions = originY.shape[0]; p0 < positions; p0 += 256)
        {
            using var chunk = NewDisposeScope();
            long p = Math.Min(256, positions - p0);
            var m = Masks(p0, p).reshape(p, planes * h * w);
            total.add_(diff.narrow(1, p0, p).MatMul(m));
            count.add_(m.sum(0, keepdim: false));
        }
        total = total.view(n, planes, h, w);
        count = count.view(1, planes, h, w);
        var attr = where(count > 0, total / count.clamp_min(1), zeros_like(total)).expand(n, c, h, w).contiguous();
        return new AttributionResult(attr, selection);
    }

    /// <summary>Zennit's occlusion: windows at offsets 0, s, 2s, … &lt; size per axis, each wrapping around the far edge
    /// (Zennit rolls one mask over the image), the copy keeping only the window (or, <c>invert</c>, filling it), and
    /// Σ over the windows covering a pixel of the copy's score.</summary>
    static AttributionResult Zennit(OcclusionOptions options, AttributionInput input, long winH, long winW, long strideH, long strideW)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var (_, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        var ys = Enumerable.Range(0, (int)((h + strideH - 1) / strideH)).Select(i => i * strideH).ToArray();
        var xs = Enumerable.Range(0, (int)((w + strideW - 1) / strideW)).Select(i => i * strideW).ToArray();
        var originY = tensor(ys).repeat_interleave(xs.Length);
        var originX = tensor(xs).repeat(ys.Length);
        long windows = originY.shape[0];
        // P×1×H×W windows, 1 inside: rows r with (r − y₀) mod H < window height, columns likewise.
        Tensor Windows(long p0, long p)
        {
            using var scope = NewDisposeScope();
            var inRow = (arange(h).view(1, -1) - originY.narrow(0, p0, p).view(-1, 1)).remainder(h).lt(winH).to(ScalarType.Float32);
            var inCol = (arange(w).view(1, -1) - originX.narrow(0, p0, p).view(-1, 1)).remainder(w).lt(winW).to(ScalarType.Float32);
            return scope.MoveToOuter((inRow.unsqueeze(2) * inCol.unsqueeze(1)).unsqueeze(1));
        }
        var fill = Perturbation.BaselineOrFile(input, options.BaselineFile, options.BaselineFolder, options.Fill, Math.Max(winH, winW) / 2.0, options.FillValue, "fill_value");
        Action<double>? progress = ctx.InputCount == n ? f => ctx.Progress(f, $"window {Math.Round(f * windows)}/{windows}") : null;
        var scores = Perturbation.MaskedScores(ctx, x, fill, windows, (p0, p) => options.Invert ? Windows(p0, p) : 1 - Windows(p0, p),
            selection, options.MicroBatch, progress: progress);                                       // N×P
        var total = zeros(n, h * w);
        for (long p0 = 0; p0 < windows; p0 += 256)
        {
            using var chunk = NewDisposeScope();
            long p = Math.Min(256, windows - p0);
            total.add_(scores.narrow(1, p0, p).MatMul(Windows(p0, p).reshape(p, h * w)));
        }
        return new AttributionResult(total.view(n, 1, h, w).expand(n, c, h, w).contiguous(), selection);
    }
}
