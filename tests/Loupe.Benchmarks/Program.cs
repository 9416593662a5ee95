// Run (Release, idle machine):  dotnet run -c Release --project tests/Loupe.Benchmarks -- --filter '*'
// Results are copied by hand into docs/benchmarks.md with the command and the machine.
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

// In-process: BenchmarkDotNet's default toolchain builds a separate project whose output would miss Loupe's
// TorchSharp compatibility step (and a second copy of libtorch); in-process runs use this build's output.
var config = DefaultConfig.Instance
    .AddJob(Job.Default.WithToolchain(InProcessEmitToolchain.Instance).WithWarmupCount(2).WithIterationCount(15).WithLaunchCount(1))
    .WithOptions(ConfigOptions.DisableOptimizationsValidator);
BenchmarkSwitcher.FromAssembly(typeof(Loupe.Benchmarks.Resnet18Benchmarks).Assembly).Run(args, config);
