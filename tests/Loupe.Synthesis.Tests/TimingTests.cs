using System.Diagnostics;
using Loupe.Abstractions;
using Loupe.Analysis.Synthesis;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Synthesis.Tests;

/// <summary>One optimisation step vs one forward+backward of the model at the same size and batch. Runs only with
/// LOUPE_TIMING=1 (single timing runs; never beside other work): <c>LOUPE_TIMING=1 dotnet test --filter Timing</c>.</summary>
public class TimingTests(ITestOutputHelper log)
{
    [Fact]
    public void StepCostVersusForwardBackward()
    {
        if (Environment.GetEnvironmentVariable("LOUPE_TIMING") != "1") return;
        using var scope = NewDisposeScope();
        var model = new Loupe.Models.TorchSharp.TorchVisionAdapter().Load(
            new Loupe.Models.TorchSharp.TorchVisionOptions { Architecture = "fashion-cnn", Weights = Env.Demo("fashion-cnn.safetensors") },
            new ModelLoadContext(Env.RepoRoot, 0));
        const int n = 10, reps = 100;
        var spec = model.DefaultInput;
        var x0 = rand(n, 1, 28, 28);
        void FwdBwd()
        {
            using var s = NewDisposeScope();
            var x = x0.clone().requires_grad_(true);
            model.Forward(spec.Normalize(x)).sum().backward();
        }
        for (int i = 0; i < 5; i++) FwdBwd();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < reps; i++) FwdBwd();
        double fb = sw.Elapsed.TotalMilliseconds / reps;
        var objectives = Enumerable.Range(0, n).Select(k => (Objective)new ClassLogit(k.ToString(), k)).ToList();
        foreach (var (name, o) in new[]
        {
            ("pixels, no transforms", new ActivationMaxOptions { Parameterization = ParameterizationKind.Pixels, Steps = reps }),
            ("fft+jitter+scale+rotation+l2+tv", new ActivationMaxOptions { Steps = reps, Jitter = 1, Scales = [0.95, 1, 1.05], Rotations = [-5, 0, 5], L2 = 1e-3, Tv = 1e-3 }),
        })
        {
            Synthesizer.Optimize(model, spec, objectives, o with { Steps = 5 }, 0);
            sw.Restart();
            Synthesizer.Optimize(model, spec, objectives, o, 0);
            double step = sw.Elapsed.TotalMilliseconds / reps;
            log.WriteLine($"fashion-cnn, batch {n}, 28×28, {get_num_threads()} thread(s): forward+backward {fb:F2} ms; step ({name}) {step:F2} ms; ratio {step / fb:F2}");
        }
    }
}
