using Loupe.Core;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Loupe.Tests;

/// <summary>Budgets a pipeline can set (settings.max_image_pixels, settings.max_items, the onnx backend's max_file_mb)
/// refuse oversized input before it is decoded or read; weights are bounded by their file size (corpus: pt/, safetensors/).</summary>
public sealed class ResourceLimitTests
{
    static readonly string Weights = TestEnv.Yaml(TestEnv.Fixture("fashion_cnn_seed0.pt"));

    static PipelineException Refused(string data, string settings = "", string? model = null)
    {
        var path = TestEnv.Pipeline($"""
            version: 1
            model:
              {model ?? $"uses: torchvision\n  with: {{ architecture: fashion-cnn, weights: {Weights} }}"}
            data:
              {data}
            {settings}
            steps:
              - uses: saliency
            """);
        return Assert.Throws<PipelineException>(() => PipelineRunner.Prepare(new RunRequest(path) { PluginDirectories = [TestEnv.PluginDirectory] }).Dispose());
    }

    [Theory]
    [InlineData("png")]
    [InlineData("jpg")]
    [InlineData("gif")]
    [InlineData("bmp")]
    [InlineData("tga")]
    [InlineData("tif")]
    [InlineData("webp")]
    public void Images_over_the_pixel_budget_are_refused_for_every_format(string ext)
    {
        var dir = TestEnv.TempDir();
        var file = Path.Combine(dir, "big." + ext);
        using (var img = new Image<Rgb24>(120, 100)) img.Save(file);
        var e = Refused($"uses: image-folder\n  with: {{ path: {TestEnv.Yaml(dir)} }}", "settings: { max_image_pixels: 10000 }");
        Assert.Contains(file, e.Message);
        Assert.Contains("image is 120×100 = 12000 pixels, over the limit of 10000", e.Message);
    }

    [Fact]
    public void The_pixel_budget_is_checked_from_the_header_before_decoding()
    {
        // A PNG whose header declares 20000×20000 but holds a few bytes of pixel data: decoding would fail with a
        // different error (or allocate 1.2 GB); the budget refuses it from the header alone.
        var dir = TestEnv.TempDir();
        File.Copy(Path.Combine(TestEnv.RepoRoot, "tests", "corpus", "images", "bomb-100000x100000.png"), Path.Combine(dir, "bomb.png"));
        var e = Refused($"uses: image-folder\n  with: {{ path: {TestEnv.Yaml(dir)} }}");
        Assert.Contains("image is 100000×100000 = 10000000000 pixels, over the limit of 67108864", e.Message);
    }

    [Fact]
    public void Datasets_over_the_item_budget_are_refused_before_any_model_runs()
    {
        var npy = TestEnv.Yaml(TestEnv.Fixture("fashion_input.npy"));   // 4 items
        var e = Refused($"uses: npy\n  with: {{ path: {npy} }}", "settings: { max_items: 3 }");
        Assert.Contains("4 items, over settings.max_items = 3", e.Message);
        Assert.Contains("fashion_input.npy", e.Message);

        // A source's own limit applies first: 500 IDX images limited to 32 fit a budget of 100.
        var idx = TestEnv.Yaml(Path.Combine(TestEnv.Samples, "data", "fashion-mnist", "t10k-first500-images-idx3-ubyte.gz"));
        var ok = TestEnv.Pipeline($"version: 1\nmodel:\n  uses: torchvision\n  with: {{ architecture: fashion-cnn, weights: {Weights} }}\n" +
                                  $"data:\n  uses: idx\n  with: {{ images: {idx}, limit: 32 }}\nsettings: {{ max_items: 100 }}\nsteps:\n  - uses: saliency\n");
        using var run = PipelineRunner.Prepare(new RunRequest(ok) { PluginDirectories = [TestEnv.PluginDirectory] });
        Assert.Equal(32, run.Data!.Count);

        var bad = Assert.Throws<PipelineException>(() => PipelineParser.ParseText("version: 1\nsettings: { max_items: 0, max_image_pixels: lots }\nmodel: { uses: x }\nsteps: [ { uses: y } ]\n", "p.yaml"));
        Assert.Contains("'settings.max_items' must be > 0, got 0", bad.Message);
        Assert.Contains("'settings.max_image_pixels' must be an integer, got 'lots'", bad.Message);
    }

    [Fact]
    public void Onnx_files_over_the_size_limit_are_refused_before_reading()
    {
        // 1.5 MB of bytes that are not a model: reading them would report a protobuf error, not the size limit.
        var dir = TestEnv.TempDir();
        var file = Path.Combine(dir, "big.onnx");
        File.WriteAllBytes(file, new byte[3 << 19]);
        var npy = TestEnv.Yaml(TestEnv.Fixture("fashion_input.npy"));
        var e = Refused($"uses: npy\n  with: {{ path: {npy} }}", model: $"uses: onnx\n  with: {{ path: {TestEnv.Yaml(file)}, max_file_mb: 1 }}");
        Assert.Contains($"ONNX file {file} is 2 MB, above the limit of 1 MB (option max_file_mb)", e.Message);
    }
}
