using Loupe.Analysis.Evaluation;
using static TorchSharp.torch;

namespace Loupe.Evaluation.Tests;

/// <summary>The banded path's component numbering (plugins/Loupe.Analysis.Evaluation/MaskComponents.cs): masks of many
/// regions are factorised region by region, with the same numbers as the dissection and the system's own equations.
/// </summary>
public class ImputationComponentTests
{
    [Fact]
    public void TheBandCountsOneRegionsUnknownsNotTheRowsOthers()
    {
        // Two 3×3 blocks side by side in a 10×60 image (wide enough for the component order). In raster order the
        // down-right neighbour of a block's top-left pixel is 3 + 3 + 1 = 7 unknowns later (the other block's row lies
        // between); block by block it is 3 + 1 = 4.
        var mask = new bool[10 * 60];
        foreach (int x0 in new[] { 5, 40 })
            for (int y = 2; y < 5; y++)
                for (int x = x0; x < x0 + 3; x++) mask[y * 60 + x] = true;
        Assert.Equal((18, 4), LinearImputation.SystemShape(mask, 10, 60));
        // One region of three pixels on a diagonal: its raster order is its component order, band 1.
        var stairs = new bool[10 * 60];
        stairs[1 * 60 + 1] = stairs[2 * 60 + 2] = stairs[3 * 60 + 3] = true;
        Assert.Equal((3, 1), LinearImputation.SystemShape(stairs, 10, 60));
    }

    [Fact]
    public void ManyRegionsSolveTheSameSystemAsTheDissection()
    {
        using var scope = NewDisposeScope();
        // 96×96: a white-noise mask at 30 % (thousands of regions, 8-connected, none spanning the image) and a mask of
        // a few blobs at 20 %; both banded by region. The dissection (its own numbering) must give the same numbers and
        // the equations must hold at every unknown pixel.
        manual_seed(21);
        int side = 96, hw = side * side;
        var x = rand(2, 3, side, side, dtype: ScalarType.Float64);
        var speckles = randperm(hw).argsort() < (long)(0.3 * hw);
        var smooth = nn.functional.interpolate(rand(1, 1, 8, 8), size: [side, side], mode: InterpolationMode.Bilinear, align_corners: false).flatten();
        var blobs = smooth.argsort(descending: true).argsort() < (long)(0.2 * hw);
        var unknown = stack([speckles, blobs]).view(2, 1, side, side);
        var masks = unknown.reshape(2, hw).data<bool>().ToArray();
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(ImputationSolver.Banded, LinearImputation.DirectPath(masks.AsSpan(i * hw, hw), side, side));
            var (_, band) = LinearImputation.SystemShape(masks.AsSpan(i * hw, hw), side, side);
            Assert.True(band < side / 2, $"mask {i}: band {band}");   // raster order: about the unknowns of a row or more
        }
        var banded = LinearImputation.Solve(x, unknown, ImputationSolver.Banded);
        double diff = (banded - LinearImputation.Solve(x, unknown, ImputationSolver.Dissected)).abs().max().item<double>();
        Assert.True(diff < 1e-10, $"largest difference from the dissection {diff}");
        ImputationTests.AssertSolves(x, unknown, banded);
        // ROAD's fused path (which reuses the order its path choice computed) gives the same numbers plus the noise.
        var rank = stack([randperm(hw), smooth.argsort(descending: true).argsort()]);
        long[] points = [(long)(0.1 * hw), (long)(0.3 * hw)];
        var noise = randn([2, LinearImputation.NoiseLength(points, 3, hw)]);
        var fused = LinearImputation.Noisy(x, rank, points, noise, 0.25);
        var removed = (rank.unsqueeze(1) < tensor(points).view(1, -1, 1)).view(-1, 1, side, side);
        var copies = x.unsqueeze(1).expand(2, 2, 3, side, side).reshape(-1, 3, side, side);
        var want = LinearImputation.Solve(copies, removed, ImputationSolver.Dissected) + 0.25 * ImputationTests.DenseNoise(noise, removed, points, 3);
        Assert.True((fused - want).abs().max().item<double>() < 1e-10);
    }
}
