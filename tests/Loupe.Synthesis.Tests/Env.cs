using System.Reflection;
using Loupe.Abstractions;
using Loupe.Core;
using TorchSharp;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Loupe.Synthesis.Tests;

/// <summary>Paths and helpers.</summary>
public static class Env
{
    static Env() => torch.set_num_threads(1);

    public static string RepoRoot => Loupe.Testing.RepoPaths.Root;

    public static string Configuration => Loupe.Testing.RepoPaths.Configuration;

    public static string BuiltInPlugins => Path.Combine(RepoRoot, "hosts", "Loupe.Cli", "bin", Configuration, "net10.0", "plugins");
    public static string Demo(string file) => Y(Path.Combine(RepoRoot, "samples", "models", "fashion-cnn", file));
    public static string Samples(string rel) => Y(Path.Combine(RepoRoot, "samples", rel));
    public static string Y(string p) => p.Replace("\\", "/");

    public static string TempDir() => Loupe.Testing.RepoPaths.TempDir("loupe-synth");

    /// <summary>A pipeline on the shipped demo CNN (no data unless given).</summary>
    public static string DemoPipeline(string steps, int seed = 0, string data = "") => Write($"""
        version: 1
        name: synth
        seed: {seed}
        model:
          uses: torchvision
          with: {"{"} architecture: fashion-cnn, weights: {Demo("fashion-cnn.safetensors")} {"}"}
          labels: {Demo("labels.txt")}
        {data}
        steps:
        {steps}
        """);

    public static string Write(string yaml)
    {
        var path = Path.Combine(TempDir(), "pipeline.yaml");
        File.WriteAllText(path, yaml);
        return path;
    }

    /// <summary>Runs through the real host with the built-in plugins and the staged plugin's folder.</summary>
    public static RunResult Run(string pipeline) => PipelineRunner.Run(new RunRequest(pipeline)
    {
        PluginDirectories = [BuiltInPlugins],
        OutDir = Path.Combine(Path.GetDirectoryName(pipeline)!, "out-" + Guid.NewGuid().ToString("N")[..8]),
    });

    public static NdArray Artifact(RunResult r, string rel) => Npy.Read(Path.Combine(r.OutDir!, rel));

    public static double RelL2(float[] a, float[] b)
    {
        Assert.Equal(b.Length, a.Length);
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++) { num += (a[i] - b[i]) * (double)(a[i] - b[i]); den += b[i] * (double)b[i]; }
        return Math.Sqrt(num / Math.Max(den, 1e-30));
    }
}
