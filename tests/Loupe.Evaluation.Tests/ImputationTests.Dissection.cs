using Loupe.Abstractions;
using Loupe.Analysis.Evaluation;
using static TorchSharp.torch;

namespace Loupe.Evaluation.Tests;

/// <summary>The nested-dissection path of the imputation and the choice between the paths.</summary>
public partial class ImputationTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void NestedDissectionGivesTheBandedSolutionOnEveryShapeOfMask(bool wide)
    {
        // The multifrontal path against the banded one (same system, another elimination order): random scatters from
        // sparse to all-but-one pixel, blobs, lines along the cuts, wide, tall, one-row and tiny images; with the
        // fronts' products on 8-wide vectors (AVX-512's kernel, emulated where the processor lacks it) and on 4-wide.
        bool before = FrontKernels.Wide;
        FrontKernels.Wide = wide;
        try { DissectionMatchesBanded(); }
        finally { FrontKernels.Wide = before; }
    }

    static void DissectionMatchesBanded()
    {
        var random = new Random(5);
        foreach (var (h, w) in new[] { (1, 1), (1, 9), (9, 1), (2, 3), (5, 7), (13, 21), (21, 13), (40, 40), (57, 33), (96, 96) })
        {
            int hw = h * w;
            var masks = new List<bool[]>();
            foreach (double fraction in new[] { 0.05, 0.3, 0.6, 0.9, 0.99 })
                masks.Add([.. Enumerable.Range(0, hw).Select(_ => random.NextDouble() < fraction)]);
            var allButOne = Enumerable.Repeat(true, hw).ToArray();
            allButOne[random.Next(hw)] = false;
            masks.Add(allButOne);
            // A disc, and the middle row and column (the first cuts' lines) with their neighbours.
            masks.Add([.. Enumerable.Range(0, hw).Select(p => Math.Pow(p / w - h / 2.0, 2) + Math.Pow(p % w - w / 3.0, 2) < hw / 8.0)]);
            masks.Add([.. Enumerable.Range(0, hw).Select(p => Math.Abs(p / w - h / 2) <= 1 || Math.Abs(p % w - w / 2) <= 1)]);
            masks.Add(new bool[hw]);
            masks.Add(Enumerable.Repeat(true, hw).ToArray());
            foreach (var (mask, index) in masks.Select((m, i) => (m, i)))
            {
                var image = Enumerable.Range(0, 3 * hw).Select(_ => random.NextDouble() * 2 - 1).ToArray();
                var banded = (double[])image.Clone();
                var dissected = (double[])image.Clone();
                BandedImputation.Solve(banded, mask, 3, h, w);
                DissectedImputation.Solve(dissected, mask, 3, h, w);
                double diff = banded.Zip(dissected, (a, b) => Math.Abs(a - b)).Max();
                Assert.True(diff < 1e-10, $"{h}×{w}, mask {index}: largest difference {diff}");
                if (mask.Contains(true) && mask.Contains(false))
                    Assert.Contains(Enumerable.Range(0, 3 * hw), i => mask[i % hw] && Math.Abs(dissected[i] - image[i]) > 1e-6);
            }
        }
    }

    [Theory]
    [InlineData(64, 64)]
    [InlineData(57, 90)]
    [InlineData(224, 224)]
    public void WhollyUnknownSubtreesTakeTheAllUnknownFrontsAndTheSameSolution(int h, int w)
    {
        // ROAD's masks from a smooth map (blobs: the nested 10…90 % of a bilinear upsampled random field) leave whole
        // boxes of the dissection and their rings unknown: those fronts come from the all-unknown system's, and the
        // solution is still the banded path's; a speckled mask reuses none.
        var random = new Random(11);
        int hw = h * w, gh = h / 8 + 2, gw = w / 8 + 2;
        var coarse = Enumerable.Range(0, gh * gw).Select(_ => random.NextDouble()).ToArray();
        var map = Enumerable.Range(0, hw).Select(p =>
        {
            double y = (p / w) / 8.0, x = (p % w) / 8.0;
            int y0 = (int)y, x0 = (int)x;
            double fy = y - y0, fx = x - x0;
            return (1 - fy) * ((1 - fx) * coarse[y0 * gw + x0] + fx * coarse[y0 * gw + x0 + 1]) + fy * ((1 - fx) * coarse[(y0 + 1) * gw + x0] + fx * coarse[(y0 + 1) * gw + x0 + 1]);
        }).ToArray();
        var order = Enumerable.Range(0, hw).OrderByDescending(p => map[p]).ToArray();
        var image = Enumerable.Range(0, 3 * hw).Select(_ => random.NextDouble() * 2 - 1).ToArray();
        int reusedSomewhere = 0;
        foreach (double fraction in new[] { 0.1, 0.5, 0.9, 0.999 })
        {
            var mask = new bool[hw];
            foreach (int p in order.Take((int)(fraction * hw))) mask[p] = true;
            var banded = (double[])image.Clone();
            var dissected = (double[])image.Clone();
            BandedImputation.Solve(banded, mask, 3, h, w);
            DissectedImputation.Solve(dissected, mask, 3, h, w);
            reusedSomewhere += DissectedImputation.LastReused;
            double diff = banded.Zip(dissected, (a, b) => Math.Abs(a - b)).Max();
            Assert.True(diff < 1e-10, $"{h}×{w} at {fraction:P0}: largest difference {diff}");
        }
        Assert.True(reusedSomewhere > 0, "no subtree took the all-unknown fronts");
        var speckled = Enumerable.Range(0, hw).Select(_ => random.NextDouble() < 0.5).ToArray();
        DissectedImputation.Solve((double[])image.Clone(), speckled, 3, h, w);
        Assert.Equal(0, DissectedImputation.LastReused);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(6)]
    public void NestedDissectionSolvesAnyNumberOfChannels(int channels)
    {
        // Channels go through the solves four at a time: one, a whole group, and a group and a half give the banded
        // solution per channel, on a blob mask (large fronts) and a scatter (many small ones).
        var random = new Random(channels);
        int h = 45, w = 38, hw = h * w;
        var masks = new[]
        {
            Enumerable.Range(0, hw).Select(p => Math.Pow(p / w - 20, 2) + Math.Pow(p % w - 15, 2) < 300).ToArray(),
            Enumerable.Range(0, hw).Select(_ => random.NextDouble() < 0.4).ToArray(),
        };
        foreach (var mask in masks)
        {
            var image = Enumerable.Range(0, channels * hw).Select(_ => random.NextDouble() * 2 - 1).ToArray();
            var banded = (double[])image.Clone();
            var dissected = (double[])image.Clone();
            BandedImputation.Solve(banded, mask, channels, h, w);
            DissectedImputation.Solve(dissected, mask, channels, h, w);
            double diff = banded.Zip(dissected, (a, b) => Math.Abs(a - b)).Max();
            Assert.True(diff < 1e-10, $"{channels} channels: largest difference {diff}");
            Assert.Contains(Enumerable.Range(0, channels * hw), i => mask[i % hw] && Math.Abs(dissected[i] - image[i]) > 1e-6);
        }
    }

    [Fact]
    public void MidSizeImagesTakeTheFasterPathByTheEstimates()
    {
        using var scope = NewDisposeScope();
        // 112×112 (band at most 113): a blob-shaped 90 % mask is ~3× faster dissected than banded (3.0 against 9.8 ms,
        // docs/benchmarks.md) and goes there; the same blob at 30 % (band ~80) stays banded; a tiny image never counts
        // its band. Both paths give the 90 % mask's numbers to rounding.
        manual_seed(5);
        int side = 112, hw = side * side;
        var smooth = nn.functional.interpolate(rand(1, 1, 7, 7), size: [side, side], mode: InterpolationMode.Bilinear, align_corners: false).flatten();
        var order = smooth.argsort(descending: true).argsort();
        var most = (order < (long)(0.9 * hw)).data<bool>().ToArray();
        var few = (order < (long)(0.3 * hw)).data<bool>().ToArray();
        Assert.Equal(ImputationSolver.Dissected, LinearImputation.DirectPath(most, side, side));
        Assert.Equal(ImputationSolver.Banded, LinearImputation.DirectPath(few, side, side));
        Assert.Equal(ImputationSolver.Banded, LinearImputation.DirectPath(Enumerable.Repeat(true, 28 * 28).ToArray(), 28, 28));
        var x = rand(1, 3, side, side, dtype: ScalarType.Float64);
        var unknown = tensor(most).view(1, 1, side, side);
        var auto = LinearImputation.Solve(x, unknown);
        double diff = (auto - LinearImputation.Solve(x, unknown, ImputationSolver.Banded)).abs().max().item<double>();
        Assert.True(diff < 1e-10, $"largest difference {diff}");
    }

    [Fact]
    public void WideBandsTakeTheDissectionAndAllPathsAgree()
    {
        using var scope = NewDisposeScope();
        // 3×150×150: a blob-shaped 80 % mask (band ~150 > 128) goes to the dissection, a scattered 5 % one (band ~10)
        // stays banded; Auto, Direct and each forced path give the same numbers, and the system's own equations hold.
        manual_seed(9);
        int side = 150, hw = side * side;
        var x = rand(2, 3, side, side, dtype: ScalarType.Float64);
        var smooth = nn.functional.interpolate(rand(1, 1, 10, 10), size: [side, side], mode: InterpolationMode.Bilinear, align_corners: false).flatten();
        var blob = (smooth.argsort(descending: true).argsort() < (long)(0.8 * hw)).view(1, 1, side, side);
        var scattered = (rand(1, 1, side, side) < 0.05);
        var unknown = cat([blob, scattered], 0);
        var masks = unknown.reshape(2, hw).data<bool>().ToArray();
        Assert.Equal(ImputationSolver.Dissected, LinearImputation.DirectPath(masks.AsSpan(0, hw), side, side));
        Assert.Equal(ImputationSolver.Banded, LinearImputation.DirectPath(masks.AsSpan(hw, hw), side, side));
        var (count, band) = LinearImputation.SystemShape(masks.AsSpan(0, hw), side, side);
        Assert.True(band > 128 && LinearImputation.DissectedNanoseconds(count, hw) < LinearImputation.BandedNanoseconds(count, band) / 2);
        // The dissection's storage bound, counted over its boxes (independently: a Python count of the same boxes and
        // rings gives 284,617 and 3,324,153 entries), admits 224×224 and not 1024×1024 under the default limit.
        Assert.Equal(284_617, DissectedImputation.Entries(72, 72));
        Assert.Equal(3_324_153, DissectedImputation.Entries(224, 224));
        Assert.True(DissectedImputation.Entries(1024, 1024) > LinearImputation.DirectEntries);
        var auto = LinearImputation.Solve(x, unknown);
        foreach (var solver in new[] { ImputationSolver.Direct, ImputationSolver.Banded, ImputationSolver.Dissected })
        {
            double diff = (LinearImputation.Solve(x, unknown, solver) - auto).abs().max().item<double>();
            Assert.True(diff < 1e-10, $"{solver}: largest difference {diff}");
        }
        AssertSolves(x, unknown, auto);
        // ROAD's fused path takes the same paths: the same numbers plus the noise.
        var rank = stack([smooth.argsort(descending: true).argsort(), randperm(hw)]);
        long[] point = [(long)(0.8 * hw)];
        var noise = randn([2, LinearImputation.NoiseLength(point, 3, hw)]);
        var fused = LinearImputation.Noisy(x.to(ScalarType.Float32), rank, point, noise, 0.25);
        var removed = (rank < point[0]).view(2, 1, side, side);
        var want = LinearImputation.Solve(x.to(ScalarType.Float32), removed) + 0.25 * DenseNoise(noise, removed, point, 3);
        Assert.True((fused.to(ScalarType.Float64) - want).abs().max().item<double>() < 1e-5);
    }
}
