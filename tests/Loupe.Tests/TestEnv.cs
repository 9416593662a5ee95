using Loupe.Testing;
using System.Diagnostics;
using System.Reflection;
using Loupe.Abstractions;
using Loupe.Core;
using TorchSharp;
using static TorchSharp.torch;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Loupe.Tests;

/// <summary>Paths and helpers shared by the tests.</summary>
public static class TestEnv
{
    static TestEnv()
    {
        // One intra-op thread per test process: libtorch slows down badly when threads compete for 2 cores.
        torch.set_num_threads(1);
    }

    public static string RepoRoot => Loupe.Testing.RepoPaths.Root;

    public static string Configuration => Loupe.Testing.RepoPaths.Configuration;

    public static string CliDirectory => Loupe.Testing.RepoPaths.CliDirectory;
    public static string CliDll => Loupe.Testing.HostRuns.CliDll;
    public static string PluginDirectory => Loupe.Testing.RepoPaths.BuiltInPlugins;
    public static string Fixtures => Path.Combine(RepoRoot, "tests", "fixtures");
    public static string Fixture(string name) => Path.Combine(Fixtures, name);
    public static string Samples => Path.Combine(RepoRoot, "samples");

    /// <summary>The pipeline's <c>model:</c> line for the trained demo CNN of samples/models/fashion-cnn.</summary>
    public static string DemoModel => $"model: {{ uses: torchvision, with: {{ architecture: fashion-cnn, weights: {Yaml(Path.Combine(Samples, "models", "fashion-cnn", "fashion-cnn.safetensors"))} }} }}";

    /// <summary>A fresh temporary folder.</summary>
    public static string TempDir(string prefix = "loupe-test") => Loupe.Testing.RepoPaths.TempDir(prefix);

    /// <summary>Writes a pipeline file into a temp folder and returns its path.</summary>
    public static string Pipeline(string yaml, string? dir = null)
    {
        dir ??= TempDir();
        var path = Path.Combine(dir, "pipeline.yaml");
        File.WriteAllText(path, yaml);
        return path;
    }

    /// <summary>A pipeline over the fixture demo CNN and the 4 fixture inputs (preprocessed .npy).</summary>
    public static string FixturePipeline(string steps, string? pluginDir = null, int batchSize = 16) => Pipeline($"""
        version: 1
        name: fixture
        {(pluginDir is null ? "" : $"plugins: [ {Yaml(pluginDir)} ]")}
        model:
          uses: torchvision
          with: {"{"} architecture: fashion-cnn, weights: {Yaml(Fixture("fashion_cnn_seed0.pt"))} {"}"}
        data:
          uses: npy
          with: {"{"} path: {Yaml(Fixture("fashion_input.npy"))} {"}"}
        settings: {"{"} batch_size: {batchSize} {"}"}
        steps:
        {steps}
        """);

    /// <summary>Runs a pipeline in-process with the built-in plugins.</summary>
    public static RunResult Run(string pipelinePath, string? outDir = null, params string[] overrides) =>
        HostRuns.Run(pipelinePath, outDir, overrides);

    /// <summary>Runs the CLI as a separate process.</summary>
    public static (int ExitCode, string Stdout, string Stderr) Cli(string workingDirectory, params string[] args) =>
        HostRuns.Cli(workingDirectory, 300, args);

    /// <summary>Reads an artifact of a run.</summary>
    public static NdArray Artifact(RunResult r, string relativePath) => HostRuns.Artifact(r, relativePath);

    /// <summary>Relative L2 error ‖a − b‖ / ‖b‖.</summary>
    public static double RelL2(float[] a, float[] b) => Numbers.RelL2(a, b);

    public static string Yaml(string path) => Loupe.Testing.RepoPaths.Yaml(path);
}
