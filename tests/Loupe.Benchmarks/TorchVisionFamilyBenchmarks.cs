using BenchmarkDotNet.Attributes;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using Loupe.Models.TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Benchmarks;

/// <summary>The transformer and modern-CNN families the <c>torchvision</c> backend builds itself (no ONNX export):
/// vit_b_16, swin_t and regnet_y_400mf at 224², batch 1 and 8, 2 threads, random initialisation — the rows
/// python_bench.py times on torchvision's own modules (weights of torch.manual_seed(0): values do not change the time).</summary>
[MemoryDiagnoser(false)]
[MedianColumn]
public class TorchVisionFamilyBenchmarks : FamilyBenchmarks
{
    /// <summary>torchvision model name.</summary>
    [Params("vit_b_16", "swin_t", "regnet_y_400mf")]
    public string Model = "swin_t";

    /// <inheritdoc/>
    protected override IModel LoadModel() => new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = Model }, new ModelLoadContext(".", 0));
}

/// <summary>A full-size model's two rows at 224², batch 1 or 8, 2 threads: forward, and forward + backward to the
/// input; subclasses load the model.</summary>
public abstract class FamilyBenchmarks
{
    /// <summary>Batch size.</summary>
    [Params(1, 8)]
    public int Batch = 1;

    IModel _model = null!;
    Tensor _x = null!;

    /// <summary>The benchmarked model.</summary>
    protected abstract IModel LoadModel();

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        _model = LoadModel();
        _x = randn(Batch, 3, 224, 224);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _model.Dispose(); }

    [Benchmark(Description = "forward+backward to input"), Floor("")]
    public float ForwardBackward()
    {
        using var scope = NewDisposeScope();
        var x = _x.detach().requires_grad_(true);
        var y = _model.Forward(x);
        return CheckedOps.Grad([y.max(1).values.sum()], [x])[0].sum().item<float>();
    }

    [Benchmark(Description = "forward (no grad)"), Floor("")]
    public float Forward()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        return _model.Forward(_x).sum().item<float>();
    }
}
