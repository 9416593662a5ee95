// Run (Release, idle machine):  dotnet run -c Release --project tests/Loupe.Benchmarks -- --filter '*'
// Results are copied by hand into docs/benchmarks.md with the command and the machine.
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

// In-process: BenchmarkDotNet's default toolchain builds a separate project whose output would miss Loupe's
// TorchSharp compatibility step (and a second copy of libtorch); in-process runs use this build's output.
// --short: no warm-up beyond the jitting call and 1 measured iteration, for benchmarks whose single call takes minutes (Resnet18PerturbationCam).
// --serve: single calls on request, for tools/bench/python_bench.py --paired (see Serve.cs).
// --spin-check: CPU time this process spends during 50 ms of sleep after a parallel tensor call: libgomp's idle workers
// spin (300,000 rounds by default; GOMP_SPINCOUNT=N in the environment sets N). See docs/benchmarks.md, issue 22.
// --team-check: 40 iterations of 50 µs of managed work right after a parallel tensor call (a saliency pass of the demo
// CNN), by a plain loop, by Parallel.For and by TensorThreads.For (on libtorch's OpenMP team): medians of 61 rounds.
Loupe.Core.NativeHeap.LimitArenas(); // first, as the CLI does (one arena, freed blocks kept)
if (args.Contains("--team-check"))
{
    var bench = new Loupe.Benchmarks.QualityMetricBenchmarks();
    bench.Setup();
    static void Work(int _) { var t = System.Diagnostics.Stopwatch.StartNew(); while (t.Elapsed.TotalMilliseconds < 0.05) { } }
    var loops = new (string Name, Action Run)[]
    {
        ("plain loop", () => { for (int i = 0; i < 40; i++) Work(i); }),
        ("Parallel.For", () => Parallel.For(0, 40, Work)),
        ("TensorThreads.For", () => Loupe.Abstractions.Toolkit.TensorThreads.For(40, Work)),
    };
    var times = loops.Select(_ => new List<double>()).ToArray();
    for (int r = 0; r < 61; r++)
        for (int j = 0; j < loops.Length; j++)
        {
            Thread.Sleep(20);
            bench.SaliencyPass();
            var sw = System.Diagnostics.Stopwatch.StartNew();
            loops[j].Run();
            times[j].Add(sw.Elapsed.TotalMilliseconds);
        }
    for (int j = 0; j < loops.Length; j++)
        Console.WriteLine($"{loops[j].Name}: median {times[j].Order().ElementAt(30):F2} ms, slowest {times[j].Max():F2} ms (2 ms of work)");
    Console.WriteLine($"on libtorch's team: {Loupe.Abstractions.Toolkit.TensorThreads.OnTensorTeam}");
    return 0;
}
if (args.Contains("--spin-check"))
{
    TorchSharp.torch.set_num_threads(2);
    using var m = TorchSharp.torch.randn(400, 400);
    for (int i = 0; i < 7; i++)
    {
        m.MatMul(m).Dispose();
        using var p = System.Diagnostics.Process.GetCurrentProcess();
        var t0 = p.TotalProcessorTime;
        Thread.Sleep(50);
        p.Refresh();
        Console.WriteLine($"CPU during 50 ms of sleep after a parallel matmul: {(p.TotalProcessorTime - t0).TotalMilliseconds:F1} ms");
    }
    return 0;
}
if (args.Contains("--serve")) return Loupe.Benchmarks.Serve.Run(Console.In, Console.Out);
// --profile-onnx NAME [BATCH] [CALLS] [cpu]: operator shares of the onnx backend on bench-models/NAME.onnx (OnnxFamilyBenchmarks.Profile).
if (args.Length > 1 && args[0] == "--profile-onnx") return Loupe.Benchmarks.OnnxFamilyBenchmarks.Profile(args[1..]);
// --forward-onnx NAME [BATCH] [CALLS]: forward passes without gradients of an exported model (see OnnxFamilyBenchmarks.Forward).
if (args.Length > 1 && args[0] == "--forward-onnx") return Loupe.Benchmarks.OnnxFamilyBenchmarks.Forward(args[1..]);
// --gemm-parity [ROUNDS]: vit_b_16's GEMM shapes by linear (BLAS) and by 1×1 convolution (oneDNN), alternated (GemmParity).
if (args.Length > 0 && args[0] == "--gemm-parity") return Loupe.Benchmarks.GemmParity.Run(args[1..]);
// --cpu-onnx NAME [BATCH] [ROUNDS]: the onnx rows at 1 thread by thread CPU time (OnnxFamilyBenchmarks.CpuTime).
if (args.Length > 1 && args[0] == "--cpu-onnx") return Loupe.Benchmarks.OnnxFamilyBenchmarks.CpuTime(args[1..]);
// --profile-road [CALLS] [THREADS]: ROAD's imputation share against its floor (RoadProfile).
if (args.Length > 0 && args[0] == "--profile-road") return Loupe.Benchmarks.RoadProfile.Run(args[1..]);
// --conv-layers [CALLS]: single 3×3 convolutions by libtorch and by the direct kernel (ConvLayers).
if (args.Length > 0 && args[0] == "--conv-layers") return Loupe.Benchmarks.ConvLayers.Run(args[1..]);
// --batch-sweep [fashion | resnet18] [TOTAL] [ROUNDS]: forward time per copy by pass size (BatchSweep).
if (args.Length > 0 && args[0] == "--batch-sweep") return Loupe.Benchmarks.BatchSweep.Run(args[1..]);
// --road-large [SIDE] [CALLS]: ROAD's imputation at ImageNet size against resnet18's forward of the 40 copies (RoadLarge).
if (args.Length > 0 && args[0] == "--road-large") return Loupe.Benchmarks.RoadLarge.Run(args[1..]);
// --metric-survey [SIDE] [N] [ROUNDS] [blocks] [Name=VALUE ...] [TypeName ...]: every metric that runs the model, on resnet18, against the passes it made (MetricSurvey).
if (args.Length > 0 && args[0] == "--metric-survey") return Loupe.Benchmarks.MetricSurvey.Run(args[1..]);
bool isShort = args.Contains("--short");
args = args.Where(a => a != "--short").ToArray();
// --iterations N: measured iterations per benchmark (default 15); tools/bench/interleaved.sh uses fewer per round.
int iterations = 15;
if (Array.IndexOf(args, "--iterations") is var at and >= 0 && at + 1 < args.Length)
{
    iterations = int.Parse(args[at + 1], System.Globalization.CultureInfo.InvariantCulture);
    args = args.Where((_, i) => i != at && i != at + 1).ToArray();
}
// In-process runs stop a benchmark after 5 minutes by default; --short ones may take longer.
var toolchain = isShort ? new InProcessEmitToolchain(TimeSpan.FromMinutes(40), logOutput: true) : InProcessEmitToolchain.Instance;
var job = Job.Default.WithToolchain(toolchain).WithWarmupCount(isShort ? 0 : 2).WithIterationCount(isShort ? 1 : iterations).WithLaunchCount(1);
if (isShort) job = job.WithInvocationCount(1).WithUnrollFactor(1);   // one call per iteration: no pilot stage
var config = DefaultConfig.Instance
    .AddJob(job)
    .WithOptions(ConfigOptions.DisableOptimizationsValidator);
BenchmarkSwitcher.FromAssembly(typeof(Loupe.Benchmarks.Resnet18Benchmarks).Assembly).Run(args, config);
return 0;
