using BenchmarkDotNet.Attributes;
using Loupe.Abstractions;
using Loupe.Analysis.Decisions;
using Loupe.Models.Onnx;
using Loupe.Models.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Benchmarks;

/// <summary>Backends at batch 1, 224², 2 threads: the ML.NET ResNet-18 through the ONNX interpreter (differentiable)
/// and ONNX Runtime (forward only), next to TorchSharp's native resnet18.</summary>
[MemoryDiagnoser(false)]
[MedianColumn]
public class BackendBenchmarks
{
    IModel _native = null!, _onnx = null!, _ort = null!;
    Tensor _x = null!;

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        var ctx = new ModelLoadContext(".", 0);
        _native = new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = "resnet18" }, ctx);
        _onnx = new OnnxAdapter().Load(new OnnxOptions { Model = "mlnet-resnet18" }, ctx);
        _ort = new OnnxRuntimeAdapter().Load(new OnnxOptions { Model = "mlnet-resnet18" }, ctx);
        _x = rand(1, 3, 224, 224);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _native.Dispose(); _onnx.Dispose(); _ort.Dispose(); }

    static float ForwardBackward(IModel m, Tensor x0)
    {
        using var scope = NewDisposeScope();
        var x = x0.detach().requires_grad_(true);
        var y = m.Forward(x);
        return CheckedOps.Grad([y.flatten(1).max(1).values.sum()], [x])[0].sum().item<float>();
    }

    static float Forward(IModel m, Tensor x)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        return m.Forward(x).sum().item<float>();
    }

    [Benchmark(Baseline = true, Description = "torchvision resnet18 forward+backward")]
    public float NativeForwardBackward() => ForwardBackward(_native, _x);

    [Benchmark(Description = "onnx mlnet-resnet18 forward+backward")]
    public float OnnxForwardBackward() => ForwardBackward(_onnx, _x);

    [Benchmark(Description = "torchvision resnet18 forward")]
    public float NativeForward() => Forward(_native, _x);

    [Benchmark(Description = "onnx mlnet-resnet18 forward")]
    public float OnnxForward() => Forward(_onnx, _x);

    [Benchmark(Description = "onnx-runtime mlnet-resnet18 forward")]
    public float OrtForward() => Forward(_ort, _x);
}

/// <summary>Path and perturbation methods at batch 1 against the batched passes they need.</summary>
[MemoryDiagnoser(false)]
[MedianColumn]
public class PathBenchmarks
{
    IModel _model = null!;
    Tensor _x = null!, _x50 = null!, _x16 = null!;
    BenchContext _ctx = null!;

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        _model = Bench.Resnet18();
        _x = randn(1, 3, 224, 224);
        _x50 = _x.expand(50, -1, -1, -1).contiguous();
        _x16 = _x.expand(16, -1, -1, -1).contiguous();
        var target = Bench.TopOne(1000);
        _ctx = new BenchContext(_model, target, _x);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _x50.Dispose(); _x16.Dispose(); _model.Dispose(); }

    [Benchmark(Baseline = true, Description = "50 forward+backward (one batch of 50)")]
    public float FiftyForwardBackward()
    {
        using var scope = NewDisposeScope();
        var x = _x50.detach().requires_grad_(true);
        var y = _model.Forward(x);
        return CheckedOps.Grad([y.max(1).values.sum()], [x])[0].sum().item<float>();
    }

    [Benchmark(Description = "integrated-gradients, 50 steps")]
    public void IntegratedGradients50() => new IntegratedGradients().Run(new IntegratedGradientsOptions { Steps = 50 }, _ctx);

    [Benchmark(Description = "17 forwards (one batch of 16 + 1)")]
    public float SeventeenForwards()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        return _model.Forward(_x16).sum().item<float>() + _model.Forward(_x).sum().item<float>();
    }

    [Benchmark(Description = "occlusion, 16 windows of 56²"), Floor("17 forwards (one batch of 16 + 1)")]
    public void Occlusion16() => new Occlusion().Run(new OcclusionOptions { Window = [56], Stride = [56] }, _ctx);
}
