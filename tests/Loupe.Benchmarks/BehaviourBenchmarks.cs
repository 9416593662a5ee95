using BenchmarkDotNet.Attributes;
using Loupe.Abstractions;
using Loupe.Analysis.Embedding;
using Loupe.Models.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Benchmarks;

/// <summary>max-patches over 10,000 demo-CNN inputs (28², batches of 250, 2 threads) against the forward passes it
/// needs: 40 forwards of 250 with relu3 captured. The top-k pass alone is the row compared with Python.</summary>
[MemoryDiagnoser(false)]
[MedianColumn]
public class MaxPatchesBenchmarks
{
    IModel _model = null!;
    Tensor _x = null!;
    BenchContext _ctx = null!;
    static readonly int[] Sixteen = Enumerable.Range(0, 16).ToArray();

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        _model = Bench.Fashion();
        torch.manual_seed(0);
        _x = randn(10000, 1, 28, 28);
        _ctx = new BenchContext(_model, Bench.TopOne(10), _x, 250);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _model.Dispose(); }

    [Benchmark(Baseline = true, Description = "40 forwards of 250, relu3 captured")]
    public float Forwards()
    {
        float s = 0;
        foreach (var (_, a) in Explain.LayerBatches(_ctx, "relu3"))
        {
            using var scope = NewDisposeScope();
            s += a.narrow(1, 0, 16).amax().item<float>();
        }
        return s;
    }

    [Benchmark(Description = "max-patches top-k pass (relu3, 16 channels)")]
    public int TopKPass() => MaxPatches.StreamTopK(_ctx, "relu3", Sixteen, 16).Top.Length;

    [Benchmark(Description = "max-patches step (relu3, 16 channels, top 16: pass, receptive field, crops)")]
    public void Step() => new MaxPatches().Run(new MaxPatchesOptions { Layer = "relu3", Channels = Sixteen, Top = 16 }, _ctx);
}

/// <summary>The max-patches top-k pass with the demo CNN run by ONNX Runtime (relu3 as an extra graph output).</summary>
[MemoryDiagnoser(false)]
[MedianColumn]
public class OrtMaxPatchesBenchmarks
{
    IModel _model = null!;
    Tensor _x = null!;
    BenchContext _ctx = null!;
    static readonly int[] Sixteen = Enumerable.Range(0, 16).ToArray();

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        _model = Bench.FashionOnnxRuntime();
        torch.manual_seed(0);
        _x = randn(10000, 1, 28, 28);
        _ctx = new BenchContext(_model, Bench.TopOne(10), _x, 250);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _model.Dispose(); }

    [Benchmark(Baseline = true, Description = "40 forwards of 250, relu3 captured")]
    public float Forwards()
    {
        float s = 0;
        foreach (var (_, a) in Explain.LayerBatches(_ctx, "/relu3/Relu"))
        {
            using var scope = NewDisposeScope();
            s += a.narrow(1, 0, 16).amax().item<float>();
        }
        return s;
    }

    [Benchmark(Description = "max-patches top-k pass (relu3, 16 channels)")]
    public int TopKPass() => MaxPatches.StreamTopK(_ctx, "/relu3/Relu", Sixteen, 16).Top.Length;
}
