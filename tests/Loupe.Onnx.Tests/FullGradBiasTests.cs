using Loupe.Analysis.Cam;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>FullGrad's bias term read straight from the gradient's storage (<see cref="FullGradBias"/>) against the
/// formula in float64 libtorch operations: Σ_k c_k (|g_k| − lo_k), c_k = |b_k| / (1e-7 + |b_k| (hi_k − lo_k)), lo/hi
/// the per-input, per-channel min/max of |g| — for channels-last and NCHW gradients, channel counts that do and do not
/// fill the SIMD width, a constant channel (hi = lo) and a zero bias; any other layout is left to libtorch (null).</summary>
public class FullGradBiasTests
{
    static Tensor Reference(Tensor bias, Tensor grad)
    {
        var g = grad.to(ScalarType.Float64).abs();
        var lo = g.amin([2, 3]);
        var hi = g.amax([2, 3]);
        var b = bias.to(ScalarType.Float64).abs().view(1, -1);
        var c = b / (1e-7 + b * (hi - lo));
        return (g * c.unsqueeze(-1).unsqueeze(-1)).sum(1) - (c * lo).sum(1).view(-1, 1, 1);
    }

    [Theory]
    [InlineData(3, 64, 9, 7, true)]
    [InlineData(2, 13, 5, 6, true)]
    [InlineData(3, 64, 9, 7, false)]
    [InlineData(2, 13, 5, 6, false)]
    [InlineData(1, 1, 4, 4, false)]
    public void MatchesTheFormula(int n, int k, int h, int w, bool channelsLast)
    {
        using var scope = NewDisposeScope();
        manual_seed(7);
        var grad = randn(n, k, h, w);
        grad[.., 0] = 0.25f;                                  // a constant channel: hi = lo
        var bias = randn(k);
        if (k > 1) bias[1] = 0f;                             // a zero bias: c = 0
        if (channelsLast) grad = grad.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2);
        var expected = Reference(bias, grad);
        var actual = FullGradBias.TrySum(bias, grad);
        Assert.NotNull(actual);
        Assert.Equal(expected.shape, actual!.shape);
        var err = (actual.to(ScalarType.Float64) - expected).abs().max().item<double>() / (expected.abs().max().item<double>() + 1e-12);
        Assert.True(err <= 1e-5, $"relative error {err:E2}");
    }

    [Fact]
    public void LeavesOtherLayoutsToLibtorch()
    {
        using var scope = NewDisposeScope();
        var bias = randn(4);
        Assert.Null(FullGradBias.TrySum(bias, randn(2, 4, 6, 6)[.., .., ..3]));   // a strided view
        Assert.Null(FullGradBias.TrySum(bias, randn(2, 4, 6, 6, dtype: ScalarType.Float64)));
        Assert.Null(FullGradBias.TrySum(bias, randn(2, 4, 6)));
    }
}
