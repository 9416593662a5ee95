using Loupe.Testing;
using System.Reflection;
using Loupe.Abstractions;
using Loupe.Core;
using TorchSharp;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Loupe.Evaluation.Tests;

/// <summary>Paths and helpers (as tests/Loupe.Tests/TestEnv.cs) plus this plugin's build folder.</summary>
public static class Env
{
    static Env() => torch.set_num_threads(1);

    public static string RepoRoot => Loupe.Testing.RepoPaths.Root;

    public static string Configuration => Loupe.Testing.RepoPaths.Configuration;

    public static string BuiltInPlugins => Loupe.Testing.RepoPaths.BuiltInPlugins;
    public static string Samples => Path.Combine(RepoRoot, "samples");
    public static string DemoWeights => Yaml(Path.Combine(Samples, "models", "fashion-cnn", "fashion-cnn.safetensors"));
    public static string DemoImages => Yaml(Path.Combine(Samples, "data", "fashion-mnist", "t10k-first500-images-idx3-ubyte.gz"));

    public static string TempDir() => Loupe.Testing.RepoPaths.TempDir("loupe-eval");

    public static string Yaml(string path) => RepoPaths.Yaml(path);

    /// <summary>Runs a pipeline in-process with the built-in plugins, this plugin and the in-test components.</summary>
    public static RunResult Run(string yaml)
    {
        var dir = TempDir();
        var path = Path.Combine(dir, "pipeline.yaml");
        File.WriteAllText(path, yaml);
        return HostRuns.Run(path, Path.Combine(dir, "out"), registrars: [new TestComponents()]);
    }

    /// <summary>A metric of a step of the run's manifest.</summary>
    public static double Metric(RunResult r, string step, string metric) => HostRuns.Metric(r, step, metric);

    public static string Dump(RunResult r) => string.Join("\n", r.Errors) + "\n" + r.Manifest?.ToJsonString();
}
