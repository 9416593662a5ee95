using Loupe.Abstractions;
using Loupe.Testing;

namespace Loupe.Library.Tests;

/// <summary><c>LoupeModel.Evaluate</c>: a metric from code, Quantus's <c>metric(model, x, y, a)</c> — on a method
/// (it runs, then the metric on its maps) or on maps you already have (<c>given-maps</c>). The numbers are the
/// pipeline's: the same steps in a YAML run give the same per-input values.</summary>
[Collection("library")]
public class EvaluateApiTests
{
    static string Fixture(string name) => Path.Combine(RepoPaths.Root, "tests", "fixtures", name);
    static readonly LoupeSettings Settings = new() { PluginDirectories = [RepoPaths.BuiltInPlugins], Threads = 1 };

    static LoupeModel Model() => LoupeModel.Load("torchvision",
        new { architecture = "fashion-cnn", weights = Fixture("fashion_cnn_seed0.safetensors") }, Settings);

    [Fact]
    public void A_metric_of_a_method_and_of_its_maps_equals_the_pipeline_s()
    {
        var input = Npy.Read(Fixture("fashion_input.npy"));
        using var model = Model();
        var ofMethod = model.Evaluate("pixel-flipping", input, "saliency", options: new { features_in_step = 56 }, target: new { @class = 3 });
        var pf = ofMethod.Metrics["pixel_flipping_mean"];

        var run = Pipelines.RunYaml($$"""
            version: 1
            model: { uses: torchvision, with: { architecture: fashion-cnn, weights: {{RepoPaths.Yaml(Fixture("fashion_cnn_seed0.safetensors"))}} } }
            data: { uses: npy, with: { path: {{RepoPaths.Yaml(Fixture("fashion_input.npy"))}} } }
            settings: { threads: 1 }
            steps:
              - { id: method, uses: saliency, target: { class: 3 } }
              - { id: metric, uses: pixel-flipping, with: { of: method, features_in_step: 56 } }
            """, RepoPaths.TempDir("loupe-lib-eval"), new PipelineOptions { PluginDirectories = [RepoPaths.BuiltInPlugins], OutDir = Path.Combine(RepoPaths.TempDir("loupe-lib-eval-run"), "out") });
        Assert.True(run.ExitCode == 0, string.Join("\n", run.Errors));
        Assert.Equal(run.Manifest!["steps"]!.AsArray().Single(s => s!["id"]!.GetValue<string>() == "metric")!["metrics"]!["pixel_flipping_mean"]!.GetValue<double>(), pf, 12);

        // The same maps given as an array (Quantus's a_batch): the same score, without the method.
        var maps = model.Explain("saliency", input, target: new { @class = 3 });
        var stacked = maps.InputIds.SelectMany(id => maps.Map(id).Data).ToArray();
        var a = new NdArray(stacked, [input.Shape[0], input.Shape[2], input.Shape[3]]);
        var ofMaps = model.Evaluate("pixel-flipping", input, a, options: new { features_in_step = 56 }, target: new { @class = 3 });
        Assert.Equal(pf, ofMaps.Metrics["pixel_flipping_mean"], 12);
        Assert.Equal("pixel-flipping", ofMaps.Technique);
    }

    [Fact]
    public void Masks_are_the_objects_the_localisation_metrics_compare_with()
    {
        // Quantus's metric(model, x, y, a, s): s as masks, equal to the same masks as a step's folder of files.
        var input = Npy.Read(Fixture("fashion_input.npy"));
        long n = input.Shape[0];
        var masks = new float[n * 28 * 28];
        for (int i = 0; i < n; i++) for (int y = 4 + 3 * i; y < 16 + 3 * i; y++) for (int x = 6; x < 22; x++) masks[i * 784 + y * 28 + x] = 1;
        var folder = RepoPaths.TempDir("loupe-lib-masks");
        for (int i = 0; i < n; i++) File.WriteAllBytes(Path.Combine(folder, $"{i:D5}.npy"), Npy.Encode(new NdArray(masks[(i * 784)..((i + 1) * 784)], [28, 28])));
        using var model = Model();
        var maps = model.Explain("saliency", input);
        var a = new NdArray(maps.InputIds.SelectMany(id => maps.Map(id).Data).ToArray(), [n, 28, 28]);
        foreach (var metric in new[] { "relevance-mass-accuracy", "attribution-localisation" })
        {
            var key = metric.Replace('-', '_') + "_mean";
            var given = model.Evaluate(metric, input, a, masks: new NdArray(masks, [n, 1, 28, 28])).Metrics[key];
            Assert.Equal(model.Evaluate(metric, input, a, options: new { masks = folder }).Metrics[key], given, 12);
            Assert.Equal(given, model.Evaluate(metric, input, "saliency", masks: new NdArray(masks, [n, 28, 28])).Metrics[key], 12);
            Assert.NotEqual(given, model.Evaluate(metric, input, a).Metrics[key]);   // without masks: the pixel-threshold objects
        }
        Assert.Throws<ArgumentException>(() => model.Evaluate("auc", input, a, masks: new NdArray(new float[784], [1, 28, 28])));
    }

    [Fact]
    public void Given_maps_refuse_a_metric_that_explains_again_and_wrong_shapes()
    {
        var input = Npy.Read(Fixture("fashion_input.npy"));
        using var model = Model();
        var a = new NdArray(new float[input.Shape[0] * 28 * 28], [input.Shape[0], 28, 28]);
        var e = Assert.Throws<LoupeValidationException>(() => model.Evaluate("avg-sensitivity", input, a));
        Assert.Contains("gives fixed maps, of the inputs as they are, and this metric explains noisy copies of the inputs", e.Message);
        Assert.Throws<ArgumentException>(() => model.Evaluate("sparseness", input, new NdArray(new float[28 * 28], [1, 28, 28])));
        // The model stays usable; images work as Explain's do.
        Assert.True(double.IsFinite(model.Evaluate("sparseness", input, "saliency").Metrics["sparseness_mean"]));
        var images = new[] { "00009-sneaker.png", "00001-pullover.png" }.Select(f => ImageInput.FromFile(Path.Combine(RepoPaths.Root, "samples", "images", "fashion", f))).ToList();
        var onImages = model.Evaluate("sparseness", images, "grad-cam", new { layer = "relu3" });
        Assert.Equal(["00009-sneaker.png", "00001-pullover.png"], onImages.InputIds);
        Assert.InRange(onImages.Metrics["sparseness_mean"], 0, 1);
    }
}
