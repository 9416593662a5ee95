using Loupe.Testing;
using System.Diagnostics;
using System.Reflection;
using Loupe.Abstractions;
using Loupe.Core;
using TorchSharp;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Loupe.Embedding.Tests;

/// <summary>Paths and helpers shared by the tests.</summary>
public static class Env
{
    static Env()
    {
        // One intra-op thread per test process: libtorch slows down badly when threads compete for 2 cores.
        torch.set_num_threads(1);
    }

    public static string RepoRoot => Loupe.Testing.RepoPaths.Root;

    public static string Configuration => Loupe.Testing.RepoPaths.Configuration;

    public static string CliDirectory => Loupe.Testing.RepoPaths.CliDirectory;
    public static string CliDll => HostRuns.CliDll;
    public static string BuiltInPlugins => Loupe.Testing.RepoPaths.BuiltInPlugins;
    public static string Fixture(string name) => Path.Combine(RepoRoot, "tests", "fixtures", "behaviour", name);
    public static string Samples => Path.Combine(RepoRoot, "samples");
    public static string Yaml(string path) => Loupe.Testing.RepoPaths.Yaml(path);

    public static string TempDir() => Loupe.Testing.RepoPaths.TempDir("loupe-embedding");

    /// <summary>A pipeline over the demo CNN and the first <paramref name="limit"/> shipped Fashion-MNIST test images,
    /// (the embedding plugin is built in).</summary>
    public static string FashionPipeline(string steps, int limit, int batchSize = 32) =>
        Loupe.Testing.FashionPipelines.Write("loupe-embedding", "embedding-test", steps, limit, batchSize);

    /// <summary>Runs a pipeline in-process through the real host, with the built-in plugins.</summary>
    public static RunResult Run(string pipelinePath) => HostRuns.Run(pipelinePath);

    /// <summary>Runs the CLI as a separate process.</summary>
    public static (int ExitCode, string Stdout, string Stderr) Cli(string workingDirectory, params string[] args) =>
        HostRuns.Cli(workingDirectory, 300, args);

    public static NdArray Artifact(RunResult r, string relativePath) => HostRuns.Artifact(r, relativePath);

    public static string StepStatus(RunResult r, string id) => HostRuns.StepStatus(r, id);

    public static string? StepError(RunResult r, string id) => HostRuns.StepError(r, id);

    public static double Metric(RunResult r, string id, string name) => HostRuns.Metric(r, id, name);

    /// <summary>The demo CNN, loaded directly.</summary>
    public static IModel DemoModel() => new Loupe.Models.TorchSharp.TorchVisionAdapter().Load(
        new Loupe.Models.TorchSharp.TorchVisionOptions { Architecture = "fashion-cnn", Weights = Path.Combine(Samples, "models/fashion-cnn/fashion-cnn.safetensors") },
        new ModelLoadContext(RepoRoot, 0));
}
