using Loupe.Abstractions;
using Loupe.Models.TorchSharp;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Tests;

/// <summary>Fast kernels (<c>fast_kernels</c>, on by default in the torchvision backend): max pools give the same values,
/// captures and input gradients as libtorch's own max pool, bit for bit — ties included; first-layer convolutions give
/// libtorch's input gradients to float rounding.</summary>
[Collection("native heap")]
public class FastKernelTests
{
    static void Settle()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }

    /// <summary>Pools in a field and in a Sequential: overlapping windows with padding, dilation with ceil mode, and a
    /// plain 2×2. Integer weights and inputs make every value exact and full of ties (ReLU zeros, equal integers).</summary>
    sealed class PoolNet : nn.Module<Tensor, Tensor>
    {
        readonly nn.Module<Tensor, Tensor> relu, pool, body; // module-typed fields: the rewrites can swap them

        public PoolNet() : base("PoolNet")
        {
            relu = nn.ReLU();
            pool = nn.MaxPool2d([3, 3], [2, 2], [1, 1]);
            body = nn.Sequential(("conv", nn.Conv2d(4, 4, 3, padding: 1)), ("act", nn.ReLU()),
                ("pool", nn.MaxPool2d([3, 3], [2, 2], [0, 0], [2, 2], ceil_mode: true)), ("pool2", nn.MaxPool2d(2)));
            RegisterComponents();
            using var _ = no_grad();
            var g = new Generator(4);
            foreach (var p in parameters()) p.copy_(randint(-2, 3, p.shape, generator: g));
        }

        public override Tensor forward(Tensor x) => body.call(pool.call(relu.call(x))).flatten(1);
    }

    static readonly InputSpec Spec = new(4, 23, 23, [0f, 0f, 0f, 0f], [1f, 1f, 1f, 1f]);

    static (TorchModel Plain, TorchModel Fast) Pair() =>
        (new TorchModel(new PoolNet(), Spec, null, fastKernels: false), new TorchModel(new PoolNet(), Spec, null, fastKernels: true));

    static Tensor IntegerInput(int batch, int seed) => randint(-3, 4, [batch, 4, 23, 23], generator: new Generator((ulong)seed)).to(float32);

    static (float[] Output, float[] Gradient) Run(IModel model, Tensor x, Tensor weights)
    {
        using var scope = NewDisposeScope();
        var xi = x.detach().requires_grad_(true);
        var y = model.Forward(xi);
        var g = CheckedOps.Grad([(y * weights).sum()], [xi])[0];
        return (y.detach().ToArray<float>(), g.ToArray<float>());
    }

    [Theory]
    [InlineData(1)] // NCHW: the channels-last kernel and the scatter backward
    [InlineData(3)] // channels-last batch (layout auto): libtorch's own kernel
    public void OutputsAndInputGradientsEqualLibtorchsMaxPoolExactly(int batch)
    {
        var (plain, fast) = Pair();
        using (plain)
        using (fast)
        {
            Assert.Equal((0, 3), (plain.FastMaxPools, fast.FastMaxPools));
            Assert.Equal(plain.Layers.Select(l => (l.Name, l.Kind)), fast.Layers.Select(l => (l.Name, l.Kind)));
            using var scope = NewDisposeScope();
            for (int seed = 0; seed < 3; seed++)
            {
                var x = IntegerInput(batch, seed);
                long outputs;
                using (no_grad()) outputs = plain.Forward(x).shape[1];
                var w = randint(-3, 4, [batch, outputs], generator: new Generator((ulong)(10 + seed))).to(float32);
                var (ya, ga) = Run(plain, x, w);
                var (yb, gb) = Run(fast, x, w);
                Assert.Equal(ya, yb);
                Assert.Equal(ga, gb);
                Assert.Contains(ga, v => v != 0);
                // Without gradients (the no-grad path).
                using (no_grad()) Assert.Equal(ya, fast.Forward(x).ToArray<float>());
            }
        }
    }

    [Fact]
    public void CapturesAndInterventionsOnPoolsSeeWhatLibtorchsPoolComputes()
    {
        var (plain, fast) = Pair();
        using (plain)
        using (fast)
        {
            using var scope = NewDisposeScope();
            var x = IntegerInput(1, 7);
            string[] layers = ["pool", "body.pool", "body.pool2"];
            using (var ca = plain.Capture(layers, forGradients: false))
            using (var cb = fast.Capture(layers, forGradients: false))
            {
                using (no_grad()) { plain.Forward(x); fast.Forward(x); }
                foreach (var l in layers) Assert.Equal(ca[l].ToArray<float>(), cb[l].ToArray<float>());
            }
            // Gradient at a pool's output, with the input requiring grad (the pool's backward is on the path to it).
            float[] GradAt(IModel m)
            {
                using var c = m.Capture(["pool"], forGradients: true);
                var y = m.Forward(x.detach().requires_grad_(true));
                return CheckedOps.Grad([y[.., 3].sum()], [c["pool"]])[0].ToArray<float>();
            }
            Assert.Equal(GradAt(plain), GradAt(fast));
            Tensor Halve(Tensor t) => t / 2;
            float[] ya, yb;
            using (plain.Intervene("body.pool", Halve)) using (no_grad()) ya = plain.Forward(x).ToArray<float>();
            using (fast.Intervene("body.pool", Halve)) using (no_grad()) yb = fast.Forward(x).ToArray<float>();
            Assert.Equal(ya, yb);
            using (no_grad()) Assert.NotEqual(ya, fast.Forward(x).ToArray<float>());
        }
    }

    [Fact]
    public void ForwardAndBackwardThroughTheFastPoolLeaveNoTensorBehind()
    {
        var (plain, fast) = Pair();
        using (plain)
        using (fast)
        {
            var x = IntegerInput(1, 1);
            Tensor w;
            using (no_grad()) w = ones_like(fast.Forward(x));
            Run(fast, x, w);
            // The live count is the process's: other tests' garbage is finalised first (this class runs alone).
            Settle();
            var before = Tensor.TotalCount;
            for (int i = 0; i < 5; i++) Run(fast, x, w);
            using (var scope = NewDisposeScope())
            {
                var y = fast.Forward(x.detach().requires_grad_(true)); // a graph that is never run backwards
            }
            Settle();
            Assert.Equal(before, Tensor.TotalCount);
            x.Dispose();
            w.Dispose();
        }
    }

    [Theory]
    [InlineData("resnet18", 1, 0, 64)]   // conv1 is folded with bn1: the fused convolution takes the fast path itself
    [InlineData("vgg11", 5, 1, 32)]      // pools and the first convolution inside the features Sequential
    [InlineData("alexnet", 3, 1, 64)]
    [InlineData("fashion-cnn", 2, 0, 28)]
    public void TorchVisionModelsGiveTheSameLogitsAndGradientsWithFastKernels(string arch, int pools, int convs, int size)
    {
        TorchModel Load(bool fastKernels) => (TorchModel)new TorchVisionAdapter().Load(
            new TorchVisionOptions { Architecture = arch, NumClasses = 10, FastKernels = fastKernels }, new ModelLoadContext(".", 0));
        using var plain = Load(false);
        using var fast = Load(true);
        Assert.Equal((pools, convs), (fast.FastMaxPools, fast.FewChannelConvs));
        using var scope = NewDisposeScope();
        var channels = arch == "fashion-cnn" ? 1 : 3;
        var x = randn([1, channels, size, size], generator: new Generator(2));
        var w = randn([1, 10], generator: new Generator(3));
        var (ya, ga) = Run(plain, x, w);
        var (yb, gb) = Run(fast, x, w);
        // Float rounding: where oneDNN is off, the fast model's stride-1 convolutions run on DirectConvolution, whose
        // sums run in another order than libtorch's (vgg11's eight: ~3e-6).
        Assert.True(TestEnv.RelL2(yb, ya) < 1e-5, $"logits rel L2 {TestEnv.RelL2(yb, ya):E2}");
        Assert.True(TestEnv.RelL2(gb, ga) < 1e-5, $"input gradient rel L2 {TestEnv.RelL2(gb, ga):E2}");
    }

    /// <summary>A first convolution with the given geometry, a ReLU and a second convolution.</summary>
    sealed class FirstConvNet : nn.Module<Tensor, Tensor>
    {
        readonly nn.Module<Tensor, Tensor> conv, relu, head;

        public FirstConvNet(int channels, int kernel, int stride, int padding, int dilation) : base("FirstConvNet")
        {
            conv = nn.Conv2d(channels, 6, kernel, stride: stride, padding: padding, dilation: dilation);
            relu = nn.ReLU();
            head = nn.Conv2d(6, 2, 1);
            RegisterComponents();
            using var _ = no_grad();
            var g = new Generator((ulong)(channels * 1000 + kernel * 100 + stride * 10 + padding));
            foreach (var p in parameters()) p.copy_(randn(p.shape, generator: g));
        }

        public override Tensor forward(Tensor x) => head.call(relu.call(conv.call(x))).flatten(1);
    }

    [Theory]
    [InlineData(3, 7, 2, 3, 1, 1)] // resnet stem
    [InlineData(1, 3, 1, 1, 1, 2)] // demo CNN stem
    [InlineData(4, 5, 3, 0, 1, 1)] // stride larger than 2, no padding, sizes that do not divide
    [InlineData(2, 3, 2, 2, 2, 3)] // dilation
    [InlineData(3, 1, 2, 0, 1, 1)] // 1×1
    [InlineData(3, 11, 4, 2, 1, 1)] // alexnet stem
    public void FirstLayerInputGradientsEqualLibtorchs(int channels, int kernel, int stride, int padding, int dilation, int batch)
    {
        var spec = new InputSpec(channels, 29, 31, Enumerable.Repeat(0f, channels).ToArray(), Enumerable.Repeat(1f, channels).ToArray());
        using var plain = new TorchModel(new FirstConvNet(channels, kernel, stride, padding, dilation), spec, null, fastKernels: false);
        using var fast = new TorchModel(new FirstConvNet(channels, kernel, stride, padding, dilation), spec, null, fastKernels: true);
        Assert.Equal((0, 1), (plain.FewChannelConvs, fast.FewChannelConvs));
        using var scope = NewDisposeScope();
        var x = randn([batch, channels, 29, 31], generator: new Generator(6)).contiguous();
        Tensor w;
        using (no_grad()) w = randn(plain.Forward(x).shape, generator: new Generator(7));
        var (ya, ga) = Run(plain, x, w);
        var (yb, gb) = Run(fast, x, w);
        // The first layer's forward is libtorch's; the 1×1 head (6 channels) runs on DirectConvolution where oneDNN is
        // off: equal to float rounding.
        if (DirectConvolution.Enabled) Assert.True(TestEnv.RelL2(yb, ya) < 1e-6, $"output rel L2 {TestEnv.RelL2(yb, ya):E2}");
        else Assert.Equal(ya, yb);
        Assert.True(TestEnv.RelL2(gb, ga) < 1e-6, $"input gradient rel L2 {TestEnv.RelL2(gb, ga):E2}");
        // A weight changed in place through GetParameter (as sanity randomisation does) is what the fast path uses.
        foreach (var m in new[] { plain, fast })
            using (no_grad()) m.GetParameter("conv.weight")!.mul_(-2);
        var (_, ga2) = Run(plain, x, w);
        var (_, gb2) = Run(fast, x, w);
        Assert.True(TestEnv.RelL2(gb2, ga2) < 1e-6, $"after the change: rel L2 {TestEnv.RelL2(gb2, ga2):E2}");
        Assert.True(TestEnv.RelL2(ga2, ga) > 0.5);
    }

    [Fact]
    public void AFirstConvolutionWhoseWeightsNeedGradientsRunsLibtorchsBackward()
    {
        var spec = new InputSpec(3, 16, 16, [0f, 0f, 0f], [1f, 1f, 1f]);
        using var fast = new TorchModel(new FirstConvNet(3, 3, 1, 1, 1), spec, null, fastKernels: true);
        using var scope = NewDisposeScope();
        var weight = fast.GetParameter("conv.weight")!;
        weight.requires_grad = true;
        try
        {
            var x = randn([1, 3, 16, 16], generator: new Generator(8)).requires_grad_(true);
            var grads = CheckedOps.Grad([fast.Forward(x).sum()], [x, weight]);
            Assert.True(grads[1].abs().sum().item<float>() > 0);
        }
        finally { weight.requires_grad = false; }
    }
}
