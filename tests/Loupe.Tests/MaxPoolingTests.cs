using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary><see cref="MaxPooling.Pool2d"/> (both backends' max pool) against libtorch's own max_pool2d: the same values,
/// input gradients (ties included: integer inputs) and Hessian-vector products, over the zoo's pools — ResNet's stem
/// (3×3, stride 2, pad 1), VGG's 2×2, GoogLeNet's ceil-mode pools on odd sizes, a stride-1 pool, dilation, a rectangular
/// window — in float32 and float64, and on inputs it hands to libtorch (channels-last, one channel).</summary>
public class MaxPoolingTests
{
    [Theory]
    [InlineData(2, 5, 13, 13, 3, 3, 2, 2, 1, 1, 1, false)]   // ResNet's stem pool
    [InlineData(3, 4, 12, 10, 2, 2, 2, 2, 0, 0, 1, false)]   // VGG's
    [InlineData(1, 6, 15, 11, 3, 3, 2, 2, 0, 0, 1, true)]    // GoogLeNet's ceil mode on odd sizes
    [InlineData(2, 3, 9, 9, 3, 3, 1, 1, 1, 1, 1, false)]     // stride 1 (SPP-like)
    [InlineData(1, 3, 14, 16, 3, 3, 2, 1, 1, 1, 2, true)]    // dilation 2, uneven stride, ceil mode
    [InlineData(2, 2, 10, 13, 2, 4, 1, 3, 1, 2, 1, false)]   // rectangular window
    public void ValuesGradientsAndSecondDerivativesEqualLibtorchs(int n, int c, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw, int d, bool ceil)
    {
        long[] kernel = [kh, kw], stride = [sh, sw], padding = [ph, pw], dilation = [d, d];
        Tensor Reference(Tensor t) => nn.functional.max_pool2d(t, kernel, stride, padding, dilation, ceil);
        Tensor Pool(Tensor t) => MaxPooling.Pool2d(t, kernel, stride, padding, dilation, ceil);
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
        {
            using var scope = NewDisposeScope();
            var gen = new Generator((ulong)(n * 1000 + c * 100 + h + kw + sw));
            var x = randint(-3, 4, [n, c, h, w], generator: gen).to(dtype);   // ties in most windows
            using (no_grad()) Assert.Equal(D(Reference(x)), D(Pool(x)));
            var v = randn([n, c, h, w], generator: gen).to(dtype);
            (double[] Gradient, double[] Hvp) Derivatives(Func<Tensor, Tensor> pool)
            {
                var xk = x.detach().requires_grad_(true);
                var y = pool(xk);
                var weights = randn(y.shape, generator: new Generator(7)).to(dtype);
                var first = CheckedOps.Grad([(y * y * weights).sum()], [xk], retainGraph: true, createGraph: true)[0];
                var second = CheckedOps.Grad([(first * v).sum()], [xk])[0];
                return (D(first), D(second));
            }
            var (g, hvp) = Derivatives(Pool);
            var (ge, hvpe) = Derivatives(Reference);
            Assert.Equal(ge, g);
            Assert.True(hvpe.Any(e => e != 0), "the reference's second derivative is zero: the case checks nothing");
            Assert.Equal(hvpe, hvp);
        }
    }

    [Theory]
    [InlineData(3, 3, 2, 1, false)]   // ResNet's stem pool
    [InlineData(2, 2, 2, 0, false)]   // VGG's
    [InlineData(3, 3, 2, 0, true)]    // GoogLeNet's ceil mode
    public void ValuesAndIndicesWithoutGradientsEqualLibtorchs(int kh, int kw, int stride, int pad, bool ceil)
    {
        using var scope = NewDisposeScope();
        var x = randint(-2, 3, [2, 5, 15, 13], generator: new Generator(3)).to(ScalarType.Float32);   // ties everywhere
        long[] k = [kh, kw], s = [stride, stride], p = [pad, pad], d = [1, 1];
        var (ev, ei) = nn.functional.max_pool2d_with_indices(x, k, s, p, d, ceil);
        var (v, i) = MaxPooling.Pool2dWithIndices(x, k, s, p, d, ceil);
        Assert.Equal(D(ev), D(v));
        Assert.Equal(ei.data<long>().ToArray(), i.contiguous().data<long>().ToArray());
        Assert.True(v.is_contiguous() && i.is_contiguous());
    }

    static double[] D(Tensor t) => t.detach().to(ScalarType.Float64).data<double>().ToArray();

    [Fact]
    public void ChannelsLastAndSingleChannelInputsGoToLibtorchsKernel()
    {
        using var scope = NewDisposeScope();
        long[] k = [3, 3], s = [2, 2], p = [1, 1], d = [1, 1];
        var nhwc = randn([2, 4, 9, 9]).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2).requires_grad_(true);
        var one = randn([2, 1, 9, 9]).requires_grad_(true);
        var nchw = randn([2, 4, 9, 9]).requires_grad_(true);
        Assert.Equal(nn.functional.max_pool2d(one, k, s, p, d, false).data<float>().ToArray(), MaxPooling.Pool2d(one, k, s, p, d, false).data<float>().ToArray());
        Assert.Equal(nn.functional.max_pool2d(nhwc, k, s, p, d, false).data<float>().ToArray(), MaxPooling.Pool2d(nhwc, k, s, p, d, false).data<float>().ToArray());
        Assert.Equal(nn.functional.max_pool2d(nchw, k, s, p, d, false).data<float>().ToArray(), MaxPooling.Pool2d(nchw, k, s, p, d, false).data<float>().ToArray());
    }
}
