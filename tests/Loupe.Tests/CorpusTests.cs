using System.Diagnostics;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Core;

namespace Loupe.Tests;

/// <summary>Runs every file of the bad-input corpus (tests/corpus, made by make_corpus.py) through the loader a user's
/// pipeline would use: the pipeline parser and validator for YAML, the model backends for weights and ONNX files
/// (onnx/ through the differentiable <c>onnx</c> backend, onnx-runtime/ through ONNX Runtime), the
/// data sources (opened and streamed to the end) for .npy, IDX and images. Each bad file must give Loupe's own error
/// naming the file and what is wrong, within 5 s and 1 GB; odd but valid files must load correctly; no pickle may
/// ever run code.</summary>
public sealed class CorpusTests(CorpusTests.Warm warm) : IClassFixture<CorpusTests.Warm>
{
    static readonly string Root = Path.Combine(TestEnv.RepoRoot, "tests", "corpus");
    static readonly JsonObject Manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(Root, "corpus.json")))!.AsObject();
    static JsonObject Expectations => Manifest["files"]!.AsObject();

    /// <summary>Loads plugins and JITs the loaders once, so the per-file time limit measures the file, not start-up.</summary>
    public sealed class Warm
    {
        public Warm() => Load("npy", Path.Combine(TestEnv.Fixtures, "fashion_input.npy"), out _);
    }

    public static TheoryData<string> Files() => new(Expectations.Select(kv => kv.Key));

    [Fact]
    public void Corpus_has_at_least_60_files_and_each_has_an_expectation()
    {
        var onDisk = Directory.EnumerateFiles(Root, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(Root, f).Replace('\\', '/'))
            .Where(f => f.Contains('/')).Order().ToList();
        Assert.True(onDisk.Count >= 60, $"{onDisk.Count} corpus files");
        Assert.Equal(onDisk, Expectations.Select(kv => kv.Key).Order().ToList());
        foreach (var reader in new[] { "yaml", "pt", "safetensors", "onnx", "onnx-runtime", "npy", "idx", "images" })
            Assert.Contains(onDisk, f => f.StartsWith(reader + "/"));
    }

    [Theory, MemberData(nameof(Files))]
    public void Corpus_file_gives_a_clear_error_or_loads(string file)
    {
        _ = warm;
        var marker = Manifest["pickle_marker"]!.GetValue<string>();
        File.Delete(marker);
        var path = Path.Combine(Root, file);
        var expected = Expectations[file]!;

        long allocated = GC.GetAllocatedBytesForCurrentThread();
        long peak = Process.GetCurrentProcess().PeakWorkingSet64;
        var sw = Stopwatch.StartNew();
        Exception? error = null;
        float? mean = null;
        try { mean = Load(file.Split('/')[0], path, out var m) ? m : null; }
        catch (Exception e) { error = e; }
        sw.Stop();
        allocated = GC.GetAllocatedBytesForCurrentThread() - allocated;
        using (var p = Process.GetCurrentProcess()) peak = p.PeakWorkingSet64 - peak;

        Assert.False(File.Exists(marker), $"{file}: a pickle ran code (it created {marker})");
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"{file}: took {sw.Elapsed.TotalSeconds:F1} s");
        Assert.True(allocated < 1L << 30, $"{file}: allocated {allocated >> 20} MB");
        Assert.True(peak < 1L << 30, $"{file}: peak working set grew by {peak >> 20} MB");

        if (expected is JsonValue v)
        {
            Assert.True(error is not null, $"{file}: loaded without an error; expected '{v}'");
            // Loupe's own error (PipelineException or, while streaming data, LoupeException), never a raw crash.
            Assert.True(error is LoupeException, $"{file}: {error!.GetType().Name}: {error.Message}");
            Assert.True(error.Message.Contains(v.GetValue<string>()), $"{file}: expected '{v}' in: {error.Message}");
            Assert.True(error.Message.Contains(Path.GetFileName(file)), $"{file}: the error does not name the file: {error.Message}");
        }
        else
        {
            Assert.True(error is null, $"{file}: expected to load, got {error?.GetType().Name}: {error?.Message}");
            if (expected["mean"] is { } m)
                Assert.True(Math.Abs(mean!.Value - m.GetValue<double>()) < 0.03, $"{file}: mean grey {mean:F4}, PIL gives {m}");
        }
    }

    /// <summary>Loads <paramref name="path"/> as a pipeline would (prepare, then stream the data to the end); returns
    /// true with the mean input pixel when the file was data.</summary>
    static bool Load(string reader, string path, out float mean)
    {
        mean = 0;
        string weights = Yaml(TestEnv.Fixture("fashion_cnn_seed0.pt")), npy = Yaml(TestEnv.Fixture("fashion_input.npy"));
        string model = $"uses: torchvision\n  with: {{ architecture: fashion-cnn, weights: {weights} }}";
        string data = $"uses: npy\n  with: {{ path: {npy} }}";
        string pipeline;
        switch (reader)
        {
            case "yaml": pipeline = path; break;
            case "pt" or "safetensors": model = $"uses: torchvision\n  with: {{ architecture: fashion-cnn, weights: {Yaml(path)} }}"; goto default;
            case "onnx": model = $"uses: onnx\n  with: {{ path: {Yaml(path)} }}"; goto default;
            case "onnx-runtime": model = $"uses: onnx-runtime\n  with: {{ path: {Yaml(path)} }}"; goto default;
            case "npy": data = $"uses: npy\n  with: {{ path: {Yaml(path)} }}"; goto default;
            case "idx": data = $"uses: idx\n  with: {{ images: {Yaml(path)}, limit: 64 }}"; goto default;
            case "images":
            {
                var dir = TestEnv.TempDir("loupe-corpus");
                File.Copy(path, Path.Combine(dir, Path.GetFileName(path)));
                data = $"uses: image-folder\n  with: {{ path: {Yaml(dir)} }}";
                goto default;
            }
            default:
                pipeline = TestEnv.Pipeline($"version: 1\nname: corpus\nmodel:\n  {model}\ndata:\n  {data}\nsteps:\n  - uses: saliency\n");
                break;
        }
        using var run = PipelineRunner.Prepare(new RunRequest(pipeline) { PluginDirectories = [TestEnv.PluginDirectory] });
        if (run.Data is null) return false;
        double sum = 0; long count = 0;
        foreach (var batch in run.Data.Read(run.Input, 16, default))
            using (batch)
            {
                sum += batch.Pixels.sum().item<float>();
                count += batch.Pixels.numel();
            }
        mean = (float)(sum / count);
        return true;
    }

    static string Yaml(string path) => TestEnv.Yaml(path);
}
