using Loupe.Abstractions;
using Loupe.Models.TorchSharp;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>Max pools run on the faster kernel (<c>fast_max_pool</c>, on by default in the torchvision backend): the
/// same values, captures and input gradients as libtorch's own max pool, bit for bit — ties included.</summary>
public class FastMaxPoolTests
{
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
        (new TorchModel(new PoolNet(), Spec, null, fastMaxPool: false), new TorchModel(new PoolNet(), Spec, null, fastMaxPool: true));

    static Tensor IntegerInput(int batch, int seed) => randint(-3, 4, [batch, 4, 23, 23], generator: new Generator((ulong)seed)).to(float32);

    static (float[] Output, float[] Gradient) Run(IModel model, Tensor x, Tensor weights)
    {
        using var scope = NewDisposeScope();
        var xi = x.detach().requires_grad_(true);
        var y = model.Forward(xi);
        var g = autograd.grad([(y * weights).sum()], [xi])[0];
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
                return autograd.grad([y[.., 3].sum()], [c["pool"]])[0].ToArray<float>();
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
            var before = Tensor.TotalCount;
            for (int i = 0; i < 5; i++) Run(fast, x, w);
            using (var scope = NewDisposeScope())
            {
                var y = fast.Forward(x.detach().requires_grad_(true)); // a graph that is never run backwards
            }
            Assert.Equal(before, Tensor.TotalCount);
            x.Dispose();
            w.Dispose();
        }
    }

    [Theory]
    [InlineData("resnet18", 1, 64)]
    [InlineData("vgg11", 5, 32)]     // pools inside the features Sequential
    [InlineData("alexnet", 3, 64)]
    [InlineData("fashion-cnn", 2, 28)]
    public void TorchVisionModelsGiveTheSameLogitsAndGradientsWithFastPools(string arch, int pools, int size)
    {
        TorchModel Load(bool fastPools) => (TorchModel)new TorchVisionAdapter().Load(
            new TorchVisionOptions { Architecture = arch, NumClasses = 10, FastMaxPool = fastPools }, new ModelLoadContext(".", 0));
        using var plain = Load(false);
        using var fast = Load(true);
        Assert.Equal(pools, fast.FastMaxPools);
        using var scope = NewDisposeScope();
        var channels = arch == "fashion-cnn" ? 1 : 3;
        var x = randn([1, channels, size, size], generator: new Generator(2));
        var w = randn([1, 10], generator: new Generator(3));
        var (ya, ga) = Run(plain, x, w);
        var (yb, gb) = Run(fast, x, w);
        Assert.True(TestEnv.RelL2(yb, ya) < 1e-6, $"logits rel L2 {TestEnv.RelL2(yb, ya):E2}");
        Assert.True(TestEnv.RelL2(gb, ga) < 1e-6, $"input gradient rel L2 {TestEnv.RelL2(gb, ga):E2}");
    }
}
