using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Options shared by the methods that switch interpretable features on and off (kernel-shap, lime,
/// shapley-sampling, feature-permutation): how the image is split into features and what an absent feature becomes.</summary>
public record FeatureOptions
{
    /// <summary>Feature shape.</summary>
    [Description("features: grid (square cells of side 'cell', the default), superpixels (scikit-image's SLIC on the displayed image), elements (every scalar of the input, each channel of each pixel: Captum's default, feature_mask=None), or mask (feature_mask); feature_mask overrides the others")]
    public FeatureSegments Segments { get; init; } = FeatureSegments.Grid;
    /// <summary>Grid cell size.</summary>
    [Range(1, 4096), Description("grid: side of the square cells, in input pixels; edge cells may be smaller")]
    public int Cell { get; init; } = 8;
    /// <summary>Superpixel count.</summary>
    [Range(2, 10_000), Description("superpixels: approximate number of segments")]
    public int NSegments { get; init; } = 50;
    /// <summary>SLIC compactness.</summary>
    [Range(0.01, 1000.0), Description("superpixels: SLIC compactness, as scikit-image's (colour distance in Lab for RGB, in [0, 1] after rescaling otherwise, over this; larger = more square)")]
    public double Compactness { get; init; } = 10;
    /// <summary>Feature mask file.</summary>
    [FilePath, Description("a .npy feature mask (Captum's feature_mask): H×W (a feature is pixels, every channel together) or C×H×W (per channel); values equal = one feature, relabelled 0..M−1 in ascending order")]
    public string? FeatureMask { get; init; }
    /// <summary>Fill.</summary>
    [Alias("fill"), OrConstant(nameof(BaselineValue)), Description("what an absent feature becomes (Captum's baselines; also spelled fill): zero (normalised), mean, blur, black, or a constant: one value or one per channel in normalised space (Captum's scalar / per-channel baselines), e.g. 0.5 or [0.1, 0.2, 0.3]")]
    public Fill Baseline { get; init; } = Fill.Zero;
    /// <summary>Constant baseline (older spelling; <c>fill: 0.5</c> binds here).</summary>
    [Description(Perturbation.ConstantDescription + "'fill' (or 'baseline')")]
    public float[]? BaselineValue { get; init; }
    /// <summary>Baseline from a file.</summary>
    [FilePath, Description(Perturbation.BaselineFileDescription)]
    public string? BaselineFile { get; init; }
    /// <summary>Per-input baselines from a folder.</summary>
    [FilePath(Directory = true), Description(Perturbation.BaselineFolderDescription)]
    public string? BaselineFolder { get; init; }
    /// <summary>Copies per forward.</summary>
    [Range(1, 65536), Description("perturbed copies per forward pass (default: as many as fill ~64 MiB of activations, at least 8, within settings.memory_budget_mb)")]
    public int? MicroBatch { get; init; }
}

/// <summary>Interpretable features of images (label maps) and batched evaluation of feature coalitions.</summary>
public static class Features
{
    /// <summary>Feature labels of image <paramref name="i"/> of the batch, int64, dense 0..M−1: H×W (a feature is a pixel
    /// region, every channel together) or C×H×W (per channel: every scalar with <c>segments: elements</c>, or a C×H×W
    /// feature_mask).</summary>
    public static Tensor Labels(FeatureOptions options, IAnalysisContext ctx, Tensor x, int i)
    {
        long c = x.shape[1], h = x.shape[2], w = x.shape[3];
        if (options.FeatureMask is { } file) return MaskFile(file, c, h, w);
        if (options.Segments == FeatureSegments.Superpixels)
            return Slic.Segment(ctx.Input.Denormalize(x[i].unsqueeze(0))[0], options.NSegments, options.Compactness);
        if (options.Segments == FeatureSegments.Elements) return c == 1 ? arange(h * w).view(h, w) : arange(c * h * w).view(c, h, w);
        return Grid(h, w, options.Cell);
    }

    /// <summary>The planes a label map covers one by one: its channels when it is C×H×W, else 1 (all channels together).</summary>
    public static long Planes(Tensor labels) => labels.dim() == 3 ? labels.shape[0] : 1;

    /// <summary>Masks of the absent part of coalitions <paramref name="present"/> (p×M, 1 = feature present): 1 where the
    /// image takes the fill, p×planes×H×W.</summary>
    public static Tensor Absent(Tensor present, Tensor labels) =>
        (1 - present.to(ScalarType.Float32).index_select(1, labels.flatten())).view(present.shape[0], Planes(labels), labels.shape[^2], labels.shape[^1]);

    /// <summary>Grid cells of side <paramref name="cell"/> numbered row by row (H×W int64).</summary>
    public static Tensor Grid(long h, long w, int cell)
    {
        using var scope = NewDisposeScope();
        long gx = (w + cell - 1) / cell;
        var rows = arange(h).div(cell, rounding_mode: RoundingMode.floor).view(-1, 1);
        var cols = arange(w).div(cell, rounding_mode: RoundingMode.floor).view(1, -1);
        return scope.MoveToOuter((rows * gx + cols).contiguous());
    }

    /// <summary>A feature mask from a .npy H×W, 1×H×W or C×H×W file, relabelled densely (H×W, or C×H×W per channel).</summary>
    public static Tensor MaskFile(string file, long c, long h, long w)
    {
        using var scope = NewDisposeScope();
        var m = Npy.Read(file).ToTensor();
        if (m.dim() == 3 && m.shape[0] == 1) m = m[0];
        bool perChannel = m.dim() == 3 && m.shape[0] == c && c > 1;
        if (!(m.dim() == 2 || perChannel) || m.shape[^2] != h || m.shape[^1] != w)
            throw new LoupeException($"{file}: feature_mask shape ({string.Join("×", m.shape)}) does not match the input: give {h}×{w} (pixels, all channels together) or {c}×{h}×{w} (per channel)");
        var (_, dense, _) = unique(m.flatten(), sorted: true, return_inverse: true);
        return scope.MoveToOuter(dense!.view(m.shape).to(ScalarType.Int64));
    }

    /// <summary>The segmentation's own options set under another <paramref name="segments"/>: <c>cell</c> is the
    /// grid's, <c>n_segments</c> and <c>compactness</c> the superpixels' (properties <c>Cell</c>, <c>NSegments</c>,
    /// <c>Compactness</c> of <paramref name="options"/>).</summary>
    public static IEnumerable<string> SegmentOptionErrors(object options, FeatureSegments segments) =>
        OptionRules.OnlyWith(options, segments == FeatureSegments.Grid, "segments: grid", "Cell")
            .Concat(OptionRules.OnlyWith(options, segments == FeatureSegments.Superpixels, "segments: superpixels", "NSegments", "Compactness"));

    /// <summary>Segment choices these methods cannot honour: <c>segments: mask</c> needs its <c>feature_mask</c> (until
    /// 2026-12-05 it fell back to the grid silently; so did <c>elements</c>, then refused, and since 2026-12-06 every
    /// scalar a feature as Captum's feature_mask=None).</summary>
    public static IEnumerable<string> SegmentErrors(FeatureOptions o, string id)
    {
        foreach (var e in SegmentOptionErrors(o, o.Segments)) yield return e;
        foreach (var e in Perturbation.TensorBaselineErrors(o.BaselineFile, o.BaselineFolder, o.BaselineValue, "fill")) yield return e;
        foreach (var e in Perturbation.NamedBesideTensorErrors(o, "Baseline", o.BaselineFile, o.BaselineFolder)) yield return e;
        if (o.Segments == FeatureSegments.Mask && o.FeatureMask is null)
            yield return "option 'segments': mask needs 'feature_mask' (a .npy H×W of feature ids)";
    }

    /// <summary>Number of features of a label map.</summary>
    public static long Count(Tensor labels) => labels.max().item<long>() + 1;

    /// <summary>Target scores of one image (x: 1×C×H×W) for coalitions <paramref name="z"/> (S×M, 1 = feature present,
    /// kept from the image; 0 = absent, taken from <paramref name="fill"/>), a chunk of coalitions per forward. Returns S.</summary>
    public static Tensor CoalitionScores(IAnalysisContext ctx, Tensor x, Tensor fill, Tensor labels, Tensor z, TargetSelection selection, int? microBatch)
    {
        var zf = z.to(ScalarType.Float32);
        return Perturbation.MaskedScores(ctx, x, fill, z.shape[0], (p0, p) => Absent(zf.narrow(0, p0, p), labels), selection, microBatch)[0];
    }

    /// <summary>Feature values (M of them) spread to the pixels (or, per channel, the scalars) of each feature: 1×C×H×W.</summary>
    public static Tensor ToPixels(Tensor values, Tensor labels, long c)
    {
        long h = labels.shape[^2], w = labels.shape[^1];
        return values.index_select(0, labels.flatten()).view(1, Planes(labels), h, w).expand(1, c, h, w);
    }

    /// <summary>Per-input generators: step seed × input id (<see cref="InputSeeds"/>); rows without ids use "#row".</summary>
    public static Generator[] Generators(IAnalysisContext ctx, string[]? ids, long n) =>
        Enumerable.Range(0, (int)n).Select(i => new Generator(InputSeeds.For(ctx.Seed, ids?[i] ?? $"#{i}"))).ToArray();
}
