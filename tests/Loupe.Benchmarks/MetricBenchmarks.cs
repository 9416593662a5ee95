using BenchmarkDotNet.Attributes;
using Loupe.Abstractions;
using Loupe.Analysis.Decisions;
using Loupe.Analysis.Evaluation;
using Loupe.Models.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Benchmarks;

/// <summary>Deletion + insertion (100 steps, 8 images of the demo CNN) against the forward passes they need:
/// 2 × 101 × 8 image forwards plus the two saliency passes that recompute the linked maps.</summary>
[MemoryDiagnoser(false)]
[MedianColumn]
public class MetricBenchmarks
{
    IModel _model = null!;
    Tensor _x = null!, _x808 = null!;
    BenchContext _ctx = null!;
    StepLink _link = null!;

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        _model = Bench.Fashion();
        torch.manual_seed(0);
        _x = randn(8, 1, 28, 28);
        _x808 = _x.repeat(101, 1, 1, 1);
        var target = Bench.TopOne(10);
        _ctx = new BenchContext(_model, target, _x);
        _link = new StepLink { Id = "saliency", Analysis = new Saliency(), Options = new SaliencyOptions() };
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _x808.Dispose(); _model.Dispose(); }

    [Benchmark(Baseline = true, Description = "the passes: 2 × 808 forwards + 2 saliency passes")]
    public float Passes()
    {
        using var scope = NewDisposeScope();
        float s = 0;
        for (int i = 0; i < 2; i++)
        {
            using (no_grad()) s += nn.functional.softmax(_model.Forward(_x808), 1).sum().item<float>();
            var x = _x.detach().requires_grad_(true);
            var y = _model.Forward(x);
            s += torch.autograd.grad([y.max(1).values.sum()], [x])[0].sum().item<float>();
        }
        return s;
    }

    [Benchmark(Description = "deletion + insertion, 100 steps")]
    public void DeletionInsertion()
    {
        new Deletion().Run(new PixelCurveOptions { Of = _link, Steps = 100 }, _ctx);
        new Insertion().Run(new PixelCurveOptions { Of = _link, Steps = 100 }, _ctx);
    }
}

/// <summary>Score-CAM and Ablation-CAM on the demo CNN (relu3, 128 channels, 8 images) against the forward passes they
/// need: 8 × 128 masked (or ablated) image forwards, in batches of 64, plus one forward of the batch.</summary>
[MemoryDiagnoser(false)]
[MedianColumn]
public class PerturbationCamBenchmarks
{
    IModel _model = null!;
    Tensor _x = null!, _x64 = null!;
    BenchContext _ctx = null!;

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        _model = Bench.Fashion();
        torch.manual_seed(0);
        _x = randn(8, 1, 28, 28);
        _x64 = randn(64, 1, 28, 28);
        var target = Bench.TopOne(10);
        _ctx = new BenchContext(_model, target, _x);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _x64.Dispose(); _model.Dispose(); }

    [Benchmark(Baseline = true, Description = "the passes: 16 forwards of 64 + 1 of 8")]
    public float Passes()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        float s = _model.Forward(_x).sum().item<float>();
        for (int i = 0; i < 16; i++) s += _model.Forward(_x64).sum().item<float>();
        return s;
    }

    [Benchmark(Description = "score-cam (relu3)")]
    public void ScoreCam() => new Loupe.Analysis.Cam.ScoreCam().Run(new Loupe.Analysis.Cam.ScoreCamOptions { Layer = "relu3" }, _ctx);

    [Benchmark(Description = "ablation-cam (relu3)")]
    public void AblationCam() => new Loupe.Analysis.Cam.AblationCam().Run(new Loupe.Analysis.Cam.ScoreCamOptions { Layer = "relu3" }, _ctx);
}

/// <summary>Score-CAM on the demo CNN run by ONNX Runtime (<c>samples/models/fashion-cnn/fashion-cnn.onnx</c>, the same
/// weights exported): the backend swap for forward-only steps. Same input and batch as <see cref="PerturbationCamBenchmarks"/>.</summary>
[MemoryDiagnoser(false)]
[MedianColumn]
public class OrtPerturbationCamBenchmarks
{
    IModel _model = null!;
    Tensor _x = null!, _x64 = null!;
    BenchContext _ctx = null!;

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        _model = Bench.FashionOnnxRuntime();
        torch.manual_seed(0);
        _x = randn(8, 1, 28, 28);
        _x64 = randn(64, 1, 28, 28);
        _ctx = new BenchContext(_model, Bench.TopOne(10), _x);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _x64.Dispose(); _model.Dispose(); }

    [Benchmark(Baseline = true, Description = "the passes: 16 forwards of 64 + 1 of 8")]
    public float Passes()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        float s = _model.Forward(_x).sum().item<float>();
        for (int i = 0; i < 16; i++) s += _model.Forward(_x64).sum().item<float>();
        return s;
    }

    [Benchmark(Description = "score-cam (relu3)")]
    public void ScoreCam() => new Loupe.Analysis.Cam.ScoreCam().Run(new Loupe.Analysis.Cam.ScoreCamOptions { Layer = "/relu3/Relu" }, _ctx);
}
