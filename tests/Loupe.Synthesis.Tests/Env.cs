using Loupe.Testing;
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

    public static string BuiltInPlugins => Loupe.Testing.RepoPaths.BuiltInPlugins;
    public static string Demo(string file) => Y(Path.Combine(RepoRoot, "samples", "models", "fashion-cnn", file));
    public static string Samples(string rel) => Y(Path.Combine(RepoRoot, "samples", rel));
    public static string Y(string p) => Loupe.Testing.RepoPaths.Yaml(p);

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
    public static RunResult Run(string pipeline) =>
        HostRuns.Run(pipeline, Path.Combine(Path.GetDirectoryName(pipeline)!, "out-" + Guid.NewGuid().ToString("N")[..8]));

    public static NdArray Artifact(RunResult r, string rel) => HostRuns.Artifact(r, rel);

    public static double RelL2(float[] a, float[] b) => Numbers.RelL2(a, b);
}
