using System.Text.Json;
using Loupe.Abstractions;
using Loupe.Core;
using TorchSharp;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Loupe.Concepts.Tests;

/// <summary>Paths and helpers shared by the tests.</summary>
public static class Env
{
    static Env()
    {
        // One intra-op thread per test process: libtorch slows down badly when threads compete for 2 cores.
        torch.set_num_threads(1);
    }

    public static string RepoRoot => Loupe.Testing.RepoPaths.Root;
    public static string BuiltInPlugins => Loupe.Testing.RepoPaths.BuiltInPlugins;
    /// <summary>The planted-concept model and data (tests/fixtures/make_planted_concepts.py).</summary>
    public static string Planted => Path.Combine(RepoRoot, "samples", "concepts");
    public static string Fixture(string name) => Path.Combine(RepoRoot, "tests", "fixtures", "concepts", name);
    public static JsonElement Facts => JsonDocument.Parse(File.ReadAllText(Fixture("concepts.json"))).RootElement;
    static string Yaml(string path) => Loupe.Testing.RepoPaths.Yaml(path);

    /// <summary>A pipeline over the planted CNN and its 60 data images (labels from the IDX file).</summary>
    public static string PlantedPipeline(string steps, int batchSize = 16)
    {
        var dir = Loupe.Testing.RepoPaths.TempDir("loupe-concepts");
        var path = Path.Combine(dir, "concepts-test.yaml");
        File.WriteAllText(path, $"""
            version: 1
            name: concepts-test
            model:
              uses: torchvision
              with: {"{"} architecture: fashion-cnn, num_classes: 3, weights: {Yaml(Path.Combine(Planted, "planted-cnn.safetensors"))} {"}"}
              labels: {Yaml(Path.Combine(Planted, "labels.txt"))}
            data:
              uses: idx
              with: {"{"} images: {Yaml(Path.Combine(Planted, "data", "images-idx3-ubyte.gz"))}, labels: {Yaml(Path.Combine(Planted, "data", "labels-idx1-ubyte.gz"))} {"}"}
            settings: {"{"} batch_size: {batchSize} {"}"}
            steps:
            {steps}
            """);
        return path;
    }

    /// <summary>Runs a pipeline in-process through the real host, with the built-in plugins.</summary>
    public static RunResult Run(string pipelinePath) => Loupe.Testing.HostRuns.Run(pipelinePath);

    public static NdArray Artifact(RunResult r, string relativePath) => Loupe.Testing.HostRuns.Artifact(r, relativePath);
    public static JsonElement Json(RunResult r, string relativePath) => JsonDocument.Parse(File.ReadAllText(Path.Combine(r.OutDir!, relativePath))).RootElement;

    public static void Succeeded(RunResult r, params string[] ids)
    {
        foreach (var id in ids)
            Assert.True(Loupe.Testing.HostRuns.StepStatus(r, id) == "succeeded", $"{id}: {Loupe.Testing.HostRuns.StepError(r, id)}");
    }

    /// <summary>Largest |a − b| relative to max |b|.</summary>
    public static double RelErr(float[] a, float[] b)
    {
        Assert.Equal(b.Length, a.Length);
        double scale = b.Max(v => Math.Abs((double)v)), err = 0;
        for (int i = 0; i < a.Length; i++) err = Math.Max(err, Math.Abs(a[i] - (double)b[i]));
        return err / Math.Max(scale, 1e-30);
    }
}
