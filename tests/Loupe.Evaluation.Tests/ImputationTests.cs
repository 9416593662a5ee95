using Loupe.Abstractions;
using Loupe.Analysis.Evaluation;
using static TorchSharp.torch;

namespace Loupe.Evaluation.Tests;

/// <summary>ROAD's linear imputation (<see cref="LinearImputation"/>) against the dense solve of Rong et al.'s system in
/// numpy (tests/fixtures/make_quality_more_fixtures.py, imputation_fixture: 13 × 10 images of 3 channels, five masks
/// from scattered to all-but-one pixel), and closed forms.</summary>
public partial class ImputationTests
{
    static Tensor Load(string name)
    {
        var a = Npy.Read(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", name));
        return tensor(a.Data).view(a.Shape);
    }

    /// <summary>A little-endian float64 .npy (the SDK's reader takes float32 only): header length at byte 8 (format
    /// 1.0), then the values in C order.</summary>
    static Tensor LoadFloat64(string name, long[] shape)
    {
        var bytes = File.ReadAllBytes(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", name));
        int header = 10 + BitConverter.ToUInt16(bytes, 8);
        Assert.Contains("'descr': '<f8'", System.Text.Encoding.ASCII.GetString(bytes, 10, header - 10));
        var values = new double[(bytes.Length - header) / 8];
        Buffer.BlockCopy(bytes, header, values, 0, values.Length * 8);
        return tensor(values).view(shape);
    }

    [Fact]
    public void TheBatchedSolveMatchesTheDenseSystemPerImageAndChannel()
    {
        using var scope = NewDisposeScope();
        var x = Load("impute_inputs.npy");
        var unknown = Load("impute_masks.npy") > 0.5;
        var want = Load("impute_expected.npy").to(ScalarType.Float64);
        var got = LinearImputation.Solve(x, unknown);
        Assert.Equal(ScalarType.Float64, got.dtype);
        Assert.Equal(want.shape, got.shape);
        var err = (got - want).abs() - 1e-6 * want.abs();
        Assert.True(err.max().item<double>() <= 1e-6, $"largest deviation from numpy: {(got - want).abs().max().item<double>()}");
        // The imputed pixels moved (the check is not vacuous) and the known ones did not.
        var known = (~unknown).expand_as(x);
        Assert.True((got - x.to(ScalarType.Float64)).abs().masked_select(~known).min().item<double>() > 1e-4);
        Assert.Equal(0.0, (got - x.to(ScalarType.Float64)).abs().masked_select(known).max().item<double>());
        // Each image alone gives the same numbers as the batch (the systems do not share step sizes).
        for (long i = 0; i < x.shape[0]; i++)
            Assert.True((LinearImputation.Solve(x.narrow(0, i, 1), unknown.narrow(0, i, 1)) - got.narrow(0, i, 1)).abs().max().item<double>() < 1e-9, $"image {i}");
    }

    [Fact]
    public void AConstantImageStaysConstantAndAFullyUnknownOneIsZero()
    {
        using var scope = NewDisposeScope();
        // Weighted means of a constant are that constant, whatever the mask (scattered, border, block).
        var mask = (arange(7 * 9).view(1, 1, 7, 9) % 3 == 0) | (arange(7 * 9).view(1, 1, 7, 9) >= 40);
        var x = full(1, 2, 7, 9, 0.25f);
        Assert.True((LinearImputation.Solve(x, mask) - 0.25).abs().max().item<double>() < 1e-10);
        // No known pixel: the system has no data; the image stays at 0 (as Loupe documents), not NaN.
        var all = ones(1, 1, 7, 9, dtype: ScalarType.Bool);
        Assert.Equal(0.0, LinearImputation.Solve(randn(1, 1, 7, 9), all).abs().max().item<double>());
    }

    [Fact]
    public void TheDirectPathMatchesTheDenseSolveToRoundoffAndIsTheDefaultOnSmallImages()
    {
        using var scope = NewDisposeScope();
        var x = Load("impute_inputs.npy");
        var unknown = Load("impute_masks.npy") > 0.5;
        var want = LoadFloat64("impute_expected64.npy", [5, 3, 13, 10]);
        var direct = LinearImputation.Solve(x, unknown, ImputationSolver.Direct);
        Assert.True((direct - want).abs().max().item<double>() <= 1e-12, $"largest deviation from numpy: {(direct - want).abs().max().item<double>()}");
        // Auto takes the direct path on every image here (n·b² far below 32·H·W·(H+W)) and gives the same numbers.
        var masks = unknown.reshape(5, 130).data<bool>().ToArray();
        for (int i = 0; i < 5; i++) Assert.True(LinearImputation.PrefersDirect(masks.AsSpan(i * 130, 130), 13, 10), $"image {i}");
        Assert.Equal(0.0, (LinearImputation.Solve(x, unknown) - direct).abs().max().item<double>());
    }

    [Fact]
    public void TheDirectAndConjugateGradientPathsAgreeOnRoadLikeMasks()
    {
        using var scope = NewDisposeScope();
        // 28×28 like the bench row: the k pixels of a random ranking at 10…90 %, and blocks touching the borders.
        manual_seed(2291);
        var x = rand(7, 2, 28, 28, dtype: ScalarType.Float64);
        var rank = randperm(784).view(1, 1, 28, 28);
        var unknown = cat([rank < 78, rank < 235, rank < 392, rank < 548, rank < 705,
            (arange(28).view(1, 1, 28, 1) >= 10) & (arange(28).view(1, 1, 1, 28) < 20),
            (arange(28).view(1, 1, 28, 1) + arange(28).view(1, 1, 1, 28)) % 5 != 0], 0);
        var cg = LinearImputation.Solve(x, unknown, ImputationSolver.ConjugateGradient);
        var direct = LinearImputation.Solve(x, unknown, ImputationSolver.Direct);
        Assert.True((cg - direct).abs().max().item<double>() < 1e-7, $"largest difference: {(cg - direct).abs().max().item<double>()}");
        Assert.True((direct - x).abs().masked_select(unknown.expand_as(x)).min().item<double>() > 1e-6);   // imputed pixels moved
    }

    [Fact]
    public void RoadsFusedNoisyImputationIsTheSolveOfEachCopyPlusItsNoiseAtTheImputedPixels()
    {
        using var scope = NewDisposeScope();
        // Two inputs of 3 channels, 13×21 (wider than tall) and 21×13, float32 as a model takes them; five points
        // from none to every pixel; one larger image whose near-full masks take the conjugate-gradient path under a
        // factor limit of 100,000 entries.
        manual_seed(77);
        foreach (var (h, w) in new[] { (13, 21), (21, 13), (72, 72) })
        {
            int d = h * w, n = 2;
            long[] limits = h == 72 ? [300, d - 1] : [0, 30, 150, d - 1, d];
            int p = limits.Length;
            var x = randn([n, 3, h, w]);
            var rank = stack([randperm(d), randperm(d)]);
            var noise = randn([n, LinearImputation.NoiseLength(limits, 3, d)]);
            var unknown = (rank.unsqueeze(1) < tensor(limits).view(1, p, 1)).view(n * p, 1, h, w);
            var copies = x.unsqueeze(1).expand(n, p, 3, h, w).reshape(n * p, 3, h, w);
            long limit = h == 72 ? 100_000 : LinearImputation.DirectEntries;
            var want = LinearImputation.Solve(copies, unknown, directEntries: limit) + 0.5 * DenseNoise(noise, unknown, limits, 3);
            Tensor fused = null!;
            foreach (var z in new[] { noise, noise.to(ScalarType.Float64) })   // the noise read as drawn, or converted
            {
                fused = LinearImputation.Noisy(x, rank, limits, z, 0.5, limit);
                Assert.Equal(ScalarType.Float32, fused.dtype);
                Assert.Equal([n * p, 3, h, w], fused.shape);
                double diff = (fused.to(ScalarType.Float64) - want).abs().max().item<double>();
                Assert.True(diff < 1e-5, $"{h}×{w}, {z.dtype} noise: largest difference {diff}");
            }
            if (h != 72) Assert.Equal(0.0, (fused.narrow(0, 0, 1) - x.narrow(0, 0, 1)).abs().max().item<float>());   // point 0: the input itself
        }
        // The noise's layout rests on each rank row being a permutation, and on its length: both are checked.
        var y = randn([1, 3, 5, 6]);
        Assert.Throws<ArgumentException>(() => LinearImputation.Noisy(y, zeros([1, 30], dtype: ScalarType.Int64), [10], randn([1, 30]), 0.5));
        Assert.Throws<ArgumentException>(() => LinearImputation.Noisy(y, randperm(30).unsqueeze(0), [10], randn([1, 31]), 0.5));
    }

    [Fact]
    public void ALargeDirectSystemSatisfiesItsEquations()
    {
        using var scope = NewDisposeScope();
        // 224×224 with a 60-row band unknown: 13,440 unknowns, band 225, ~3 M factor entries (under the direct limit),
        // which take the path that does not keep its storage. Each unknown must equal the weighted mean of its
        // in-image neighbours (the system's own equations, by a 3×3 convolution).
        manual_seed(11);
        var x = rand(1, 1, 224, 224, dtype: ScalarType.Float64);
        var unknown = ((arange(224).view(1, 1, 224, 1) >= 80) & (arange(224).view(1, 1, 224, 1) < 140)).expand(1, 1, 224, 224).contiguous();
        Assert.True(LinearImputation.PrefersDirect(unknown.reshape(-1).data<bool>().ToArray(), 224, 224));
        var v = LinearImputation.Solve(x, unknown);
        var k = tensor(new[] { 1 / 12.0, 1 / 6.0, 1 / 12.0, 1 / 6.0, 0, 1 / 6.0, 1 / 12.0, 1 / 6.0, 1 / 12.0 }, dtype: ScalarType.Float64).view(1, 1, 3, 3);
        var degree = nn.functional.conv2d(ones_like(v), k, padding: [1, 1]);
        var residual = (degree * v - nn.functional.conv2d(v, k, padding: [1, 1])).masked_select(unknown);
        Assert.True(residual.abs().max().item<double>() < 1e-10, $"largest residual {residual.abs().max().item<double>()}");
        Assert.Equal(0.0, (v - x).masked_select(unknown.logical_not()).abs().max().item<double>());   // known pixels kept
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TheBandedPathSatisfiesTheSystemsEquationsOnBothVectorWidths(bool wide)
    {
        // The banded factorisation and its blocked solves on 8-wide (AVX-512; emulated where the processor lacks it) and
        // 4-wide vectors: every shape of system (1 to ~2,000 unknowns, so that blocks of four columns end at every
        // remainder; bands from 1 to W + 1; one to five channels) against the system's own equations — each unknown
        // the weighted mean of its in-image neighbours, by a 3×3 convolution — and the two widths against each other.
        using var scope = NewDisposeScope();
        var random = new Random(17);
        var k = tensor(new[] { 1 / 12.0, 1 / 6.0, 1 / 12.0, 1 / 6.0, 0, 1 / 6.0, 1 / 12.0, 1 / 6.0, 1 / 12.0 }, dtype: ScalarType.Float64).view(1, 1, 3, 3);
        bool before = BandedImputation.Wide;
        try
        {
            foreach (var (h, w, c) in new[] { (1, 2, 1), (1, 7, 2), (2, 2, 1), (3, 5, 3), (5, 3, 1), (7, 9, 5), (13, 10, 3), (28, 28, 1), (9, 40, 2), (40, 9, 1), (45, 45, 1) })
                foreach (double fraction in new[] { 0.05, 0.3, 0.6, 0.9, 1.0 })
                {
                    int hw = h * w;
                    var mask = Enumerable.Range(0, hw).Select(_ => random.NextDouble() < fraction).ToArray();
                    mask[random.Next(hw)] = false;   // at least one known pixel
                    if (!mask.Contains(true)) mask[(random.Next(hw) + 1) % hw] = hw > 1;
                    var image = Enumerable.Range(0, c * hw).Select(_ => random.NextDouble() * 2 - 1).ToArray();
                    var solved = new double[2][];
                    foreach (bool width in new[] { wide, !wide })
                    {
                        BandedImputation.Wide = width;
                        var v = (double[])image.Clone();
                        BandedImputation.Solve(v, mask, c, h, w);
                        solved[width == wide ? 0 : 1] = v;
                    }
                    var got = tensor(solved[0], dtype: ScalarType.Float64).view(c, 1, h, w);
                    var unknown = tensor(mask).view(1, 1, h, w).expand(c, 1, h, w);
                    var degree = nn.functional.conv2d(ones_like(got), k, padding: [1, 1]);
                    var residual = (degree * got - nn.functional.conv2d(got, k, padding: [1, 1])).masked_select(unknown);
                    string where = $"{h}×{w}×{c}, {fraction:P0} unknown ({mask.Count(m => m)}), wide: {wide}";
                    if (residual.numel() > 0) Assert.True(residual.abs().max().item<double>() < 1e-10, $"{where}: largest residual {residual.abs().max().item<double>()}");
                    Assert.Equal(0.0, (got - tensor(image, dtype: ScalarType.Float64).view(c, 1, h, w)).masked_select(unknown.logical_not()).abs().max().item<double>());
                    Assert.True(solved[0].Zip(solved[1], (a, b) => Math.Abs(a - b)).Max() < 1e-12, $"{where}: the widths differ");
                }
        }
        finally { BandedImputation.Wide = before; }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void SystemsSolvedTogetherInVectorLanesGiveEachItsOwnSolve(bool wide)
    {
        // ROAD's copies of one point solved one per lane (LaneImputation: eight lanes on AVX-512, four on AVX2, both
        // run here) against each solved alone by the banded path: full and partial groups (the lanes past them solve the
        // identity), one and three channels, shapes whose band differs from lane to lane, no unknown and all unknown;
        // groups whose masks differ in size are refused.
        var random = new Random(23);
        int lanes = wide ? 8 : 4;
        foreach (var (h, w, c) in new[] { (28, 28, 1), (13, 21, 3), (21, 13, 1), (5, 7, 3), (1, 9, 1), (40, 6, 1) })
            foreach (int count in new[] { lanes, 3, 1 })
                foreach (int unknown in new[] { 0, 1, h * w / 10, h * w / 2, h * w * 9 / 10, h * w - 1, h * w })
                {
                    int hw = h * w, chw = c * hw;
                    var masks = new bool[count * hw];
                    for (int s = 0; s < count; s++)
                        foreach (int q in Enumerable.Range(0, hw).OrderBy(_ => random.Next()).Take(unknown)) masks[s * hw + q] = true;
                    var images = Enumerable.Range(0, count * chw).Select(_ => random.NextDouble() * 2 - 1).ToArray();
                    var together = (double[])images.Clone();
                    if (wide) LaneImputation.Solve<Lanes8, System.Runtime.Intrinsics.Vector512<double>>(together, masks, count, c, h, w);
                    else LaneImputation.Solve<Lanes4, System.Runtime.Intrinsics.Vector256<double>>(together, masks, count, c, h, w);
                    for (int s = 0; s < count; s++)
                    {
                        var alone = images.AsSpan(s * chw, chw).ToArray();
                        BandedImputation.Solve(alone, masks.AsSpan(s * hw, hw), c, h, w);
                        double diff = alone.Zip(together.AsSpan(s * chw, chw).ToArray(), (a, b) => Math.Abs(a - b)).Max();
                        Assert.True(diff < 1e-12, $"{h}×{w}×{c}, {count} of {lanes} lanes, {unknown} unknowns, image {s}: largest difference {diff}");
                    }
                }
        var uneven = new bool[2 * 12];
        uneven[0] = uneven[12] = uneven[13] = true;
        Assert.Throws<ArgumentException>(() => LaneImputation.Solve<Lanes4, System.Runtime.Intrinsics.Vector256<double>>(new double[24], uneven, 2, 1, 3, 4));
    }

    [Fact]
    public void ABatchMixingBothPathsGivesEachImageItsOwnSolve()
    {
        using var scope = NewDisposeScope();
        // With a factor limit of 100,000 entries: 72×72 with all but one pixel unknown (5183 unknowns, band 73: 5183·81
        // entries) takes CG; a scattered mask (~1,550 unknowns, band ~25) goes direct.
        const long limit = 100_000;
        var x = rand(2, 3, 72, 72, dtype: ScalarType.Float64);
        var unknown = stack([ones(1, 72, 72, dtype: ScalarType.Bool), rand(1, 72, 72) < 0.3], 0);
        unknown[0, 0, 40, 30].fill_(false);
        var masks = unknown.reshape(2, 72 * 72).data<bool>().ToArray();
        Assert.False(LinearImputation.PrefersDirect(masks.AsSpan(0, 72 * 72), 72, 72, limit));
        Assert.True(LinearImputation.PrefersDirect(masks.AsSpan(72 * 72, 72 * 72), 72, 72, limit));
        Assert.True(LinearImputation.PrefersDirect(masks.AsSpan(0, 72 * 72), 72, 72));   // the default limit: direct
        var auto = LinearImputation.Solve(x, unknown, directEntries: limit);
        var cg = LinearImputation.Solve(x.narrow(0, 0, 1), unknown.narrow(0, 0, 1), ImputationSolver.ConjugateGradient);
        var direct = LinearImputation.Solve(x.narrow(0, 1, 1), unknown.narrow(0, 1, 1), ImputationSolver.Direct);
        Assert.Equal(0.0, (auto.narrow(0, 0, 1) - cg).abs().max().item<double>());
        Assert.Equal(0.0, (auto.narrow(0, 1, 1) - direct).abs().max().item<double>());
        // The one known pixel's value everywhere (weighted means of a single datum), up to CG's tolerance.
        Assert.True((auto.narrow(0, 0, 1) - x.narrow(0, 0, 1).narrow(2, 40, 1).narrow(3, 30, 1)).abs().max().item<double>() < 1e-5);
    }

    [Fact]
    public void TheDirectPathKeepsTheEdgeCasesOfTheConjugateGradientOne()
    {
        using var scope = NewDisposeScope();
        var x = randn(3, 2, 7, 9, dtype: ScalarType.Float64);
        var unknown = stack([zeros(1, 7, 9, dtype: ScalarType.Bool), ones(1, 7, 9, dtype: ScalarType.Bool), arange(63).view(1, 7, 9) % 3 == 0], 0);
        var direct = LinearImputation.Solve(x, unknown, ImputationSolver.Direct);
        var cg = LinearImputation.Solve(x, unknown, ImputationSolver.ConjugateGradient);
        Assert.Equal(0.0, (direct[0] - x[0]).abs().max().item<double>());   // no unknowns: the image itself
        Assert.Equal(0.0, direct[1].abs().max().item<double>());            // no known pixel: 0, as CG
        Assert.Equal(0.0, cg[1].abs().max().item<double>());
        Assert.True((direct - cg).abs().max().item<double>() < 1e-9);
    }

    /// <summary>Rong et al.'s equations hold at every unknown pixel of <paramref name="solved"/> (N×C×H×W float64, masks
    /// N×1×H×W), each the weighted mean of its in-image neighbours (a convolution here, not the solver's stencil), to
    /// 1e-10; known pixels keep <paramref name="x"/>'s values exactly.</summary>
    internal static void AssertSolves(Tensor x, Tensor unknown, Tensor solved)
    {
        using var scope = NewDisposeScope();
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var k = tensor(new[] { 1 / 12.0, 1 / 6.0, 1 / 12.0, 1 / 6.0, 0, 1 / 6.0, 1 / 12.0, 1 / 6.0, 1 / 12.0 }, dtype: ScalarType.Float64).view(1, 1, 3, 3);
        var v = solved.view(n * c, 1, h, w);
        var degree = nn.functional.conv2d(ones_like(v), k, padding: [1, 1]);
        var residual = (degree * v - nn.functional.conv2d(v, k, padding: [1, 1])).masked_select(unknown.expand(n, c, h, w).reshape(n * c, 1, h, w));
        Assert.True(residual.abs().max().item<double>() < 1e-10, $"largest residual {residual.abs().max().item<double>()}");
        Assert.Equal(0.0, (solved - x).masked_select(unknown.logical_not().expand_as(x)).abs().max().item<double>());
    }

    [Fact]
    public void RoadsNoiseFilledInPlaceIsRandnPerInput()
    {
        using var scope = NewDisposeScope();
        // ROAD fills its N×L noise (L: the values its points use) row by row with normal_ from each input's generator (no
        // stacked copy); the numbers must be those of randn([L], generator): one input's draw, whatever the batch or shard.
        long length = LinearImputation.NoiseLength([32, 161, 400], 3, 17 * 19);
        Assert.Equal(3 * (32 + 161 + 17 * 19), length);   // a point past every pixel uses each pixel once
        var noise = empty([2, length]);
        for (int i = 0; i < 2; i++) noise[i].normal_(0, 1, generator: new Generator((ulong)(40 + i)));
        for (int i = 0; i < 2; i++)
            Assert.Equal(0f, (noise[i] - randn([length], generator: new Generator((ulong)(40 + i)))).abs().max().item<float>());
    }

    [Fact]
    public void TheBandIsTheLargestIndexGapBetweenNeighbouringUnknowns()
    {
        // Full H×W mask: the down-right neighbour is W + 1 unknowns later.
        Assert.Equal((35, 8), LinearImputation.SystemShape(Enumerable.Repeat(true, 35).ToArray(), 5, 7));
        // One row of unknowns: only the right neighbour, 1 later.
        var row = new bool[35];
        for (int x = 0; x < 7; x++) row[14 + x] = true;
        Assert.Equal((7, 1), LinearImputation.SystemShape(row, 5, 7));
        // Two unknowns diagonally adjacent (0,1) and (1,0), with (0,2) between them in raster order: gap 2.
        var pair = new bool[35];
        pair[1] = pair[2] = pair[7] = true;
        Assert.Equal((3, 2), LinearImputation.SystemShape(pair, 5, 7));
    }

    [Fact]
    public void TheRasterBandMatchesAScanOfEveryNeighbouringPair()
    {
        // Masks kept in raster order (narrow images at any fill, wide ones past 45 % unknown): the vectorised band
        // against a scan of every pair of neighbouring unknowns by their raster indices, on widths around the vectors'
        // eight lanes and ROAD's sizes, at fills from sparse to full, and rows of unknowns alternating with known ones.
        var random = new Random(11);
        foreach (var (h, w) in new[] { (1, 1), (2, 1), (1, 9), (3, 7), (5, 8), (6, 9), (4, 16), (9, 17), (28, 28), (33, 39), (50, 64), (64, 71), (224, 224) })
            foreach (double fill in new[] { 0.05, 0.3, 0.5, 0.7, 0.9, 1.0, -1.0 })
            {
                int hw = h * w;
                var mask = fill < 0
                    ? [.. Enumerable.Range(0, hw).Select(p => p / w % 2 == 0)]
                    : Enumerable.Range(0, hw).Select(_ => random.NextDouble() < fill).ToArray();
                int count = mask.Count(m => m);
                if (w + 1 > 40 && count * 20 <= hw * 9) continue;   // these take the component order
                var index = new int[hw];
                for (int p = 0, next = 0; p < hw; p++) index[p] = mask[p] ? next++ : -1;
                int band = 0;
                for (int p = 0; p < hw; p++)
                    for (int q = p + 1; q < hw && q <= p + w + 1; q++)
                        if (mask[p] && mask[q] && Math.Abs(p / w - q / w) <= 1 && Math.Abs(p % w - q % w) <= 1)
                            band = Math.Max(band, index[q] - index[p]);
                Assert.Equal((count, band), LinearImputation.SystemShape(mask, h, w));
            }
    }

    /// <summary>ROAD's compact noise (N×(C·Σ unknowns), see <see cref="LinearImputation.Noisy"/>) spread onto the copies'
    /// pixels: copy i·P + j takes, channel after channel, the next values of input i's row at its unknown pixels in raster
    /// order (masked_scatter's order), 0 elsewhere; float64, (N·P)×C×H×W.</summary>
    internal static Tensor DenseNoise(Tensor noise, Tensor unknown, long[] limits, int c)
    {
        long copies = unknown.shape[0], hw = unknown.shape[2] * unknown.shape[3];
        int p = limits.Length;
        var dense = zeros([copies, c, hw], dtype: ScalarType.Float64);
        for (long image = 0; image < copies; image++)
        {
            long i = image / p, j = image % p, from = LinearImputation.NoiseLength(limits[..(int)j], c, hw);
            var values = noise[i].narrow(0, from, LinearImputation.NoiseLength([limits[j]], c, hw)).to(ScalarType.Float64);
            dense[image].masked_scatter_(unknown[image].reshape(1, hw).expand(c, hw), values);
        }
        return dense.view(copies, c, unknown.shape[2], unknown.shape[3]);
    }
}
