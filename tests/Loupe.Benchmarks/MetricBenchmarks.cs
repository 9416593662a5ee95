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

/// <summary>Score-CAM on the demo CNN (relu3, 128 channels, 8 images) against the forward passes it needs: 8 × 128
/// masked image forwards, in batches of 64, plus one forward of the batch. Subclasses pick the backend.</summary>
[MemoryDiagnoser(false)]
[MedianColumn]
public abstract class FashionCamBenchmarks
{
    /// <summary>The model under test.</summary>
    protected IModel Model = null!;
    Tensor _x = null!, _x64 = null!;
    /// <summary>The batch of 8 as an analysis context.</summary>
    protected BenchContext Ctx = null!;

    /// <summary>Loads the demo CNN on this class's backend.</summary>
    protected abstract IModel Load();
    /// <summary>relu3's name on this backend.</summary>
    protected abstract string Relu3 { get; }

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        Model = Load();
        torch.manual_seed(0);
        _x = randn(8, 1, 28, 28);
        _x64 = randn(64, 1, 28, 28);
        Ctx = new BenchContext(Model, Bench.TopOne(10), _x);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _x64.Dispose(); Model.Dispose(); }

    [Benchmark(Baseline = true, Description = "the passes: 16 forwards of 64 + 1 of 8")]
    public float Passes()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        float s = Model.Forward(_x).sum().item<float>();
        for (int i = 0; i < 16; i++) s += Model.Forward(_x64).sum().item<float>();
        return s;
    }

    [Benchmark(Description = "score-cam (relu3)")]
    public void ScoreCam() => new Loupe.Analysis.Cam.ScoreCam().Run(new Loupe.Analysis.Cam.ScoreCamOptions { Layer = Relu3 }, Ctx);
}

/// <summary>Score-CAM and Ablation-CAM (same passes: 8 × 128 ablated forwards) on the TorchSharp demo CNN.</summary>
public class PerturbationCamBenchmarks : FashionCamBenchmarks
{
    /// <inheritdoc/>
    protected override IModel Load() => Bench.Fashion();
    /// <inheritdoc/>
    protected override string Relu3 => "relu3";

    [Benchmark(Description = "ablation-cam (relu3)")]
    public void AblationCam() => new Loupe.Analysis.Cam.AblationCam().Run(new Loupe.Analysis.Cam.ScoreCamOptions { Layer = Relu3 }, Ctx);
}

/// <summary>Score-CAM with the demo CNN run by ONNX Runtime (<c>samples/models/fashion-cnn/fashion-cnn.onnx</c>, the same
/// weights exported): the backend swap for forward-only steps.</summary>
public class OrtPerturbationCamBenchmarks : FashionCamBenchmarks
{
    /// <inheritdoc/>
    protected override IModel Load() => Bench.FashionOnnxRuntime();
    /// <inheritdoc/>
    protected override string Relu3 => "/relu3/Relu";
}
