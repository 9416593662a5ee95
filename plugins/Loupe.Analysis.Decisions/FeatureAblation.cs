using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Options of <c>feature-ablation</c>.</summary>
public sealed record FeatureAblationOptions
{
    /// <summary>Grid cell size.</summary>
    [Range(1, 4096), Description("side of the square grid cells (features), in input pixels; edge cells may be smaller")]
    public int Cell { get; init; } = 8;
    /// <summary>Fill.</summary>
    [Description("what an ablated cell is filled with: zero (normalised), mean, blur or black")]
    public Fill Fill { get; init; } = Fill.Zero;
    /// <summary>Copies per forward.</summary>
    [Range(1, 65536), Description("ablated copies per forward pass (default: as many as 64 RGB 224² images hold, at most 1024)")]
    public int? MicroBatch { get; init; }
}

/// <summary>Feature ablation over grid cells (Captum <c>FeatureAblation</c> with a grid feature mask): each cell's pixels
/// get y_c(x) − y_c(x with the cell replaced by the fill). Forward passes only.</summary>
public sealed class FeatureAblation : AttributionAnalysis<FeatureAblationOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    /// <inheritdoc/>
    public override string ArtifactName => "feature-ablation";

    /// <inheritdoc/>
    public override AttributionResult Attribute(FeatureAblationOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        int cell = options.Cell;
        var (baseScores, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        long gy = (h + cell - 1) / cell, gx = (w + cell - 1) / cell;
        var originY = (arange(gy) * cell).repeat_interleave(gx);
        var originX = (arange(gx) * cell).repeat(gy);
        var fill = Perturbation.Baseline(x, options.Fill, cell / 2.0, ctx.Input);
        Tensor Masks(long p0, long p) => Perturbation.BoxMasks(originY.narrow(0, p0, p), originX.narrow(0, p0, p), cell, cell, h, w);
        var scores = Perturbation.MaskedScores(ctx, x, fill, gy * gx, Masks, selection, options.MicroBatch);
        var diff = (baseScores.view(n, 1) - scores).view(n, 1, gy, gx);
        // Each pixel belongs to exactly one cell: expand the cell values back to pixels.
        var attr = diff.repeat_interleave(cell, 2).repeat_interleave(cell, 3)[.., .., ..(int)h, ..(int)w].expand(n, c, h, w).contiguous();
        return new AttributionResult(attr, selection);
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
    [Description("what masked-out pixels become: zero (normalised), mean, blur or black (the paper multiplies pixels by the mask: black)")]
    public Fill Fill { get; init; } = Fill.Black;
    /// <summary>Copies per forward.</summary>
    [Range(1, 65536), Description("masked copies per forward pass (default: as many as 64 RGB 224² images hold, at most 1024)")]
    public int? MicroBatch { get; init; }
}

/// <summary>RISE (Petsiuk et al. 2018): saliency = Σ_i f(x ⊙ M_i) M_i / (N·p) over random masks M_i (s×s binary grids
/// with keep probability p, upsampled bilinearly to (s+1)·cell and randomly shifted). Seeded; forward passes only.</summary>
public sealed class Rise : AttributionAnalysis<RiseOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    /// <inheritdoc/>
    public override string ArtifactName => "rise";

    /// <summary>The masks of a seed (N×1×H×W, 1 = kept), generated in blocks so memory stays bounded.</summary>
    public static Tensor MakeMasks(Generator gen, long count, int grid, double p, long h, long w)
    {
        using var scope = NewDisposeScope();
        long cellH = (h + grid - 1) / grid, cellW = (w + grid - 1) / grid;
        var cells = (rand([count, 1, grid, grid], generator: gen) < p).to(ScalarType.Float32);
        var up = nn.functional.interpolate(cells, [(grid + 1) * cellH, (grid + 1) * cellW], mode: InterpolationMode.Bilinear, align_corners: false);
        var shifts = (rand([count, 2], generator: gen) * tensor(new float[] { cellH, cellW })).to(ScalarType.Int64).data<long>().ToArray();
        var crops = Enumerable.Range(0, (int)count).Select(i => up[i, .., TensorIndex.Slice(shifts[2 * i], shifts[2 * i] + h), TensorIndex.Slice(shifts[2 * i + 1], shifts[2 * i + 1] + w)]).ToList();
        return scope.MoveToOuter(stack(crops, 0));
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(RiseOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var (_, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        var fill = Perturbation.Baseline(x, options.Fill, 4, ctx.Input);
        // The same masks for every batch: regenerate them from the step seed, block by block.
        var gen = new Generator((ulong)ctx.Seed);
        var sal = zeros(n, h * w);
        const int block = 256;
        for (long m0 = 0; m0 < options.Masks; m0 += block)
        {
            using var scope = NewDisposeScope();
            long count = Math.Min(block, options.Masks - m0);
            var keep = MakeMasks(gen, count, options.Grid, options.Probability, h, w);   // count×1×H×W
            var scores = Perturbation.MaskedScores(ctx, x, fill, count, (p0, p) => 1 - keep.narrow(0, p0, p), selection, options.MicroBatch, options.Softmax);
            sal.add_(scores.matmul(keep.view(count, h * w)));
        }
        var map = (sal / (float)(options.Masks * options.Probability)).view(n, 1, h, w).expand(n, c, h, w).contiguous();
        return new AttributionResult(map, selection);
    }
}
