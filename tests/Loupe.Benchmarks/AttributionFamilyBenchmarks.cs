using BenchmarkDotNet.Attributes;
using Loupe.Abstractions;
using Loupe.Analysis.Cam;
using Loupe.Analysis.Decisions;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Benchmarks;

/// <summary>Issue 20's methods on resnet18 at 224², batch 8, 2 threads, each next to the raw passes it needs (its
/// "floor"): full-grad → forward+backward to the input (Resnet18Benchmarks' row); shapley-cam → a forward and the
/// double backward to layer4; lrp → the two forwards it runs (target selection, graph values) and the two modified
/// forward+backward passes of z⁺; deeplift → a forward and one forward+backward of [x; reference]; kernel-shap → the
/// batched coalition forwards (25 masked copies per input in one batch, as Captum's perturbations_per_eval = 25).</summary>
[MemoryDiagnoser(false)]
[BenchmarkDotNet.Attributes.MedianColumn]
public class AttributionFamilyBenchmarks
{
    IModel _model = null!;
    Tensor _x = null!;
    BenchContext _ctx = null!;

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        _model = Bench.Resnet18();
        _x = randn(8, 3, 224, 224);
        _ctx = new BenchContext(_model, Bench.TopOne(1000), _x);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _model.Dispose(); }

    Tensor TopScore(Tensor y) => y.gather(1, y.argmax(1, keepdim: true)).sum();

    [Benchmark(Description = "full-grad"), Floor("forward+backward to input")]
    public void FullGrad() => new FullGrad().Run(new FullGradOptions(), _ctx);

    [Benchmark(Description = "forward + double backward to layer4"), Floor("")]
    public float DoubleBackward()
    {
        using var scope = NewDisposeScope();
        using var capture = _model.Capture(["layer4"], forGradients: true);
        var y = _model.Forward(_x);
        var c = y.argmax(1, keepdim: true);
        var score = (y.gather(1, c) + nn.functional.log_softmax(y, 1).gather(1, c)).sum();      // ReST
        var a = capture["layer4"];
        var g = CheckedOps.Grad([score], [a], retainGraph: true, createGraph: true)[0];
        return CheckedOps.Grad([g], [a], [a.detach()])[0].sum().item<float>();
    }

    [Benchmark(Description = "shapley-cam (layer4, rest)"), Floor("forward + double backward to layer4")]
    public void ShapleyCam() => new ShapleyCam().Run(new ShapleyCamOptions { Layer = "layer4", Score = ShapleyScore.Rest }, _ctx);

    [Benchmark(Description = "2 forwards + 2 forward+backward to input"), Floor("")]
    public float LrpPasses()
    {
        using var scope = NewDisposeScope();
        float s;
        using (no_grad()) s = _model.Forward(_x).sum().item<float>() + _model.Forward(_x).sum().item<float>();
        for (int k = 0; k < 2; k++)
        {
            using var inner = NewDisposeScope();
            var x = (k == 0 ? _x.clamp_min(0) : _x.clamp_max(0)).requires_grad_(true);
            s += CheckedOps.Grad([TopScore(_model.Forward(x))], [x])[0].sum().item<float>();
        }
        return s;
    }

    [Benchmark(Description = "lrp (epsilon-plus)"), Floor("2 forwards + 2 forward+backward to input")]
    public void Lrp() => new Lrp().Run(new LrpOptions(), _ctx);

    [Benchmark(Description = "forward + forward+backward to input of 16"), Floor("")]
    public float DeepLiftPasses()
    {
        using var scope = NewDisposeScope();
        float s;
        using (no_grad()) s = _model.Forward(_x).sum().item<float>();
        var both = cat([_x, zeros_like(_x)]).requires_grad_(true);
        return s + CheckedOps.Grad([TopScore(_model.Forward(both))], [both])[0].sum().item<float>();
    }

    [Benchmark(Description = "deeplift"), Floor("forward + forward+backward to input of 16")]
    public void DeepLift() => new DeepLift().Run(new DeepLiftOptions(), _ctx);

    [Benchmark(Description = "forwards: 1 of 8 + 8 of 25"), Floor("")]
    public float CoalitionForwards()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        float s = _model.Forward(_x).sum().item<float>();
        using var g = new Generator(0);
        for (int i = 0; i < 8; i++)
        {
            using var inner = NewDisposeScope();
            var masks = (rand([25, 1, 7, 7], generator: g) < 0.5).to(ScalarType.Float32);
            var up = nn.functional.interpolate(masks, [224, 224], mode: InterpolationMode.Nearest);
            s += _model.Forward(_x[i].unsqueeze(0) * up).sum().item<float>();
        }
        return s;
    }

    [Benchmark(Description = "kernel-shap, 25 coalitions, cells of 32"), Floor("forwards: 1 of 8 + 8 of 25")]
    public void KernelShap() => new KernelShap().Run(new KernelShapOptions { Cell = 32, Samples = 25 }, _ctx);
}
