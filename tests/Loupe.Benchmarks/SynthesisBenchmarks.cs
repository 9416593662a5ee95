using BenchmarkDotNet.Attributes;
using Loupe.Abstractions;
using Loupe.Analysis.Synthesis;
using Loupe.Models.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Benchmarks;

/// <summary>Activation maximisation: 20 optimisation steps for the 10 classes of the demo CNN (batch 10, 28²) against
/// 20 forward+backward passes of the same batch.</summary>
[MemoryDiagnoser(false)]
[MedianColumn]
public class SynthesisBenchmarks
{
    const int Steps = 20;
    IModel _model = null!;
    Tensor _x = null!;
    List<Objective> _objectives = null!;

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        _model = Bench.Fashion();
        torch.manual_seed(0);
        _x = rand(10, 1, 28, 28);
        _objectives = Enumerable.Range(0, 10).Select(k => (Objective)new ClassLogit(k.ToString(), k)).ToList();
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _model.Dispose(); }

    [Benchmark(Baseline = true, Description = "20 forward+backward, batch 10")]
    public float ForwardBackward()
    {
        float s = 0;
        for (int i = 0; i < Steps; i++)
        {
            using var scope = NewDisposeScope();
            var x = _x.detach().requires_grad_(true);
            var y = _model.Forward(_model.DefaultInput.Normalize(x));
            s += CheckedOps.Grad([y.diagonal().sum()], [x])[0].sum().item<float>();
        }
        return s;
    }

    [Benchmark(Description = "20 steps, pixels, no transforms")]
    public void PixelSteps() => Synthesizer.Optimize(_model, _model.DefaultInput, _objectives,
        new ActivationMaxOptions { Parameterization = ParameterizationKind.Pixels, Steps = Steps }, 0);

    [Benchmark(Description = "20 steps, fft + jitter + scale + rotation + L2 + TV")]
    public void RobustSteps() => Synthesizer.Optimize(_model, _model.DefaultInput, _objectives,
        new ActivationMaxOptions { Steps = Steps, Jitter = 1, Scales = [0.95, 1, 1.05], Rotations = [-5, 0, 5], L2 = 1e-3, Tv = 1e-3 }, 0);
}
