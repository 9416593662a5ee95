using BenchmarkDotNet.Attributes;
using Loupe.Abstractions;
using Loupe.Analysis.Cam;
using Loupe.Analysis.Decisions;
using Loupe.Models.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Benchmarks;

/// <summary>resnet18 at 224², batch 1 and 8, 2 intra-op threads: each technique next to the passes it needs.
/// Techniques run through their real <see cref="IAnalysis"/> classes (display images included; files not written).</summary>
[MemoryDiagnoser(false)]
[BenchmarkDotNet.Attributes.MedianColumn]
public class Resnet18Benchmarks
{
    IModel _model = null!;
    Tensor _x = null!;
    BenchContext _ctx = null!;

    [Params(1, 8)] public int Batch;

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        _model = Bench.Resnet18();
        _x = randn(Batch, 3, 224, 224);
        var target = Bench.TopOne(1000);
        _ctx = new BenchContext(_model, target, _x);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _model.Dispose(); }

    [Benchmark(Baseline = true, Description = "forward (no grad)")]
    public float Forward()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        return _model.Forward(_x).sum().item<float>();
    }

    [Benchmark(Description = "forward+backward to input"), Floor("")]
    public float ForwardBackward()
    {
        using var scope = NewDisposeScope();
        var x = _x.detach().requires_grad_(true);
        var y = _model.Forward(x);
        var s = y.gather(1, y.argmax(1).unsqueeze(1)).sum();
        return CheckedOps.Grad([s], [x])[0].sum().item<float>();
    }

    [Benchmark(Description = "grad-cam (layer4)")]
    public void GradCam() => new GradCam().Run(new GradCamOptions { Layer = "layer4" }, _ctx);

    [Benchmark(Description = "grad-cam-plus-plus (layer4)")]
    public void GradCamPlusPlus() => new GradCamPlusPlus().Run(new CamOptions { Layer = "layer4" }, _ctx);

    [Benchmark(Description = "layer-cam (layer4)")]
    public void LayerCam() => new LayerCam().Run(new CamOptions { Layer = "layer4" }, _ctx);

    [Benchmark(Description = "saliency"), Floor("forward+backward to input")]
    public void Saliency() => new Saliency().Run(new SaliencyOptions(), _ctx);

    [Benchmark(Description = "gradient-x-input"), Floor("forward+backward to input")]
    public void GradientXInput() => new GradientXInput().Run(new NoOptions(), _ctx);

    [Benchmark(Description = "guided-backprop"), Floor("forward+backward to input")]
    public void GuidedBackprop() => new GuidedBackprop().Run(new NoOptions(), _ctx);

    [Benchmark(Description = "deconvnet"), Floor("forward+backward to input")]
    public void Deconvnet() => new Deconvnet().Run(new NoOptions(), _ctx);
}

/// <summary>A minimal analysis context over one in-memory batch; results are converted but not written.</summary>
public sealed class BenchContext(IModel model, ITarget target, Tensor x, int batchSize = 0) : IAnalysisContext, IArtifactSink
{
    /// <summary>The step references <see cref="Referenced"/> resolves (as the host's plan would).</summary>
    public StepReferences References { get; set; } = StepReferences.None;
    public ReferencedStep Referenced(IStepReference reference) => References.Of(reference);
    public string StepId => "bench";
    public IModel Model => model;
    public InputSpec Input => model.DefaultInput;
    public IReadOnlyList<string> Labels => [];
    public ITarget Target => target;
    public long? InputCount => x.shape[0];
    public int BatchSize => batchSize > 0 ? batchSize : (int)x.shape[0];
    public IArtifactSink Output => this;
    public int Seed => 0;
    public CancellationToken Cancellation => default;
    public long MemoryBudgetBytes => Explain.DefaultMemoryBudgetBytes;
    public IDictionary<string, object> RunCache { get; } = new Dictionary<string, object>();
    public ShardInfo? Shard => null;
    public OverlayStyle? OverlayStyle => null;
    public ILayerConsumer RunLayerPass(LayerPass pass) => Explain.StandaloneLayerPass(this, pass);
    List<InputBatch>? _batches;
    /// <summary>The batches, made on the first call and kept (outside any dispose scope): what the data source
    /// delivers — the input and its display pixels — is not the technique's work (the Python rows and the floors take
    /// the tensor as it is), so no row pays for it again on every call.</summary>
    public IEnumerable<InputBatch> Batches()
    {
        if (_batches is null)
        {
            _batches = [];
            for (long b0 = 0; b0 < x.shape[0]; b0 += BatchSize)
            {
                long n = Math.Min(BatchSize, x.shape[0] - b0);
                var input = x.narrow(0, b0, n).DetachFromDisposeScope();
                var pixels = Input.Denormalize(input).DetachFromDisposeScope();
                _batches.Add(new InputBatch(Enumerable.Range((int)b0, (int)n).Select(i => i.ToString("D5")).ToArray(), input, pixels, null));
            }
        }
        return _batches;
    }
    public void Progress(double fraction, string? message = null) { }
    public void Warn(string message) { }
    public void Raw(string name, string? inputId, NdArray array, string? target = null) { }
    public void Display(string name, string? inputId, RgbImage image, string? target = null) { }
    /// <summary>Whether figures are drawn (as a pipeline run draws them) or, the default, left undrawn as the library
    /// leaves them until they are looked at: the rows time the techniques and metrics, not their plots.</summary>
    public bool DrawFigures { get; set; }
    public void Figure(string name, string? inputId, Func<RgbImage> draw, string? target = null) { if (DrawFigures) draw(); }
    public void Json(string name, object value) { }
    public void Metric(string name, double value) { }
}

/// <summary>Score-CAM and Ablation-CAM on resnet18 layer4 (512 channels), 224², batch 8, 2 threads, against the forward
/// passes they need: 8 × 512 = 4,096 masked (or ablated) image forwards in batches of 64, plus one forward of the batch
/// (Ablation-CAM's base scores; Score-CAM's capture). About 2 minutes per call on 2 cores: run with
/// <c>-- --filter '*Resnet18PerturbationCam*' --short</c> (the jitting call, then 1 measured iteration).</summary>
[MemoryDiagnoser(false)]
[BenchmarkDotNet.Attributes.MedianColumn]
public class Resnet18PerturbationCamBenchmarks
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
        var target = Bench.TopOne(1000);
        _ctx = new BenchContext(_model, target, _x);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _model.Dispose(); }

    [Benchmark(Baseline = true, Description = "the passes: 64 forwards of 64 + 1 of 8")]
    public float Passes()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        float s = _model.Forward(_x).sum().item<float>();
        for (int i = 0; i < 8; i++)
            for (int c = 0; c < 8; c++)
            {
                using var inner = NewDisposeScope();
                s += _model.Forward(_x[i].unsqueeze(0).expand(64, -1, -1, -1) * (c + 1) / 8f).sum().item<float>();
            }
        return s;
    }

    [Benchmark(Description = "score-cam (layer4)")]
    public void ScoreCam() => new ScoreCam().Run(new ScoreCamOptions { Layer = "layer4" }, _ctx);

    [Benchmark(Description = "ablation-cam (layer4)")]
    public void AblationCam() => new AblationCam().Run(new AblationCamOptions { Layer = "layer4" }, _ctx);
}
