using Loupe.Abstractions;
using Loupe.Testing;

namespace Loupe.Library.Tests;

/// <summary>Technique numbers through the in-process API (no pipeline file, no run folder): each technique on the
/// fixture demo CNN and the 4 fixture inputs against its PyTorch / sklearn reference (tests/fixtures), and no tensor
/// left behind by a call. Pipeline behaviour stays in Loupe.Tests, the CLI in its CLI tests.</summary>
[Collection("library")]
public class TechniqueApiTests
{
    static string Fixture(string name) => Path.Combine(RepoPaths.Root, "tests", "fixtures", name);

    static LoupeModel FixtureModel() => LoupeModel.Load("torchvision",
        new { architecture = "fashion-cnn", weights = Fixture("fashion_cnn_seed0.safetensors") },
        new LoupeSettings { PluginDirectories = [RepoPaths.BuiltInPlugins], Threads = 1, BatchSize = 3 });

    static float[] Stack(Explanation e, string name) =>
        e.InputIds.SelectMany(id => e.Artifacts.Single(a => a.InputId == id && a.Name == name && a.Kind == ArtifactKind.Raw).Array!.Data).ToArray();

    static long Live()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        return TensorAccounting.Live;
    }

    /// <summary>grad-cam-element-wise, eigen-grad-cam, seg-eigen-cam, kpca-cam, fem and finer-cam at relu3 (make_families_fixtures.py;
    /// formerly a pipeline run in Loupe.Tests/NewerCamTests).</summary>
    [Fact]
    public void NewerCamsMatchThePyTorchReferenceOnTheDemoCnn()
    {
        using var model = FixtureModel();
        var input = Npy.Read(Fixture("fashion_input.npy"));
        foreach (var (technique, artifact, fixture, options) in new (string, string, string, object)[]
                 {
                     ("grad-cam-element-wise", "grad-cam-element-wise-layer", "gcew", new { layer = "relu3" }), ("eigen-grad-cam", "eigen-grad-cam-layer", "egc", new { layer = "relu3" }),
                     ("seg-eigen-cam", "seg-eigen-cam-layer", "segeigen", new { layer = "relu3" }),   // make_seg_eigen_cam_fixtures.py
                     ("kpca-cam", "kpca-cam-layer", "kpca", new { layer = "relu3" }), ("fem", "fem-layer", "fem", new { layer = "relu3" }),
                     ("finer-cam", "finer-cam-layer", "finer", new { layer = "relu3" }),
                     // pytorch-grad-cam's FinerCAM(base_method=LayerCAM / GradCAMPlusPlus)
                     ("finer-cam", "finer-cam-layer", "finer_layercam", new { layer = "relu3", @base = "layer-cam" }),
                     ("finer-cam", "finer-cam-layer", "finer_gcpp", new { layer = "relu3", @base = "grad-cam-plus-plus" }),
                 })
        {
            model.Explain(technique, input, options);   // a first call's lasting allocations (caches) are not leaks
            var before = Live();
            var e = model.Explain(technique, input, options);
            Assert.True(Live() == before, $"{technique}: {Live() - before} tensors left behind");
            Assert.Equal(4, e.InputIds.Count);
            var expected = Npy.Read(Fixture($"fam_cnn_{fixture}.npy")).Data;
            var err = Numbers.RelL2(Stack(e, artifact), expected);
            Assert.True(err <= 1e-4, $"fam_cnn_{fixture}.npy: relative L2 error {err:E2} > 1E-04");
        }
    }

    /// <summary>Ground-truth labels given with the input: <c>target: "label"</c> explains each row for its own label,
    /// the maps of a fixed-class call for that class; the label count must match the rows.</summary>
    [Fact]
    public void LabelsGivenWithTheInputAreWhatTheLabelTargetExplains()
    {
        using var model = FixtureModel();
        var input = Npy.Read(Fixture("fashion_input.npy"));
        var byLabel = model.Explain("saliency", input, new long[] { 3, 8, 3, 8 }, target: "label");
        var three = model.Explain("saliency", input, target: new { @class = 3 });
        var eight = model.Explain("saliency", input, target: new { @class = 8 });
        float[] Row(Explanation e, int i) => e.Artifacts.Single(a => a.InputId == e.InputIds[i] && a.Name == "saliency" && a.Kind == ArtifactKind.Raw).Array!.Data;
        for (int i = 0; i < 4; i++) Assert.Equal(Row(i % 2 == 0 ? three : eight, i), Row(byLabel, i));
        Assert.Throws<ArgumentException>(() => model.Explain("saliency", input, new long[] { 3, 8 }, target: "label"));
    }

    static void Close(Explanation e, string artifact, string fixture)
    {
        var err = Numbers.RelL2(Stack(e, artifact), Npy.Read(Fixture(fixture)).Data);
        Assert.True(err <= 1e-4, $"{fixture}: relative L2 error {err:E2} > 1E-04");
    }

    /// <summary>Saliency, Grad-CAM (both conventions, layer and upsampled maps) and occlusion on the 4 fixture inputs in
    /// batches of 3 (make_fixtures.py; formerly a pipeline run in Loupe.Tests/TechniqueTests).</summary>
    [Fact]
    public void SaliencyGradCamAndOcclusionMatchThePyTorchReferences()
    {
        using var model = FixtureModel();
        var input = Npy.Read(Fixture("fashion_input.npy"));
        var sal = model.Explain("saliency", input);
        Close(sal, "saliency", "fashion_saliency.npy");
        var cam = model.Explain("grad-cam", input, new { layer = "relu3" });
        Close(cam, "grad-cam-layer", "fashion_gradcam_raw.npy");
        Close(cam, "grad-cam", "fashion_gradcam_up.npy");
        Close(model.Explain("grad-cam", input, new { layer = "relu3", convention = "pytorch-grad-cam" }), "grad-cam", "fashion_gradcam_pgc.npy");
        Close(model.Explain("occlusion", input, new { window = 4, stride = 2, fill = "zero" }), "occlusion", "fashion_occlusion.npy");
        // Batches of 3 over 4 inputs: the second batch has one row; nothing may depend on batch composition.
        Assert.Equal([1L, 28, 28], sal.Artifacts.Single(a => a.InputId == sal.InputIds[3] && a.Name == "saliency" && a.Kind == ArtifactKind.Raw).Array!.Shape);
    }

    /// <summary>Saliency with <c>reduce: max, abs: false</c> on the one-channel input is the paper's max |∂y/∂x| over
    /// channels, i.e. |g| (formerly a pipeline run in Loupe.Tests/TechniqueTests).</summary>
    [Fact]
    public void SaliencyMaxOverChannelsIsThePapersMap()
    {
        using var model = FixtureModel();
        var e = model.Explain("saliency", Npy.Read(Fixture("fashion_input.npy")), new { reduce = "max", abs = false });
        Assert.Equal([28L, 28], e.Artifacts.First(a => a.Name == "saliency" && a.Kind == ArtifactKind.Raw).Array!.Shape);
        Close(e, "saliency", "fashion_saliency.npy"); // one channel: max |g| = |g|
    }

    /// <summary>The attribution and CAM family against make_attribution_fixtures.py on the 4 fixture inputs in batches of 3,
    /// and no tensor left behind by a call (formerly one pipeline run in Loupe.Tests/AttributionTests).</summary>
    [Theory]
    [InlineData("gradient-x-input", "{}", "gradient-x-input", "attr_gxi.npy")]
    [InlineData("integrated-gradients", """{ "internal_batch_size": 64 }""", "integrated-gradients", "attr_ig_gl50.npy")]
    [InlineData("integrated-gradients", """{ "method": "riemann-trapezoid", "steps": 20 }""", "integrated-gradients", "conv_ig_riemann_trap20.npy")]
    [InlineData("guided-backprop", "{}", "guided-backprop", "attr_guided.npy")]
    [InlineData("deconvnet", "{}", "deconvnet", "attr_deconv.npy")]
    [InlineData("cam", """{ "layer": "relu3", "head": "fc" }""", "cam-layer", "attr_cam.npy")]
    [InlineData("grad-cam", """{ "layer": "relu3" }""", "grad-cam-layer", "attr_gradcam.npy")]
    [InlineData("grad-cam-plus-plus", """{ "layer": "relu3" }""", "grad-cam-plus-plus-layer", "attr_gradcampp.npy")]
    [InlineData("xgrad-cam", """{ "layer": "relu3" }""", "xgrad-cam-layer", "attr_xgradcam.npy")]
    [InlineData("hires-cam", """{ "layer": "relu3" }""", "hires-cam-layer", "attr_hirescam.npy")]
    [InlineData("layer-cam", """{ "layer": "relu3" }""", "layer-cam-layer", "attr_layercam.npy")]
    [InlineData("eigen-cam", """{ "layer": "relu3" }""", "eigen-cam-layer", "attr_eigencam.npy")]
    [InlineData("score-cam", """{ "layer": "relu3", "micro_batch": 50 }""", "score-cam-layer", "attr_scorecam.npy")]
    [InlineData("ablation-cam", """{ "layer": "relu3", "micro_batch": 50 }""", "ablation-cam-layer", "attr_ablationcam.npy")]
    [InlineData("guided-grad-cam", """{ "layer": "relu3", "upsample": "bilinear" }""", "guided-grad-cam", "attr_guided_gradcam.npy")]
    [InlineData("feature-ablation", """{ "cell": 7 }""", "feature-ablation", "attr_feature_ablation.npy")]
    public void AttributionsMatchThePyTorchReference(string technique, string options, string artifact, string fixture)
    {
        using var model = FixtureModel();
        var input = Npy.Read(Fixture("fashion_input.npy"));
        var with = System.Text.Json.Nodes.JsonNode.Parse(options)!;
        model.Explain(technique, input, with);   // a first call's lasting allocations (caches) are not leaks
        var before = Live();
        var e = model.Explain(technique, input, with);
        Assert.True(Live() == before, $"{technique}: {Live() - before} tensors left behind");
        Close(e, artifact, fixture);
    }
}
