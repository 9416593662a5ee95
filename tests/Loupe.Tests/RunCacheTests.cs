using Loupe.Abstractions;
using Loupe.Models.TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>Steps that need the same layer's dataset features share one pass over the data (the run cache).</summary>
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

    [Fact]
    public void EmbeddingPcaAndTsneOnOneLayerRunTheModelOnce()
    {
        var dir = TestEnv.TempDir();
        var path = TestEnv.Pipeline($"""
            version: 1
            model:
              uses: counting-test
              with: {"{"} architecture: fashion-cnn, weights: {TestEnv.Yaml(Path.Combine(TestEnv.Samples, "models", "fashion-cnn", "fashion-cnn.safetensors"))} {"}"}
            data:
              uses: idx
              with: {"{"} images: {TestEnv.Yaml(Path.Combine(TestEnv.Samples, "data", "fashion-mnist", "t10k-first500-images-idx3-ubyte.gz"))}, limit: 120 {"}"}
            settings: {"{"} batch_size: 40 {"}"}
            steps:
              - {"{"} id: emb, uses: embeddings, with: {"{"} layer: gap {"}"} {"}"}
              - {"{"} id: pca, uses: pca, with: {"{"} layer: gap {"}"} {"}"}
              - {"{"} id: tsne, uses: tsne, with: {"{"} layer: gap, perplexity: 10 {"}"} {"}"}
            """, dir);
        _forwardBatches = 0;
        var r = Loupe.Core.PipelineRunner.Run(new Loupe.Core.RunRequest(path)
        {
            PluginDirectories = [TestEnv.PluginDirectory], Registrars = [new Registrar()], OutDir = Path.Combine(dir, "out"),
        });
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.Equal(3, _forwardBatches); // 120 inputs / 40 per batch, once for all three steps
        Assert.Equal(TestEnv.Artifact(r, "emb/features.npy").Data.Length, 120 * 128);
    }
}
