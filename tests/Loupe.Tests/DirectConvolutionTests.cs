using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using Loupe.Models.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>The direct convolution kernel (<see cref="DirectConvolution"/>, where oneDNN is off) against libtorch's own
/// convolution: outputs and input gradients to float rounding over kernel sizes, paddings, dilations, channel counts
/// that do not fill a block of 32, images narrower than a tile and a batch; and the backend routes a model's
/// convolutions through it exactly where it says it applies.</summary>
[Collection("native heap")]
public class DirectConvolutionTests
{
    [Theory]
    [InlineData(2, 5, 7, 9, 11, 3, 1, 1, 1, true)]    // channels that fill neither a vector nor a block
    [InlineData(1, 8, 33, 7, 7, 3, 1, 1, 1, false)]   // one channel past a block; a 7×7 image (tiles straddle rows)
    [InlineData(3, 6, 64, 14, 14, 3, 0, 0, 1, true)]  // no padding: a smaller output
    [InlineData(2, 4, 16, 10, 13, 5, 2, 2, 1, true)]  // 5×5
    [InlineData(2, 4, 40, 12, 12, 3, 2, 2, 2, false)] // dilation 2
    [InlineData(1, 9, 5, 6, 8, 1, 0, 0, 1, true)]     // 1×1
    [InlineData(2, 3, 3, 1, 1, 3, 1, 1, 1, true)]     // a 1×1 image: every tap but the centre reads padding
    [InlineData(2, 5, 6, 8, 9, 3, 1, 0, 1, true)]  // rows padded, columns not: the kernel takes the two apart
    [InlineData(2, 6, 48, 40, 37, 3, 1, 1, 1, true)]  // rows of 16 + 16 + 5 written in 16 × 16 blocks, rows cut between work items, a block of 16 channels
    [InlineData(1, 17, 70, 20, 30, 3, 1, 1, 1, false)] // 70 channels: two blocks and 6 (a partial 16 × 16 block of channels)
    public void OutputsAndInputGradientsEqualLibtorchs(int n, int c, int o, int h, int w, int k, int padH, int padW, int dilation, bool bias)
    {
        using var scope = NewDisposeScope();
        var g = new Generator((ulong)(n * 100000 + c * 1000 + o * 10 + k));
        var x = randn([n, c, h, w], generator: g);
        var weight = randn([o, c, k, k], generator: g);
        var b = bias ? randn([o], generator: g) : null;
        long ph = padH, pw = padW;
        var reference = nn.functional.conv2d(x, weight, b, padding: [ph, pw], dilation: [dilation, dilation]);
        var y = DirectConvolution.Forward(x, weight, b, ph, pw, dilation, dilation);
        Assert.Equal(reference.shape, y.shape);
        Assert.True(TestEnv.RelL2(y.ToArray<float>(), reference.ToArray<float>()) < 1e-6, $"output rel L2 {TestEnv.RelL2(y.ToArray<float>(), reference.ToArray<float>()):E2}");

        var upstream = randn(reference.shape, generator: g);
        var xi = x.detach().requires_grad_(true);
        var expected = CheckedOps.Grad([(nn.functional.conv2d(xi, weight, b, padding: [ph, pw], dilation: [dilation, dilation]) * upstream).sum()], [xi])[0];
        var gradient = DirectConvolution.InputGradient(upstream, weight, ph, pw, dilation, dilation);
        Assert.Equal(expected.shape, gradient.shape);
        Assert.True(TestEnv.RelL2(gradient.ToArray<float>(), expected.ToArray<float>()) < 1e-6,
            $"input gradient rel L2 {TestEnv.RelL2(gradient.ToArray<float>(), expected.ToArray<float>()):E2}");

        // Through autograd, as a model runs it (arguments read when it runs).
        var xj = x.detach().requires_grad_(true);
        var viaFunction = CheckedOps.Grad([(DirectConvolution.Conv2d(xj, weight, b, [ph, pw], [dilation, dilation]) * upstream).sum()], [xj])[0];
        Assert.True(TestEnv.RelL2(viaFunction.ToArray<float>(), expected.ToArray<float>()) < 1e-6);
    }

    /// <summary>Strided convolutions (phase planes): outputs against libtorch's over ResNet's strided layers (3×3 and 1×1
    /// at stride 2, the 7×7 stem shape on more channels), odd sizes, stride 3 and 4, a stride per axis, dilation with
    /// stride, and an output of one pixel; with a gradient, libtorch's convolution runs (the kernel is not called) and
    /// input gradients and Hessian-vector products are libtorch's.</summary>
    [Theory]
    [InlineData(2, 8, 16, 14, 14, 3, 3, 2, 2, 1, 1, 1, true)]    // ResNet's 3×3 stride 2
    [InlineData(2, 8, 16, 15, 13, 3, 3, 2, 2, 1, 1, 1, false)]   // odd sizes
    [InlineData(3, 6, 33, 14, 14, 1, 1, 2, 2, 0, 0, 1, false)]   // the 1×1 downsample, one channel past a block
    [InlineData(1, 5, 12, 23, 21, 7, 7, 2, 2, 3, 3, 1, true)]    // the stem's 7×7 stride 2
    [InlineData(2, 4, 8, 17, 19, 3, 3, 3, 3, 1, 1, 1, true)]     // stride 3
    [InlineData(1, 4, 8, 18, 18, 4, 4, 4, 4, 0, 0, 1, false)]    // stride 4 = kernel (patchify)
    [InlineData(2, 5, 7, 12, 16, 3, 3, 2, 1, 1, 1, 1, true)]     // a stride per axis
    [InlineData(1, 6, 9, 17, 17, 3, 3, 2, 2, 2, 2, 2, false)]    // dilation 2 with stride 2
    [InlineData(2, 7, 5, 3, 3, 3, 3, 2, 2, 0, 0, 1, true)]       // a one-pixel output
    [InlineData(2, 8, 40, 60, 50, 3, 3, 2, 2, 1, 1, 1, true)]    // wide rows (25 outputs: 16 + 9) cut between work items
    public void StridedOutputsGradientsAndSecondDerivativesEqualLibtorchs(int n, int c, int o, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw, int d, bool bias)
    {
        using var scope = NewDisposeScope();
        var g = new Generator((ulong)(n * 100000 + c * 1000 + o * 10 + kh + sh * 7 + sw));
        var x = randn([n, c, h, w], generator: g);
        var weight = randn([o, c, kh, kw], generator: g);
        var b = bias ? randn([o], generator: g) : null;
        long[] stride = [sh, sw], padding = [ph, pw], dilation = [d, d];
        Tensor Reference(Tensor input) => nn.functional.conv2d(input, weight, b, stride, padding, dilation);
        Tensor Direct(Tensor input) => DirectConvolution.Conv2d(input, weight, b, stride, padding, dilation);
        Assert.True(!DirectConvolution.Enabled || kh * kw == 1 || DirectConvolution.Applies(x, weight, b, stride, padding, dilation, 1));
        var reference = Reference(x);
        long before = DirectConvolution.Calls;
        var y = Direct(x);
        Assert.Equal(1, DirectConvolution.Calls - before);
        Assert.Equal(reference.shape, y.shape);
        Assert.True(TestEnv.RelL2(y.ToArray<float>(), reference.ToArray<float>()) < 1e-6, $"output rel L2 {TestEnv.RelL2(y.ToArray<float>(), reference.ToArray<float>()):E2}");
        var upstream = randn(reference.shape, generator: g);
        var v = randn(x.shape, generator: g);
        (float[] Gradient, float[] Hvp) Derivatives(Func<Tensor, Tensor> conv)
        {
            var xi = x.detach().requires_grad_(true);
            var first = CheckedOps.Grad([(conv(xi).pow(2) * upstream).sum()], [xi], retainGraph: true, createGraph: true)[0];
            return (first.detach().ToArray<float>(), CheckedOps.Grad([(first * v).sum()], [xi])[0].ToArray<float>());
        }
        before = DirectConvolution.Calls;
        var (gradient, hvp) = Derivatives(Direct);
        Assert.Equal(0, DirectConvolution.Calls - before);
        var (expected, expectedHvp) = Derivatives(Reference);
        Assert.True(TestEnv.RelL2(gradient, expected) < 1e-5, $"input gradient rel L2 {TestEnv.RelL2(gradient, expected):E2}");
        Assert.True(TestEnv.RelL2(hvp, expectedHvp) < 1e-5, $"Hessian-vector product rel L2 {TestEnv.RelL2(hvp, expectedHvp):E2}");
    }

    /// <summary>1×1 convolutions run here only where the kernel was measured faster than libtorch's product: many input
    /// channels on small maps (resnet50's later stages), not wide maps or few channels; larger kernels at any size.</summary>
    [Fact]
    public void PointwiseConvolutionsRunHereOnlyWithManyChannelsOnSmallMaps()
    {
        if (!DirectConvolution.Enabled) return;   // nothing runs here in this process: the rule has nothing to choose
        using var scope = NewDisposeScope();
        bool Applies(int c, int o, int side, int k, int stride) =>
            DirectConvolution.Applies(zeros(1, c, side, side), zeros(o, c, k, k), null, [stride, stride], [k / 2, k / 2], [1, 1], 1);
        Assert.False(Applies(64, 256, 56, 1, 1));    // libtorch 5.1 ms, here 9.4
        Assert.False(Applies(256, 64, 56, 1, 1));    // wide map
        Assert.False(Applies(64, 128, 56, 1, 2));    // few channels, strided
        Assert.True(Applies(1024, 256, 14, 1, 1));   // here 3.4 ms, libtorch 5.2
        Assert.True(Applies(256, 128, 28, 1, 1));
        Assert.True(Applies(256, 512, 14, 1, 2));
        Assert.True(Applies(64, 64, 56, 3, 1));      // 3×3: always
        Assert.True(Applies(3, 64, 224, 7, 2));
    }

    /// <summary>A gradient taken with <c>create_graph</c> (ShapleyCAM's Hessian-vector products) differentiates once
    /// more through the kernel: the Hessian-vector product of Σ conv(x)² equals libtorch's.</summary>
    [Theory]
    [InlineData(3, 1, 1)]
    [InlineData(5, 2, 2)]
    [InlineData(3, 0, 1)]
    public void InputGradientsAreDifferentiableOnceMore(int k, int pad, int dilation)
    {
        using var scope = NewDisposeScope();
        var g = new Generator((ulong)(k * 10 + pad));
        var x = randn([2, 6, 9, 10], generator: g);
        var weight = randn([7, 6, k, k], generator: g);
        var b = randn([7], generator: g);
        var v = randn([2, 6, 9, 10], generator: g);
        float[] Hvp(Func<Tensor, Tensor> conv)
        {
            var xi = x.detach().requires_grad_(true);
            var first = CheckedOps.Grad([conv(xi).pow(2).sum()], [xi], retainGraph: true, createGraph: true)[0];
            return CheckedOps.Grad([(first * v).sum()], [xi])[0].ToArray<float>();
        }
        var expected = Hvp(xi => nn.functional.conv2d(xi, weight, b, padding: [pad, pad], dilation: [dilation, dilation]));
        var direct = Hvp(xi => DirectConvolution.Conv2d(xi, weight, b, [pad, pad], [dilation, dilation]));
        Assert.True(TestEnv.RelL2(direct, expected) < 1e-5, $"Hessian-vector product rel L2 {TestEnv.RelL2(direct, expected):E2}");
    }

    /// <summary>Logits and input gradients of a model whose convolutions the backend rewrites agree with libtorch's
    /// functional convolutions, folded, pinned and released alike; the convolutions run the direct kernel exactly when it
    /// is enabled in this process (forward and backward of both: four calls).</summary>
    [Fact]
    public void AModelsStrideOneConvolutionsRunTheKernelWhereItIsEnabled()
    {
        using var scope = NewDisposeScope();
        var spec = new InputSpec(6, 10, 10, Enumerable.Repeat(0f, 6).ToArray(), Enumerable.Repeat(1f, 6).ToArray());
        // A stride-1 convolution with a batch norm (folded by the backend into a fused convolution, the demo CNN's shape), a
        // ReLU and a dilated convolution on its own.
        var net = new SeededSequential("TwoConvNet", 11, ("conv1", nn.Conv2d(6, 40, 3, padding: 1)), ("bn1", nn.BatchNorm2d(40)), ("relu", nn.ReLU()),
            ("conv2", nn.Conv2d(40, 12, 3, padding: 2, dilation: 2)), ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()));
        net.eval();
        var p = net.named_parameters().ToDictionary(q => q.name, q => q.parameter.detach().clone());
        var bufs = net.named_buffers().ToDictionary(q => q.name, q => q.buffer.detach().clone());
        Tensor Reference(Tensor input)
        {
            var h = nn.functional.conv2d(input, p["body.conv1.weight"], p["body.conv1.bias"], padding: [1, 1]);
            h = nn.functional.batch_norm(h, bufs["body.bn1.running_mean"], bufs["body.bn1.running_var"], p["body.bn1.weight"], p["body.bn1.bias"], false, 0.1, 1e-5);
            h = nn.functional.relu(h);
            h = nn.functional.conv2d(h, p["body.conv2.weight"], p["body.conv2.bias"], padding: [2, 2], dilation: [2, 2]);
            return h.mean([2, 3]);
        }
        using var model = new TorchModel(net, spec, null, foldBatchNorm: true, fastKernels: true);
        Assert.Equal(DirectConvolution.Enabled ? 1 : 0, model.DirectConvs);
        var x = randn([3, 6, 10, 10], generator: new Generator(12));
        var upstream = randn([3, 12], generator: new Generator(13));
        var xr = x.detach().requires_grad_(true);
        var expected = CheckedOps.Grad([(Reference(xr) * upstream).sum()], [xr])[0].ToArray<float>();
        void Check(string state, int calls)
        {
            long before = DirectConvolution.Calls;
            var xi = x.detach().requires_grad_(true);
            var gradient = CheckedOps.Grad([(model.Forward(xi) * upstream).sum()], [xi])[0].ToArray<float>();
            Assert.Equal(DirectConvolution.Enabled ? calls : 0, DirectConvolution.Calls - before);
            Assert.True(TestEnv.RelL2(gradient, expected) < 1e-5, $"{state}: input gradient rel L2 {TestEnv.RelL2(gradient, expected):E2}");
        }
        Check("folded", 4);
        // A capture on the folded convolution unfolds it: it runs on the kernel still, and the hook sees its output.
        using (var capture = model.Capture(["body.conv1"], forGradients: false))
        {
            Check("pinned", 4);
            var seen = capture["body.conv1"].detach();
            Assert.True(TestEnv.RelL2(seen.ToArray<float>(), nn.functional.conv2d(x, p["body.conv1.weight"], p["body.conv1.bias"], padding: [1, 1]).ToArray<float>()) < 1e-6);
        }
        // A parameter handed out is released for good: the kernel reads it as it is when it runs.
        using (no_grad()) model.GetParameter("body.conv1.weight")!.mul_(-1);
        using (no_grad()) p["body.conv1.weight"].mul_(-1);
        expected = CheckedOps.Grad([(Reference(xr) * upstream).sum()], [xr])[0].ToArray<float>();
        Check("released", 4);
    }
}
