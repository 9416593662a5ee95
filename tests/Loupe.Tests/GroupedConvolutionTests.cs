using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using Loupe.Models.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>The grouped kernel (<see cref="GroupedConvolution"/>, where oneDNN is off) against libtorch's grouped
/// convolution: outputs, input gradients and Hessian-vector products to float rounding over group widths (depthwise,
/// RegNet's 8, the widest run), strides, paddings, dilations, kernel sizes (MobileNet's 3×3 and 5×5, ConvNeXt's 7×7,
/// rectangular), output channels per group, images smaller than a vector and odd sizes.</summary>
[Collection("native heap")]
public class GroupedConvolutionTests
{
    [Theory]
    [InlineData(2, 5, 1, 9, 11, 3, 3, 1, 1, 1, 1, 1, true)]      // MobileNet's stride-1 3×3
    [InlineData(2, 6, 1, 12, 13, 3, 3, 2, 2, 1, 1, 1, false)]    // stride 2, odd width
    [InlineData(1, 4, 1, 15, 15, 5, 5, 2, 2, 2, 2, 1, true)]     // EfficientNet's 5×5, stride 2
    [InlineData(2, 3, 1, 14, 14, 7, 7, 1, 1, 3, 3, 1, true)]     // ConvNeXt's 7×7
    [InlineData(1, 4, 2, 10, 9, 3, 3, 1, 1, 2, 2, 2, true)]      // channel multiplier 2, dilation 2
    [InlineData(2, 3, 3, 11, 10, 3, 5, 2, 3, 1, 2, 1, false)]    // rectangular kernel and stride, multiplier 3
    [InlineData(3, 2, 1, 3, 4, 3, 3, 1, 1, 0, 0, 1, true)]       // no padding, a 1×2 output (less than a vector)
    [InlineData(1, 3, 1, 1, 1, 3, 3, 1, 1, 1, 1, 1, true)]       // a 1×1 image: every tap but the centre reads padding
    [InlineData(2, 2, 1, 20, 37, 3, 3, 3, 3, 4, 0, 2, true)]     // stride 3, rows padded beyond the kernel's reach, dilation 2
    [InlineData(2, 3, 1, 18, 35, 3, 3, 2, 2, 1, 1, 1, true)]     // stride 2 over rows of 16 or more (the vector split), odd padding
    [InlineData(1, 4, 1, 16, 40, 5, 5, 2, 2, 2, 2, 1, false)]    // the same, even padding
    [InlineData(2, 3, 1, 9, 12, 3, 3, 1, 1, 1, 1, 1, true, 8)]    // RegNet's groups of 8
    [InlineData(1, 2, 2, 17, 18, 3, 3, 2, 2, 1, 1, 1, false, 4)]  // ResNeXt-like: 4 wide, 8 outputs per group, stride 2
    [InlineData(1, 2, 1, 7, 8, 1, 1, 1, 1, 0, 0, 1, true, 16)]    // the widest group run here, 1×1
    public void OutputsGradientsAndSecondDerivativesEqualLibtorchs(int n, int c, int m, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw, int d, bool bias, int width = 1)
    {
        using var scope = NewDisposeScope();
        var gen = new Generator((ulong)(n * 100000 + c * 1000 + h * 10 + kh + sh + width));
        var x = randn([n, c * width, h, w], generator: gen);
        var weight = randn([c * m, width, kh, kw], generator: gen);
        var b = bias ? randn([c * m], generator: gen) : null;
        long[] stride = [sh, sw], padding = [ph, pw], dilation = [d, d];
        Assert.True(GroupedConvolution.Shaped(x, weight, b, stride, padding, dilation, c));
        Tensor Reference(Tensor input) => nn.functional.conv2d(input, weight, b, stride, padding, dilation, c);
        var geometry = new GroupedConvolution.Geometry(sh, sw, ph, pw, d, d, c);

        var expected = Reference(x);
        var y = GroupedConvolution.Forward(x, weight, b, geometry);
        Assert.Equal(expected.shape, y.shape);
        Assert.True(TestEnv.RelL2(y.ToArray<float>(), expected.ToArray<float>()) < 1e-6, $"output rel L2 {TestEnv.RelL2(y.ToArray<float>(), expected.ToArray<float>()):E2}");

        var upstream = randn(expected.shape, generator: gen);
        var xi = x.detach().requires_grad_(true);
        var expectedGrad = CheckedOps.Grad([(Reference(xi) * upstream).sum()], [xi])[0];
        var gradient = GroupedConvolution.Transposed(upstream, weight, geometry, c * width, h, w);
        Assert.Equal(expectedGrad.shape, gradient.shape);
        Assert.True(TestEnv.RelL2(gradient.ToArray<float>(), expectedGrad.ToArray<float>()) < 1e-6,
            $"input gradient rel L2 {TestEnv.RelL2(gradient.ToArray<float>(), expectedGrad.ToArray<float>()):E2}");
        var xj = x.detach().requires_grad_(true);
        var viaFunction = CheckedOps.Grad([(GroupedConvolution.Conv2d(xj, weight, b, stride, padding, dilation, c) * upstream).sum()], [xj])[0];
        Assert.True(TestEnv.RelL2(viaFunction.ToArray<float>(), expectedGrad.ToArray<float>()) < 1e-6);

        // create_graph: the Hessian-vector product of Σ conv(x)² (the gradient is the transposed function, differentiated once more).
        var v = randn(x.shape, generator: gen);
        float[] Hvp(Func<Tensor, Tensor> conv)
        {
            var xk = x.detach().requires_grad_(true);
            var first = CheckedOps.Grad([conv(xk).pow(2).sum()], [xk], retainGraph: true, createGraph: true)[0];
            return CheckedOps.Grad([(first * v).sum()], [xk])[0].ToArray<float>();
        }
        var hvp = Hvp(xk => GroupedConvolution.Conv2d(xk, weight, b, stride, padding, dilation, c));
        var expectedHvp = Hvp(Reference);
        Assert.True(TestEnv.RelL2(hvp, expectedHvp) < 1e-5, $"Hessian-vector product rel L2 {TestEnv.RelL2(hvp, expectedHvp):E2}");
    }

    [Fact]
    public void Only_narrow_grouped_float_convolutions_with_frozen_weights_apply()
    {
        using var scope = NewDisposeScope();
        var x = randn([1, 4, 8, 8]);
        long[] one = [1, 1], zero = [0, 0];
        Assert.True(GroupedConvolution.Shaped(x, randn([8, 1, 3, 3]), null, one, one, one, 4));
        Assert.True(GroupedConvolution.Shaped(x, randn([4, 2, 3, 3]), null, one, one, one, 2));                        // two groups of two
        Assert.False(GroupedConvolution.Shaped(randn([1, 34, 8, 8]), randn([34, 17, 3, 3]), null, one, one, one, 2));   // groups wider than 16
        Assert.False(GroupedConvolution.Shaped(x, randn([4, 1, 3, 3]), null, one, one, one, 2));                        // weight of the wrong width
        var wide = randn([1, 2, 300, 300]);
        Assert.True(GroupedConvolution.Shaped(wide, randn([200, 1, 1, 1]), null, one, zero, one, 2));
        Assert.False(GroupedConvolution.Shaped(wide, randn([1600, 1, 1, 1]), null, one, zero, one, 2));                 // a gradient buffer over 256 MB: ATen's
        Assert.False(GroupedConvolution.Shaped(x, randn([4, 1, 3, 3]), null, [1, 1_000_000_000], one, one, 4));        // a hostile stride: ATen's
        Assert.False(GroupedConvolution.Shaped(x, randn([4, 4, 3, 3]), null, one, one, one, 1));                       // dense
        Assert.False(GroupedConvolution.Shaped(x, randn([4, 1, 3, 3]).requires_grad_(true), null, one, one, one, 4)); // trained weights
        Assert.False(GroupedConvolution.Shaped(x.to(ScalarType.Float64), randn([4, 1, 3, 3], ScalarType.Float64), null, one, one, one, 4));
        Assert.False(GroupedConvolution.Shaped(x, randn([4, 1, 9, 9]), null, one, zero, one, 4));                      // no output position
        Assert.False(GroupedConvolution.Shaped(x, randn([4, 1, 3, 3]), randn([3]), one, one, one, 4));                 // bias of the wrong length
    }
    /// <summary>The TorchSharp backend runs a model's depthwise convolutions — folded with their batch norm inside a
    /// nested Sequential (torchvision's Conv2dNormActivation in EfficientNet's and MobileNet's blocks) or on their own —
    /// on the kernel exactly where it is enabled (forward and input gradient of both: four calls), with the logits'
    /// input gradients of libtorch's functional convolutions.</summary>
    [Fact]
    public void A_models_grouped_convolutions_run_the_kernel_where_it_is_enabled()
    {
        using var scope = NewDisposeScope();
        var spec = new InputSpec(3, 13, 13, [0f, 0f, 0f], [1f, 1f, 1f]);
        // A MobileNet-like block: a pointwise convolution with batch norm, a depthwise 3×3 of stride 2 with batch norm in
        // a Sequential of its own (both folded by the backend) and a depthwise 5×5 with channel multiplier 2 on its own.
        var net = new SeededSequential("DepthwiseNet", 21, ("pw", nn.Conv2d(3, 12, 1)), ("bn1", nn.BatchNorm2d(12)), ("act", nn.ReLU6()),
            ("dw", nn.Sequential(("0", nn.Conv2d(12, 12, 3, stride: 2, padding: 1, groups: 12, bias: false)), ("1", nn.BatchNorm2d(12)))),
            ("dw2", nn.Conv2d(12, 24, 5, padding: 2, groups: 12)), ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()));
        net.eval();
        var p = net.named_parameters().ToDictionary(q => q.name, q => q.parameter.detach().clone());
        var bufs = net.named_buffers().ToDictionary(q => q.name, q => q.buffer.detach().clone());
        Tensor Bn(Tensor h, string name) => nn.functional.batch_norm(h, bufs[$"body.{name}.running_mean"], bufs[$"body.{name}.running_var"], p[$"body.{name}.weight"], p[$"body.{name}.bias"], false, 0.1, 1e-5);
        Tensor Reference(Tensor input)
        {
            var h = nn.functional.relu6(Bn(nn.functional.conv2d(input, p["body.pw.weight"], p["body.pw.bias"]), "bn1"));
            h = Bn(nn.functional.conv2d(h, p["body.dw.0.weight"], null, [2, 2], [1, 1], groups: 12), "dw.1");
            h = nn.functional.conv2d(h, p["body.dw2.weight"], p["body.dw2.bias"], padding: [2, 2], groups: 12);
            return h.mean([2, 3]);
        }
        using var model = new TorchModel(net, spec, null, foldBatchNorm: true, fastKernels: true);
        Assert.Equal(GroupedConvolution.Enabled ? 1 : 0, model.GroupedConvs);
        Assert.Equal(2, model.FoldedBatchNorms);   // the nested one too
        var x = randn([2, 3, 13, 13], generator: new Generator(22));
        var upstream = randn([2, 24], generator: new Generator(23));
        var xr = x.detach().requires_grad_(true);
        var expected = CheckedOps.Grad([(Reference(xr) * upstream).sum()], [xr])[0].ToArray<float>();
        long before = GroupedConvolution.Calls;
        var xi = x.detach().requires_grad_(true);
        var logits = model.Forward(xi);
        Assert.True(TestEnv.RelL2(logits.detach().ToArray<float>(), Reference(x).ToArray<float>()) < 1e-5);
        var gradient = CheckedOps.Grad([(logits * upstream).sum()], [xi])[0].ToArray<float>();
        Assert.Equal(GroupedConvolution.Enabled ? 4 : 0, GroupedConvolution.Calls - before);
        Assert.True(TestEnv.RelL2(gradient, expected) < 1e-5, $"input gradient rel L2 {TestEnv.RelL2(gradient, expected):E2}");
    }
}
