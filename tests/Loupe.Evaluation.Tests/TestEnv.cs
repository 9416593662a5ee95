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

    /// <summary>A file of tests/fixtures/quality, as written in a pipeline.</summary>
    public static string QualityFixture(string name) => Yaml(Path.Combine(RepoRoot, "tests", "fixtures", "quality", name));

    /// <summary>Per-input values of a metric step (its &lt;key&gt;.json: each input's <c>value</c>, or its
    /// <paramref name="key"/> field).</summary>
    public static double[] InputValues(RunResult r, string step, string key) =>
        System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, key + ".json")))!["inputs"]!.AsArray()
            .Select(i => (i!["value"] ?? i[key]) is System.Text.Json.Nodes.JsonValue v && v.TryGetValue<string>(out var text)
                ? double.Parse(text, System.Globalization.CultureInfo.InvariantCulture)   // NaN and ±Infinity are written as strings
                : (i["value"] ?? i[key])!.GetValue<double>()).ToArray();

    /// <summary>A run of the region CNN on the fixture inputs with the fixture maps as step <c>m</c>, then
    /// <paramref name="steps"/> (batches of <paramref name="batchSize"/> when given).</summary>
    public static RunResult FixtureRun(string steps, int? batchSize = null) => Run($$"""
        version: 1
        model: { uses: region-test }
        data: { uses: npy, with: { path: {{QualityFixture("inputs.npy")}} } }
        {{(batchSize is { } b ? $"settings: {{ batch_size: {b} }}" : "")}}
        steps:
          - { id: m, uses: fixture-map, with: { path: {{QualityFixture("maps.npy")}} } }
        {{steps}}
        """);

    public static string Dump(RunResult r) => string.Join("\n", r.Errors) + "\n" + r.Manifest?.ToJsonString();
}
