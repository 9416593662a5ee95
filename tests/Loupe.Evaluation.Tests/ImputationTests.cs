using Loupe.Abstractions;
using Loupe.Analysis.Evaluation;
using static TorchSharp.torch;

namespace Loupe.Evaluation.Tests;

/// <summary>ROAD's linear imputation (<see cref="LinearImputation"/>) against the dense solve of Rong et al.'s system in
/// numpy (tests/fixtures/make_quality_more_fixtures.py, imputation_fixture: 13 × 10 images of 3 channels, five masks
/// from scattered to all-but-one pixel), and closed forms.</summary>
public class ImputationTests
{
    static Tensor Load(string name)
    {
        var a = Npy.Read(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", name));
        return tensor(a.Data).view(a.Shape);
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
}
