using Loupe.Testing;
using Loupe.Core;
using TorchSharp;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Loupe.Report.Tests;

/// <summary>Pipelines over the demo CNN and the shipped Fashion-MNIST images, run through the real host.</summary>
public static class Env
{
    static Env() => torch.set_num_threads(1);

    /// <summary>Writes a pipeline over the first <paramref name="limit"/> shipped test images.</summary>
    public static string Pipeline(string name, string steps, int limit, string report = "html") =>
        Loupe.Testing.FashionPipelines.Write("loupe-report", name, steps, limit, 50, $"output: {{ report: {report} }}");

    /// <summary>Runs a pipeline in-process with the built-in plugins into <c>&lt;pipeline folder&gt;/&lt;outName&gt;</c>.</summary>
    public static RunResult Run(string pipeline, string outName = "out", params string[] overrides) =>
        HostRuns.Run(pipeline, Path.Combine(Path.GetDirectoryName(pipeline)!, outName), overrides);

    /// <summary>Runs the CLI as a separate process.</summary>
    public static (int ExitCode, string Stdout, string Stderr) Cli(string workingDirectory, params string[] args) =>
        HostRuns.Cli(workingDirectory, 120, args);
}
