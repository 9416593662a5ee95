using Loupe.Abstractions;
using Loupe.Models.TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>Steps that need layer activations over the same dataset share one forward pass (the run's shared layer
/// passes), whatever their layers.</summary>
public class RunCacheTests
{
    static int _forwardBatches;

    public sealed class CountingAdapter : ModelAdapter<TorchVisionOptions>
    {
        public override IModel Load(TorchVisionOptions options, ModelLoadContext context) => new Counting(new TorchVisionAdapter().Load(options, context));
        sealed class Counting(IModel inner) : IModel
        {
            public ModelCapabilities Capabilities => inner.Capabilities;
            public InputSpec DefaultInput => inner.DefaultInput;
            public IReadOnlyList<string>? DefaultLabels => inner.DefaultLabels;
            public IReadOnlyList<LayerInfo> Layers => inner.Layers;
            public Tensor Forward(Tensor input) { if (input.shape[0] > 1) Interlocked.Increment(ref _forwardBatches); return inner.Forward(input); }
            public ILayerCapture Capture(IReadOnlyCollection<string> layers, bool forGradients) => inner.Capture(layers, forGradients);
            public Tensor? GetParameter(string name) => inner.GetParameter(name);
            public IReadOnlyList<string> ParameterNames => inner.ParameterNames;
            public void Dispose() => inner.Dispose();
        }
    }

    sealed class Registrar : IPluginRegistrar
    {
        public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) =>
            services.AddLoupeModel<CountingAdapter>("counting-test", "counts forward passes");
    }

    /// <summary>The demo CNN (forwards counted) over the first <paramref name="limit"/> shipped Fashion-MNIST images;
    /// <c>top_k: 0</c> leaves out the run's predictions pass, so only the steps' forwards are counted.</summary>
    static string Pipeline(string dir, int limit, string steps) => TestEnv.Pipeline($"""
        version: 1
        model:
          uses: counting-test
          with: {"{"} architecture: fashion-cnn, weights: {TestEnv.Yaml(Path.Combine(TestEnv.Samples, "models", "fashion-cnn", "fashion-cnn.safetensors"))} {"}"}
        data:
          uses: idx
          with: {"{"} images: {TestEnv.Yaml(Path.Combine(TestEnv.Samples, "data", "fashion-mnist", "t10k-first500-images-idx3-ubyte.gz"))}, limit: {limit} {"}"}
        settings: {"{"} batch_size: 40, top_k: 0 {"}"}
        steps:
        {steps}
        """, dir);

    /// <summary>Runs a pipeline; returns the number of batched forwards and the result.</summary>
    static (int Batches, Loupe.Core.RunResult Run) Run(string path, string outDir)
    {
        _forwardBatches = 0;
        var r = Loupe.Core.PipelineRunner.Run(new Loupe.Core.RunRequest(path)
        {
            PluginDirectories = [TestEnv.PluginDirectory], Registrars = [new Registrar()], OutDir = outDir,
        });
        return (_forwardBatches, r);
    }

    static (int Batches, Loupe.Core.RunResult Run) RunOk(string path, string outDir)
    {
        var result = Run(path, outDir);
        Assert.True(result.Run.ExitCode == 0, string.Join("\n", result.Run.Errors) + result.Run.Manifest?.ToJsonString());
        return result;
    }

    [Fact]
    public void EmbeddingPcaAndTsneOnOneLayerRunTheModelOnce()
    {
        var dir = TestEnv.TempDir();
        var (batches, r) = RunOk(Pipeline(dir, 120, """
              - { id: emb, uses: embeddings, with: { layer: gap } }
              - { id: pca, uses: pca, with: { layer: gap } }
              - { id: tsne, uses: tsne, with: { layer: gap, perplexity: 10 } }
            """), Path.Combine(dir, "out"));
        Assert.Equal(3, batches); // 120 inputs / 40 per batch, once for all three steps
        Assert.Equal(120 * 128, TestEnv.Artifact(r, "emb/features.npy").Data.Length);
    }

    [Fact]
    public void MaxPatchesActivationStatisticsAndEmbeddingsOnDifferentLayersShareOneForwardPass()
    {
        var dir = TestEnv.TempDir();
        string[] steps =
        [
            "  - { id: patches, uses: max-patches, with: { layer: relu2, channels: [0, 3], top: 4, probes: 1 } }",
            "  - { id: stats, uses: activations, with: { layer: relu3, channels: [1], threshold: { mode: quantile, quantile: 0.99 } } }",
            "  - { id: emb, uses: embeddings, with: { layer: gap } }",
            "  - { id: tsne, uses: tsne, with: { layer: gap, perplexity: 10 } }",
        ];
        var shared = RunOk(Pipeline(dir, 120, string.Join("\n", steps)), Path.Combine(dir, "shared"));
        // 3 batches for the one shared pass over relu2, relu3 and gap; 3 more for the activation maps themselves (a
        // per-input output pass that needs the thresholds first). Separately the dataset steps would need 3 passes.
        Assert.Equal(6, shared.Batches);

        // The shared pass gives the same results as each step alone.
        foreach (var (line, artifact) in new[] { (0, "patches/top-values.npy"), (1, "stats/thresholds.npy"), (2, "emb/features.npy") })
        {
            var alone = RunOk(Pipeline(dir, 120, steps[line]), Path.Combine(dir, "alone-" + line));
            Assert.Equal(TestEnv.Artifact(alone.Run, artifact).Data, TestEnv.Artifact(shared.Run, artifact).Data);
        }
    }

    [Fact]
    public void PerplexityTooLargeForTheDatasetIsAValidationErrorBeforeAnyForwardPass()
    {
        var dir = TestEnv.TempDir();
        var path = Pipeline(dir, 20, "  - { id: tsne, uses: tsne, with: { layer: gap, perplexity: 30 } }");
        var (batches, r) = Run(path, Path.Combine(dir, "out"));
        Assert.Equal(2, r.ExitCode);
        var e = Assert.Single(r.Errors);
        Assert.Contains("step 'tsne' (tsne): option 'perplexity': perplexity 30 must be smaller than the number of inputs (20)", e.ToString());
        Assert.Contains(Path.GetFileName(path), e.ToString());
        Assert.Equal(0, batches);
        Assert.False(Directory.Exists(Path.Combine(dir, "out", "tsne")));
    }
}

/// <summary>An image that cannot be decoded in the middle of a dataset, under both policies of <c>on_error</c>, for the
/// dataset steps (their shared pass reads the data).</summary>
public class UnreadableImageMidDatasetTests
{
    static string Folder(string dir)
    {
        var images = Path.Combine(dir, "images");
        Directory.CreateDirectory(images);
        var pngs = Directory.GetFiles(Path.Combine(TestEnv.Samples, "images", "fashion")).Order().Take(6).ToArray();
        foreach (var png in pngs) File.Copy(png, Path.Combine(images, Path.GetFileName(png)));
        // Header intact, pixel data cut. Open refuses (or skips) a truncated file, so the fail-policy test cuts it only
        // once the first step has started (CutWhenStepsStart): decoding then fails while the dataset streams.
        var bytes = File.ReadAllBytes(pngs[2]);
        File.WriteAllBytes(Path.Combine(images, "00002-truncated.png"), bytes[..(bytes.Length / 2)]);
        return images;
    }

    static string Pipeline(string dir, string onError) => TestEnv.Pipeline($"""
        version: 1
        {TestEnv.DemoModel}
        data:
          uses: image-folder
          with: {"{"} path: {TestEnv.Yaml(Folder(dir))}, on_error: {onError} {"}"}
        settings: {"{"} batch_size: 3 {"}"}
        steps:
          - {"{"} id: emb, uses: embeddings, with: {"{"} layer: gap {"}"} {"}"}
          - {"{"} id: patches, uses: max-patches, with: {"{"} layer: relu2, channels: [0], top: 2, probes: 1 {"}"} {"}"}
          - {"{"} id: sal, uses: saliency {"}"}
        """, dir);

    [Fact]
    public void FailPolicyFailsTheDatasetStepsNamingTheFileAndKeepsNothingHalfWritten()
    {
        var dir = TestEnv.TempDir();
        var pipeline = Pipeline(dir, "fail");
        var file = Path.Combine(dir, "images", "00002-truncated.png");
        var whole = File.ReadAllBytes(Path.Combine(TestEnv.Samples, "images", "fashion", "00002-trouser.png"));
        File.WriteAllBytes(file, whole);
        var r = Loupe.Core.PipelineRunner.Run(new Loupe.Core.RunRequest(pipeline)
        {
            PluginDirectories = [TestEnv.PluginDirectory], OutDir = Path.Combine(dir, "out"), Observer = new CutWhenStepsStart(file, whole.Length / 2),
        });
        Assert.Equal(1, r.ExitCode);
        foreach (var step in new[] { "emb", "patches", "sal" })
        {
            var rec = r.Manifest!["steps"]!.AsArray().First(s => s!["id"]!.GetValue<string>() == step)!;
            Assert.Equal("failed", rec["status"]!.GetValue<string>());
            Assert.Contains("00002-truncated.png: truncated PNG", rec["error"]!.GetValue<string>());
        }
        Assert.False(File.Exists(Path.Combine(r.OutDir!, "emb", "features.npy")));
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "manifest.json")));
    }

    sealed class CutWhenStepsStart(string file, int length) : Loupe.Core.IRunObserver
    {
        public void StepStarted(string stepId, string uses, int index, int count)
        {
            if (index == 0) File.WriteAllBytes(file, File.ReadAllBytes(file)[..length]);
        }
    }

    [Fact]
    public void SkipPolicyLeavesTheImageOutWithAWarningInTheManifest()
    {
        var dir = TestEnv.TempDir();
        var r = Loupe.Core.PipelineRunner.Run(new Loupe.Core.RunRequest(Pipeline(dir, "skip")) { PluginDirectories = [TestEnv.PluginDirectory], OutDir = Path.Combine(dir, "out") });
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.Contains(r.Manifest!["warnings"]!.AsArray(), w => w!.GetValue<string>().Contains("skipped") && w.GetValue<string>().Contains("00002-truncated.png"));
        Assert.Equal([6L, 128], TestEnv.Artifact(r, "emb/features.npy").Shape);
        var ids = System.Text.Json.JsonSerializer.Deserialize<string[]>(File.ReadAllText(Path.Combine(r.OutDir!, "emb", "ids.json")))!;
        Assert.DoesNotContain("00002-truncated.png", ids);
        Assert.Equal(6, ids.Length);
    }
}
