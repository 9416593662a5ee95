using BenchmarkDotNet.Attributes;
using Loupe.Abstractions;
using Loupe.Analysis.Embedding;
using Loupe.Models.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Benchmarks;

/// <summary>The max-patches top-k pass over 10,000 demo-CNN inputs (28², batches of 250, 2 threads) against the forward
/// passes it needs: 40 forwards of 250 with relu3 captured. Subclasses pick the backend.</summary>
[MemoryDiagnoser(false)]
[MedianColumn]
public abstract class FashionPassBenchmarks
{
    IModel _model = null!;
    Tensor _x = null!;
    /// <summary>The 10,000 inputs in batches of 250.</summary>
    protected BenchContext Ctx = null!;
    /// <summary>The first 16 channels.</summary>
    protected static readonly int[] Sixteen = Enumerable.Range(0, 16).ToArray();

    /// <summary>Loads the demo CNN on this class's backend.</summary>
    protected abstract IModel Load();
    /// <summary>relu3's name on this backend.</summary>
    protected abstract string Relu3 { get; }

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        _model = Load();
        torch.manual_seed(0);
        _x = randn(10000, 1, 28, 28);
        Ctx = new BenchContext(_model, Bench.TopOne(10), _x, 250);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _model.Dispose(); }

    [Benchmark(Baseline = true, Description = "40 forwards of 250, relu3 captured")]
    public float Forwards()
    {
        float s = 0;
        foreach (var (_, a) in Explain.LayerBatches(Ctx, Relu3))
        {
            using var scope = NewDisposeScope();
            s += a.narrow(1, 0, 16).amax().item<float>();
        }
        return s;
    }

    [Benchmark(Description = "max-patches top-k pass (relu3, 16 channels)")]
    public int TopKPass() => MaxPatches.StreamTopK(Ctx, Relu3, Sixteen, 16).Top.Length;
}

/// <summary>max-patches on the TorchSharp demo CNN; the top-k pass alone is the row compared with Python.</summary>
public class MaxPatchesBenchmarks : FashionPassBenchmarks
{
    /// <inheritdoc/>
    protected override IModel Load() => Bench.Fashion();
    /// <inheritdoc/>
    protected override string Relu3 => "relu3";

    [Benchmark(Description = "max-patches step (relu3, 16 channels, top 16: pass, receptive field, crops)")]
    public void Step() => new MaxPatches().Run(new MaxPatchesOptions { Layer = Relu3, Channels = Sixteen, Top = 16 }, Ctx);
}

/// <summary>The max-patches top-k pass with the demo CNN run by ONNX Runtime (relu3 as an extra graph output; the
/// whole step needs gradients for receptive fields and stays on a gradient backend).</summary>
public class OrtMaxPatchesBenchmarks : FashionPassBenchmarks
{
    /// <inheritdoc/>
    protected override IModel Load() => Bench.FashionOnnxRuntime();
    /// <inheritdoc/>
    protected override string Relu3 => "/relu3/Relu";
}
