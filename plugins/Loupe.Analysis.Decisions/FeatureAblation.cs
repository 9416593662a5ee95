using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>How the image is split into features.</summary>
public enum FeatureSegments
{
    /// <summary>Square grid cells of side <c>cell</c>.</summary>
    Grid,
    /// <summary>SLIC superpixels (Achanta et al. 2012) of the image's colours and positions, as scikit-image computes them.</summary>
    Superpixels,
    /// <summary>Every scalar of the input (every channel of every pixel) is a feature: Captum's default (feature_mask=None).</summary>
    Elements,
    /// <summary>The feature ids of a .npy mask (<c>feature_mask</c>), as Captum's feature_mask.</summary>
    Mask,
}

/// <summary>Options of <c>feature-ablation</c>.</summary>
public sealed record FeatureAblationOptions
{
    /// <summary>Feature shape.</summary>
    [Description("grid (square cells), superpixels (scikit-image's SLIC on the displayed image), elements (every scalar, Captum's default) or mask (feature_mask)")]
    public FeatureSegments Segments { get; init; } = FeatureSegments.Grid;
    /// <summary>Superpixel count.</summary>
    [Range(2, 10_000), Description("superpixels: approximate number of segments")]
    public int NSegments { get; init; } = 50;
    /// <summary>SLIC compactness.</summary>
    [Range(0.01, 1000.0), Description("superpixels: SLIC compactness, as scikit-image's (colour distance in Lab for RGB, in [0, 1] after rescaling otherwise, over this; larger = more square)")]
    public double Compactness { get; init; } = 10;
    /// <summary>Grid cell size.</summary>
    [Range(1, 4096), Description("side of the square grid cells (features), in input pixels; edge cells may be smaller")]
    public int Cell { get; init; } = 8;
    /// <summary>Fill.</summary>
    [OrConstant(nameof(FillValue)), Description("what an ablated feature is filled with: zero (normalised), mean, blur, black, or a constant: one value or one per channel in normalised space (Captum's scalar / per-channel baselines), e.g. 0.5 or [0.1, 0.2, 0.3]")]
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
    /// <summary>Feature ids.</summary>
    [FilePath, Description("segments: mask: a .npy of integer feature ids, H×W, C×H×W or 1×C×H×W, broadcastable to the input (a channel axis of C gives per-channel features); elements with the same id are ablated together")]
    public string? FeatureMask { get; init; }
    /// <summary>Copies per forward.</summary>
    [Range(1, 65536), Description("ablated copies per forward pass (default: as many as fill ~64 MiB of activations, at least 8, within settings.memory_budget_mb)")]
    public int? MicroBatch { get; init; }
}

/// <summary>Feature ablation over grid cells (Captum <c>FeatureAblation</c> with a grid feature mask): each cell's pixels
/// get y_c(x) − y_c(x with the cell replaced by the fill). Forward passes only.</summary>
public sealed class FeatureAblation : AttributionAnalysis<FeatureAblationOptions>, ITakesBaseline
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward) { HandlesSideInputs = true };
    /// <inheritdoc/>
    public override string ArtifactName => "feature-ablation";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(FeatureAblationOptions options, AnalysisValidationContext context)
    {
        if ((options.Segments == FeatureSegments.Mask) != (options.FeatureMask is not null))
            yield return "'segments: mask' and 'feature_mask' go together: give both or neither";
        foreach (var e in Features.SegmentOptionErrors(options, options.Segments)) yield return e;
        foreach (var e in Perturbation.CheckConstant(options.FillValue, "fill_value", context.Model.DefaultInput)) yield return e;
        foreach (var e in Perturbation.TensorBaselineErrors(options.BaselineFile, options.BaselineFolder, options.FillValue, "fill")) yield return e;
        foreach (var e in Perturbation.NamedBesideTensorErrors(options, "Fill", options.BaselineFile, options.BaselineFolder)) yield return e;
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(FeatureAblationOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        int cell = options.Cell;
        var (baseScores, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        // The blur baseline's σ follows the feature size: half a cell, or half a superpixel's side.
        double sigma = options.Segments == FeatureSegments.Superpixels ? Math.Sqrt(h * w / (double)options.NSegments) / 2 : cell / 2.0;
        var fill = Perturbation.BaselineOrFile(input, options.BaselineFile, options.BaselineFolder, options.Fill, sigma, options.FillValue, "fill_value");
        if (options.Segments == FeatureSegments.Superpixels) return Superpixels(options, ctx, x, fill, baseScores, selection);
        if (options.Segments is FeatureSegments.Elements or FeatureSegments.Mask)
        {
            using var labels = options.Segments == FeatureSegments.Mask ? FeatureIds.Load(options.FeatureMask!, c, h, w)
                : arange(c * h * w).view(c, h, w);
            return new AttributionResult(ByIds(options, ctx, x, fill, baseScores, selection, labels), selection);
        }
        long gy = (h + cell - 1) / cell, gx = (w + cell - 1) / cell;
        var originY = (arange(gy) * cell).repeat_interleave(gx);
        var originX = (arange(gx) * cell).repeat(gy);
        Tensor Masks(long p0, long p) => Perturbation.BoxMasks(originY.narrow(0, p0, p), originX.narrow(0, p0, p), cell, cell, h, w);
        var scores = Perturbation.MaskedScores(ctx, x, fill, gy * gx, Masks, selection, options.MicroBatch);
        var diff = (baseScores.view(n, 1) - scores).view(n, 1, gy, gx);
        // Each pixel belongs to exactly one cell: expand the cell values back to pixels.
        var attr = diff.repeat_interleave(cell, 2).repeat_interleave(cell, 3)[.., .., ..(int)h, ..(int)w].expand(n, c, h, w).contiguous();
        return new AttributionResult(attr, selection);
    }

    /// <summary>Features given as dense ids per element (C×H×W, 0..K−1): feature k's elements are filled together, and
    /// each element gets y(x) − y(x with its feature filled). Masks are built chunk by chunk (K may be C·H·W).</summary>
    static Tensor ByIds(FeatureAblationOptions options, IAnalysisContext ctx, Tensor x, Tensor fill, Tensor baseScores, TargetSelection selection, Tensor labels)
    {
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        long k = labels.max().item<long>() + 1;
        Tensor Masks(long p0, long p) => (labels.unsqueeze(0) == arange(p0, p0 + p).view(p, 1, 1, 1)).to(ScalarType.Float32);   // p×C×H×W
        var scores = Perturbation.MaskedScores(ctx, x, fill, k, Masks, selection, options.MicroBatch);
        var diff = baseScores.view(n, 1) - scores;                                                                 // N×K
        return diff.index_select(1, labels.flatten()).view(n, c, h, w);
    }

    /// <summary>Each image has its own superpixels: ablate them one by one (all of an image's segments batched).</summary>
    AttributionResult Superpixels(FeatureAblationOptions options, IAnalysisContext ctx, Tensor x, Tensor fill, Tensor baseScores, TargetSelection selection)
    {
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var pixels = ctx.Input.Denormalize(x);
        var maps = new List<Tensor>();
        for (int i = 0; i < n; i++)
        {
            var labels = Slic.Segment(pixels[i], options.NSegments, options.Compactness);
            long k = labels.max().item<long>() + 1;
            var masks = (labels.unsqueeze(0) == arange(k).view(-1, 1, 1)).to(ScalarType.Float32).unsqueeze(1);   // k×1×H×W
            Tensor scores;
            using (SideInputs.ForRows(ctx.Model, [i]))   // row i alone: its side inputs only
                scores = Perturbation.MaskedScores(ctx, x[i].unsqueeze(0), fill[i].unsqueeze(0), k, (p0, p) => masks.narrow(0, p0, p),
                    selection.Rows([i]), options.MicroBatch);
            var diff = baseScores[i] - scores[0];                                                                   // k
            maps.Add(diff.index_select(0, labels.flatten()).view(1, 1, h, w).expand(1, c, h, w));
        }
        return new AttributionResult(cat(maps, 0).contiguous(), selection);
    }
}

/// <summary>Feature masks from .npy files (Captum's <c>feature_mask</c>).</summary>
public static class FeatureIds
{
    /// <summary>The mask's ids broadcast to C×H×W and renumbered densely (0..K−1 in ascending id order).</summary>
    public static Tensor Load(string file, long c, long h, long w)
    {
        using var scope = NewDisposeScope();
        var a = Npy.Read(file);
        var values = a.Data;
        if (values.Any(v => v != Math.Floor(v) || Math.Abs(v) > 1 << 24))
            throw new LoupeException($"{file}: a feature mask holds integer feature ids (whole numbers, |id| ≤ 2^24, saved as float32)");
        var shape = a.Shape.ToList();
        if (shape.Count == 4 && shape[0] == 1) shape.RemoveAt(0);
        if (shape.Count == 2) shape.Insert(0, 1);
        if (shape.Count != 3 || (shape[0] != 1 && shape[0] != c) || (shape[1] != 1 && shape[1] != h) || (shape[2] != 1 && shape[2] != w))
            throw new LoupeException($"{file}: feature mask shape ({string.Join("×", a.Shape)}) does not broadcast to the input {c}×{h}×{w}; give H×W, C×H×W or 1×C×H×W (axes of size 1 broadcast)");
        var ids = tensor(values).to(ScalarType.Int64).view([.. shape]).expand(c, h, w);
        var (_, dense, _) = unique(ids.flatten(), return_inverse: true);
        return scope.MoveToOuter(dense!.view(c, h, w));
    }
}

/// <summary>Options of <c>rise</c>.</summary>
public sealed record RiseOptions
{
    /// <summary>Number of random masks.</summary>
    [Range(1, 1_000_000), Description("number of random masks N")]
    public int Masks { get; init; } = 1000;
    /// <summary>Grid size.</summary>
    [Range(1, 1024), Description("side s of the small random binary grid (upsampled to the image)")]
    public int Grid { get; init; } = 7;
    /// <summary>Keep probability.</summary>
    [Range(0.01, 0.99), Description("probability p that a grid cell is kept")]
    public double Probability { get; init; } = 0.5;
    /// <summary>Score.</summary>
    [Description("score masked copies with the class probability (softmax, as the paper) or the target score")]
    public bool Softmax { get; init; } = true;
    /// <summary>Fill for removed pixels.</summary>
    [OrConstant(nameof(FillValue)), Description("what masked-out pixels become: zero (normalised: the default, as the authors' code multiplies the normalised input by the mask), mean, blur, black (pixels 0), or a constant: one value or one per channel in normalised space (Captum's scalar / per-channel baselines), e.g. 0.5 or [0.1, 0.2, 0.3]")]
    public Fill Fill { get; init; } = Fill.Zero;
    /// <summary>Constant fill.</summary>
    [Description(Perturbation.ConstantDescription + "'fill'")]
    public float[]? FillValue { get; init; }
    /// <summary>Copies per forward.</summary>
    [Range(1, 65536), Description("masked copies per forward pass (default: as many as fill ~64 MiB of activations, at least 8, within settings.memory_budget_mb)")]
    public int? MicroBatch { get; init; }
}

/// <summary>RISE (Petsiuk et al. 2018): saliency = Σ_i f(x ⊙ M_i) M_i / (N·p) over random masks M_i (s×s binary grids
/// with keep probability p, upsampled bilinearly to (s+1)·cell and randomly shifted). Seeded; forward passes only.</summary>
public sealed class Rise : AttributionAnalysis<RiseOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward) { HandlesSideInputs = true };
    /// <inheritdoc/>
    public override string ArtifactName => "rise";

    /// <summary>The masks of a seed (N×1×H×W, 1 = kept), generated in blocks so memory stays bounded.</summary>
    public static Tensor MakeMasks(Generator gen, long count, int grid, double p, long h, long w)
    {
        using var scope = NewDisposeScope();
        long cellH = (h + grid - 1) / grid, cellW = (w + grid - 1) / grid;
        var cells = (rand([count, 1, grid, grid], generator: gen) < p).to(ScalarType.Float32);
        var up = nn.functional.interpolate(cells, [(grid + 1) * cellH, (grid + 1) * cellW], mode: InterpolationMode.Bilinear, align_corners: false);
        var shifts = (rand([count, 2], generator: gen) * tensor(new float[] { cellH, cellW })).to(ScalarType.Int64).ToArray<long>();
        var crops = Enumerable.Range(0, (int)count).Select(i => up[i, .., TensorIndex.Slice(shifts[2 * i], shifts[2 * i] + h), TensorIndex.Slice(shifts[2 * i + 1], shifts[2 * i + 1] + w)]).ToList();
        return scope.MoveToOuter(stack(crops, 0));
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(RiseOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var x = input.Input;
        var (_, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        var fill = Perturbation.Baseline(input.BaselineOf, options.Fill, 4, ctx.Input, options.FillValue);
        var map = WeightedMaskSum(ctx, x, options.Masks, options.Grid, options.Probability,
            keep => Perturbation.MaskedScores(ctx, x, fill, keep.shape[0], (p0, p) => 1 - keep.narrow(0, p0, p), selection, options.MicroBatch, options.Softmax));
        return new AttributionResult(map, selection);
    }

    /// <summary>RISE's map Σ_i w_i M_i / (N·p) over <paramref name="masks"/> seeded random masks (<see cref="MakeMasks"/>),
    /// N×C×H×W (the same map on every channel). The same masks for every batch: they are regenerated from the step seed,
    /// block by block; <paramref name="weights"/> gives the N×count weights of one block of kept-pixel masks
    /// (count×1×H×W): RISE's scores, D-RISE's detection similarities.</summary>
    public static Tensor WeightedMaskSum(IAnalysisContext ctx, Tensor x, int masks, int grid, double probability, Func<Tensor, Tensor> weights)
    {
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var gen = new Generator((ulong)ctx.Seed);
        var sal = zeros(n, h * w);
        const int block = 256;
        for (long m0 = 0; m0 < masks; m0 += block)
        {
            using var scope = NewDisposeScope();
            long count = Math.Min(block, masks - m0);
            var keep = MakeMasks(gen, count, grid, probability, h, w);   // count×1×H×W
            sal.add_(weights(keep).MatMul(keep.view(count, h * w)));
        }
        return (sal / (float)(masks * probability)).view(n, 1, h, w).expand(n, c, h, w).contiguous();
    }
}
