using BenchmarkDotNet.Attributes;
using Loupe.Abstractions;
using Loupe.Analysis.Decisions;
using Loupe.Analysis.Evaluation;
using Loupe.Models.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

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
        _link = Bench.SaliencyStep(_ctx);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _x808.Dispose(); _model.Dispose(); }

    [Benchmark(Baseline = true, Description = "the passes: 2 × 808 forwards + 2 saliency passes")]
    public float Passes()
    {
        using var scope = NewDisposeScope();
        float s = 0;
        // The 101 steps of each input in the passes deletion and insertion make (as many steps as the toolkit's pass holds).
        long perPass = Math.Max(1, Explain.CopiesPerForward(_ctx, _x, null) / _x.shape[0]);
        for (int i = 0; i < 2; i++)
        {
            s += Bench.ForwardInPasses(_model, _x808, _x.shape[0], perPass, softmax: true);
            var x = _x.detach().requires_grad_(true);
            var y = _model.Forward(x);
            s += CheckedOps.Grad([y.max(1).values.sum()], [x])[0].sum().item<float>();
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
    public void AblationCam() => new Loupe.Analysis.Cam.AblationCam().Run(new Loupe.Analysis.Cam.AblationCamOptions { Layer = Relu3 }, Ctx);
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

/// <summary>The expensive Quantus-style metrics (issue 22) on 8 images of the demo CNN, each paired with the passes
/// it needs (saliency's map is recomputed once: the bench context keeps no map cache).
/// ROAD (5 percentages): the 5 × 8 imputed images in one forward, plus the imputation (one batched conjugate-gradient
/// solve) it adds. Region perturbation (4×4 patches, 49 regions, on the grid of
/// blocks, the default, as the Python side and the recorded rows; Quantus 0.5's sliding windows may find fewer than 49
/// regions, less work than the floor): the 49 × 8 perturbed images in one forward and one clean forward. Local Lipschitz (10 samples): the 10 × 8 noisy images in one saliency pass (no other forward: the
/// ratio reads only the maps and the inputs). Batches as the metrics batch them under the default memory budget.
/// Paired with Python (tools/bench/python_bench.py) and served as rows "fashion-cnn b8 | road, 5 percentages" etc.</summary>
[MemoryDiagnoser(false)]
[MedianColumn]
[GroupBenchmarksBy(BenchmarkDotNet.Configs.BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class QualityMetricBenchmarks
{
    IModel _model = null!;
    Tensor _x = null!, _x392 = null!, _x40 = null!, _x80 = null!;
    BenchContext _ctx = null!;
    StepLink _link = null!;

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        _model = Bench.Fashion();
        torch.manual_seed(0);
        _x = randn(8, 1, 28, 28);
        _x392 = _x.repeat(49, 1, 1, 1);
        _x40 = _x.repeat(5, 1, 1, 1);
        _x80 = _x.repeat(10, 1, 1, 1);
        _ctx = new BenchContext(_model, Bench.TopOne(10), _x);
        _link = Bench.SaliencyStep(_ctx);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _x392.Dispose(); _x40.Dispose(); _x80.Dispose(); _model.Dispose(); }

    float Saliency() => Saliency(_x);
    public float SaliencyPass() => Saliency(_x);
    public float SaliencyPass80() => Saliency(_x80);
    public float Forward40() { using (no_grad()) return _model.Forward(_x40).sum().item<float>(); }
    /// <summary>The input gradient through the toolkit (capture, target selection, scores, |·|), as saliency makes it.</summary>
    public float ToolkitSaliency() => Explain.InputGradient(_ctx, _x, null, 0).Gradient.abs().sum().item<float>();
    /// <summary>The saliency step's map as a metric asks for it (the linked step's Attribute).</summary>
    public float PluginSaliency() =>
        new Loupe.Analysis.Decisions.Saliency().Attribute(new Loupe.Analysis.Decisions.SaliencyOptions(), new AttributionInput(_ctx, _x, null, 0, null)).Map.sum().item<float>();

    float Saliency(Tensor input) => Bench.SaliencySum(_model, input);

    /// <summary>The bench inputs repeated per percentage (N·P×1×H×W, input-major as ROAD batches them) and the masks
    /// ROAD imputes on them: the |saliency| ranking, most relevant first, ⌊D·p/100⌋ pixels.</summary>
    public (Tensor Xs, Tensor Unknown) RoadMasks(double[] percentages)
    {
        var x = _x.detach().requires_grad_(true);
        var y = _model.Forward(x);
        var a = CheckedOps.Grad([y.max(1).values.sum()], [x])[0].abs().amax([1]).flatten(1);
        long n = a.shape[0], d = a.shape[1], p = percentages.Length;
        var rank = zeros_like(a, dtype: ScalarType.Int64).scatter_(1, a.argsort(1, descending: true), arange(d).expand(n, d).contiguous());
        var limits = tensor(percentages.Select(q => (long)Math.Floor(d * q / 100.0 + 1e-9)).ToArray());
        var unknown = (rank.unsqueeze(1) < limits.view(1, p, 1)).view(n * p, 1, _x.shape[2], _x.shape[3]);
        return (_x.unsqueeze(1).expand(n, p, 1, _x.shape[2], _x.shape[3]).reshape(n * p, 1, _x.shape[2], _x.shape[3]), unknown);
    }

    const string RoadFloor = "ROAD's passes: a saliency pass of 8 + one forward of 40";
    const string RegionFloor = "region perturbation's passes: a saliency pass of 8 + forwards of 392 (in its passes) and 8";
    const string LipschitzFloor = "local Lipschitz's passes: a saliency pass of 8 and the 80 copies' (in its passes)";

    [BenchmarkCategory("road"), Benchmark(Baseline = true, Description = RoadFloor), Floor("")]
    public float RoadPasses()
    {
        using var scope = NewDisposeScope();
        // The 40 imputed copies in the passes ROAD makes (one of 40 under the toolkit's pass size).
        return Saliency() + Bench.ForwardInPasses(_model, _x40, 1, Explain.EvenPasses(40, Explain.CopiesPerForward(_ctx, _x, null)));
    }

    [BenchmarkCategory("road"), Benchmark(Description = "road, 5 percentages"), Floor(RoadFloor)]
    public void Road() => new Road().Run(new FaithfulnessOptions { Of = _link, Percentages = [10, 30, 50, 70, 90] }, _ctx);

    /// <summary>ROAD with its curve figure drawn, as a pipeline run draws it (not a row: <c>--profile-road</c> prints it).</summary>
    public void RoadDrawn()
    {
        _ctx.DrawFigures = true;
        try { Road(); }
        finally { _ctx.DrawFigures = false; }
    }

    [BenchmarkCategory("region"), Benchmark(Baseline = true, Description = RegionFloor), Floor("")]
    public float RegionPasses()
    {
        using var scope = NewDisposeScope();
        float s = Saliency();
        // The 49 regions of each input in the passes the metric makes (even passes of the toolkit's size).
        s += Bench.ForwardInPasses(_model, _x392, 8, Explain.EvenPasses(49, Explain.CopiesPerForward(_ctx, _x, null) / 8), softmax: true);
        using (no_grad()) s += _model.Forward(_x).sum().item<float>();
        return s;
    }

    [BenchmarkCategory("region"), Benchmark(Description = "region-perturbation, 4×4 patches, 49 regions"), Floor(RegionFloor)]
    public void RegionPerturbation() => new RegionPerturbation().Run(new FaithfulnessOptions { Of = _link, Patch = 4, Regions = 49, Windows = RegionWindows.Grid }, _ctx);

    [BenchmarkCategory("lipschitz"), Benchmark(Baseline = true, Description = LipschitzFloor), Floor("")]
    public float LipschitzPasses()
    {
        using var scope = NewDisposeScope();
        // The 10 samples of each input in the passes the metric makes (as many samples as a gradient pass holds).
        long perPass = Math.Max(1, Explain.CopiesPerForward(_ctx, _x, null, gradients: true) / 8) * 8;
        float s = Saliency(_x);
        for (long at = 0; at < _x80.shape[0]; at += perPass) s += Saliency(_x80.narrow(0, at, Math.Min(perPass, _x80.shape[0] - at)));
        return s;
    }

    [BenchmarkCategory("lipschitz"), Benchmark(Description = "local-lipschitz, 10 samples"), Floor(LipschitzFloor)]
    public void LocalLipschitz() => new LocalLipschitz().Run(new StabilityOptions { Of = _link, Samples = 10 }, _ctx);
}

/// <summary>ROAD at ImageNet size (issue 22): resnet18 (random weights, seed 0), 8 inputs of 3×224×224, five
/// percentages: the 40 imputed copies' forward and the saliency pass against the whole metric, whose exact imputation
/// of 40 systems of up to 45,000 unknowns the 28×28 row cannot show. Served as "resnet18 b8 | road, 5 percentages".
/// </summary>
[MemoryDiagnoser(false)]
[MedianColumn]
public class LargeRoadBenchmarks
{
    IModel _model = null!;
    Tensor _x = null!, _x40 = null!;
    BenchContext _ctx = null!;
    StepLink _link = null!;

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        _model = Bench.Resnet18();
        torch.manual_seed(0);
        _x = randn(8, 3, 224, 224);
        _x40 = _x.repeat(5, 1, 1, 1);
        _ctx = new BenchContext(_model, Bench.TopOne(1000), _x);
        _link = Bench.SaliencyStep(_ctx);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _x40.Dispose(); _model.Dispose(); }

    const string RoadFloor = "ROAD's passes: a saliency pass of 8 + the forward of 40 as 5 × 8";

    /// <summary>The floor: the saliency pass, and the forward of the 40 copies in the passes the metric makes
    /// (<see cref="Explain.CopiesPerForward"/>: 8 copies, the fewest its speed cap leaves; 2 × 20 under the memory budget
    /// alone until 2026-12-05 — one pass of 40 takes ~1.6× as long, `--road-large 224 5 chunks`, so a floor of one pass
    /// would flatter the metric).</summary>
    [Benchmark(Baseline = true, Description = RoadFloor), Floor("")]
    public float RoadPasses()
    {
        using var scope = NewDisposeScope();
        float s = Bench.SaliencySum(_model, _x);
        long pass = Explain.EvenPasses(_x40.shape[0], Explain.CopiesPerForward(_ctx, _x, null));
        using (no_grad())
            for (long at = 0; at < _x40.shape[0]; at += pass)
                s += _model.Forward(_x40.narrow(0, at, Math.Min(pass, _x40.shape[0] - at))).sum().item<float>();
        return s;
    }

    [Benchmark(Description = "road, 5 percentages"), Floor(RoadFloor)]
    public void Road() => new Road().Run(new FaithfulnessOptions { Of = _link, Percentages = [10, 30, 50, 70, 90] }, _ctx);
}
