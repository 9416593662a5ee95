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
