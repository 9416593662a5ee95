using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>Issue 18: the exact conventions of Captum 0.8 and pytorch-grad-cam, against PyTorch implementations of the
/// libraries' formulas (tests/fixtures/make_convention_fixtures.py).</summary>
public class ConventionTests
{
    /// <summary>The fixture demo CNN over a fixture input .npy of another size (the CNN ends in global average pooling).</summary>
    internal static string Pipeline(string input, int height, int width, string steps) => TestEnv.Pipeline($"""
        version: 1
        name: conventions
        model:
          uses: torchvision
          with: {"{"} architecture: fashion-cnn, weights: {TestEnv.Yaml(TestEnv.Fixture("fashion_cnn_seed0.pt"))} {"}"}
          input: {"{"} size: [{height}, {width}] {"}"}
        data:
          uses: npy
          with: {"{"} path: {TestEnv.Yaml(TestEnv.Fixture(input))} {"}"}
        settings: {"{"} batch_size: 2 {"}"}
        steps:
        {steps}
        """);

    static Loupe.Core.RunResult Run(string path)
    {
        var r = TestEnv.Run(path);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.All(r.Manifest!["steps"]!.AsArray(), s => Assert.True(s!["liveTensorDelta"]!.GetValue<long>() == 0, $"{s["id"]}: {s["liveTensorDelta"]}"));
        return r;
    }

    [Fact]
    public void RiemannTrapezoidIsCaptumsAndTrapezoidIsTheTextbookRule()
    {
        var r = Run(TestEnv.FixturePipeline("""
              - { id: rt, uses: integrated-gradients, with: { method: riemann-trapezoid, steps: 20 } }
              - { id: tt, uses: integrated-gradients, with: { method: trapezoid, steps: 20 } }
            """, batchSize: 4));
        var captum = TechniqueTests.Stack(r, "rt", "integrated-gradients");
        var textbook = TechniqueTests.Stack(r, "tt", "integrated-gradients");
        TechniqueTests.Close(captum, "conv_ig_riemann_trap20.npy", 1e-4);
        TechniqueTests.Close(textbook, "attr_ig_trap20.npy", 1e-4);
        // Captum's weights sum to (n − 1)/n: its map is exactly 19/20 of the textbook one.
        Assert.True(TestEnv.RelL2(textbook.Select(v => v * 19f / 20f).ToArray(), captum) < 1e-5);
        var (_, w) = Loupe.Analysis.Decisions.IntegratedGradients.Rule(Loupe.Analysis.Decisions.IntegrationRule.RiemannTrapezoid, 20);
        Assert.Equal(19.0 / 20, w.Sum(), 1e-12);
    }

    [Fact]
    public void PytorchGradCamRescalesAfterResizingAlsoForOneLayerOnANonSquareInput()
    {
        var r = Run(Pipeline("conv_input_20x30.npy", 20, 30, """
              - { id: gc, uses: grad-cam, with: { layer: relu3, convention: pytorch-grad-cam } }
              - { id: lc, uses: layer-cam, with: { layers: [relu2, relu3], convention: pytorch-grad-cam } }
              - { id: refine, uses: layer-cam, with: { layers: [relu2, relu3], convention: pytorch-grad-cam, aggregate: product } }
            """));
        var gc = TechniqueTests.Stack(r, "gc", "grad-cam", 2);
        TechniqueTests.Close(gc, "conv_pgc_gradcam_20x30.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "lc", "layer-cam", 2), "conv_pgc_layercam_multi_20x30.npy", 1e-4);
        // pytorch-grad-cam's RefineCAM(base_method=LayerCAM): the product of the one-layer maps, rescaled.
        TechniqueTests.Close(TechniqueTests.Stack(r, "refine", "layer-cam", 2), "conv_pgc_refine_layercam_20x30.npy", 1e-4);
        // Each map spans [0, 1] as pytorch-grad-cam's do (a 5×7 map resized to 20×30 peaks below 1 before the rescale).
        for (int i = 0; i < 2; i++)
        {
            var m = gc.AsSpan(i * 600, 600).ToArray();
            Assert.InRange(m.Max(), 0.999f, 1f);
            Assert.Equal(0f, m.Min());
        }
    }

    [Fact]
    public void ScoreCamUpsamplesWithAlignedCornersUnderPytorchGradCamOnA2x2Layer()
    {
        var r = Run(Pipeline("conv_input_8x8.npy", 8, 8, """
              - { id: sc, uses: score-cam, with: { layer: relu3, convention: pytorch-grad-cam } }
              - { id: scc, uses: score-cam, with: { layer: relu3 } }
            """));
        Assert.Equal([2L, 2], TestEnv.Artifact(r, "sc/00000.score-cam-layer.npy").Shape);
        TechniqueTests.Close(TechniqueTests.Stack(r, "sc", "score-cam-layer", 2), "conv_scorecam_pgc_8x8_layer.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "sc", "score-cam", 2), "conv_scorecam_pgc_8x8.npy", 1e-4);
        // Captum has no Score-CAM: the default convention masks as pytorch-grad-cam does (align_corners = true), so its
        // layer map is that library's too (until 2026-12-05 it masked with align_corners = false, 5 % off here).
        TechniqueTests.Close(TechniqueTests.Stack(r, "scc", "score-cam-layer", 2), "conv_scorecam_pgc_8x8_layer.npy", 1e-4);
    }

    [Fact]
    public void NoiseTunnelTakesFixedDrawsAndAbsoluteStdevs()
    {
        // The same draws per input through noise_dir (files written here) must give noise_file's result.
        var dir = TestEnv.TempDir("loupe-noise");
        for (int i = 0; i < 4; i++) File.Copy(TestEnv.Fixture("conv_nt_draws.npy"), Path.Combine(dir, $"{i:D5}.npy"));
        var draws = TestEnv.Yaml(TestEnv.Fixture("conv_nt_draws.npy"));
        var r = Run(TestEnv.FixturePipeline($$"""
              - { id: sg, uses: noise-tunnel, with: { inner: { uses: saliency, with: { abs: false } }, samples: 4, stdevs: 0.3, noise_file: {{draws}}, samples_per_batch: 3 } }
              - { id: vg, uses: noise-tunnel, with: { inner: { uses: saliency, with: { abs: false } }, samples: 4, stdevs: 0.3, noise_file: {{draws}}, type: vargrad } }
              - { id: pd, uses: noise-tunnel, with: { inner: { uses: saliency, with: { abs: false } }, samples: 4, stdevs: 0.3, noise_dir: {{TestEnv.Yaml(dir)}} } }
            """, batchSize: 3));
        TechniqueTests.Close(TechniqueTests.Stack(r, "sg", "noise-tunnel"), "conv_nt_smoothgrad.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "vg", "noise-tunnel"), "conv_nt_vargrad.npy", 1e-3);
        TechniqueTests.Close(TechniqueTests.Stack(r, "pd", "noise-tunnel"), "conv_nt_smoothgrad.npy", 1e-4);
    }

    /// <summary>Captum's NoiseTunnel around LayerGradCam / LayerGradientXActivation combines the layer-resolution
    /// outputs: smoothgrad-sq squares the 7×7 CAMs (not their upsampled copies), vargrad takes the variance of the
    /// N×128×7×7 attributions; the map is the combination upsampled (make_convention_fixtures.py section 10).</summary>
    [Fact]
    public void NoiseTunnelAroundLayerMethodsCombinesTheirLayerResolutionOutputs()
    {
        var draws = TestEnv.Yaml(TestEnv.Fixture("conv_nt_draws.npy"));
        var r = Run(TestEnv.FixturePipeline($$"""
              - { id: gc, uses: noise-tunnel, with: { inner: { uses: grad-cam, with: { layer: relu3, relu: false } }, samples: 4, stdevs: 0.3, noise_file: {{draws}}, type: smoothgrad-sq, samples_per_batch: 3 } }
              - { id: gx, uses: noise-tunnel, with: { inner: { uses: layer-gradient-x-activation, with: { layer: relu3 } }, samples: 4, stdevs: 0.3, noise_file: {{draws}}, type: vargrad } }
            """, batchSize: 3));
        Assert.Equal([7L, 7], TestEnv.Artifact(r, "gc/00000.noise-tunnel-layer.npy").Shape);
        TechniqueTests.Close(TechniqueTests.Stack(r, "gc", "noise-tunnel-layer"), "conv_nt_gradcam_sq_layer.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "gx", "noise-tunnel-layer"), "conv_nt_gxa_vargrad_layer.npy", 1e-3);
        using var scope = NewDisposeScope();
        var layer = tensor(Npy.Read(TestEnv.Fixture("conv_nt_gradcam_sq_layer.npy")).Data, [4, 1, 7, 7]);
        var upsampled = nn.functional.interpolate(layer, [28, 28], mode: InterpolationMode.Bilinear, align_corners: false);
        var expected = upsampled.contiguous().data<float>().ToArray();
        var map = TechniqueTests.Stack(r, "gc", "noise-tunnel");
        Assert.True(TestEnv.RelL2(map, expected) <= 1e-4, $"map vs the upsampled combination: {TestEnv.RelL2(map, expected):E2}");
    }

    /// <summary>Ablation-CAM under pytorch-grad-cam's convention on a layer with negative values (conv3 before its batch
    /// norm): a channel at place j of its batch of batch_size takes min − (j + 1)·1e7, as that library's AblationLayer
    /// sets it (make_convention_fixtures.py section 11); the paper's zero under the default convention differs.</summary>
    [Fact]
    public void AblationCamAblatesAsPytorchGradCamOnALayerWithNegativeValues()
    {
        var r = Run(TestEnv.FixturePipeline("""
              - { id: pgc, uses: ablation-cam, with: { layer: conv3, convention: pytorch-grad-cam, batch_size: 8, micro_batch: 20 } }
              - { id: zero, uses: ablation-cam, with: { layer: conv3, relu: true } }
            """, batchSize: 3));
        TechniqueTests.Close(TechniqueTests.Stack(r, "pgc", "ablation-cam-layer"), "conv_pgc_ablationcam_conv3_b8_layer.npy", 1e-4);
        Assert.True(TestEnv.RelL2(TechniqueTests.Stack(r, "zero", "ablation-cam-layer"), Npy.Read(TestEnv.Fixture("conv_pgc_ablationcam_conv3_b8_layer.npy")).Data) > 0.05);
    }

    [Fact]
    public void NoiseDrawsOfTheWrongShapeAreRefusedNamingTheFile()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: sg, uses: noise-tunnel, with: { inner: { uses: saliency }, samples: 5, noise_file: {{TestEnv.Yaml(TestEnv.Fixture("conv_nt_draws.npy"))}} } }
            """));
        Assert.Equal(1, r.ExitCode);
        var error = r.Manifest!["steps"]![0]!["error"]!.GetValue<string>();
        Assert.Contains("conv_nt_draws.npy", error);
        Assert.Contains("S ≥ samples (5)", error);
    }

    [Fact]
    public void GuidedGradCamUpsamplesNearestAsCaptumUnlessBilinearIsAsked()
    {
        var r = Run(TestEnv.FixturePipeline("""
              - { id: ggc, uses: guided-grad-cam, with: { layer: relu3 } }
              - { id: nn, uses: grad-cam, with: { layer: relu3, upsample: nearest } }
            """, batchSize: 4));
        TechniqueTests.Close(TechniqueTests.Stack(r, "ggc", "guided-grad-cam"), "conv_guided_gradcam_nearest.npy", 1e-4);
        // Nearest upsampling by 4: every 4×4 block of the input-resolution map is one layer cell.
        var up = TestEnv.Artifact(r, "nn/00000.grad-cam.npy").Data;
        var raw = TestEnv.Artifact(r, "nn/00000.grad-cam-layer.npy").Data;
        for (int y = 0; y < 28; y++)
            for (int x = 0; x < 28; x++)
                Assert.Equal(raw[y / 4 * 7 + x / 4], up[y * 28 + x]);
    }

    /// <summary>F.interpolate's other modes, as Captum's interpolate_mode: Grad-CAM at relu3 upsampled bicubic, area and
    /// nearest-exact against PyTorch (make_cam_upsample_fixtures.py); relu: false under pytorch-grad-cam's convention is
    /// refused (that library clips every CAM at 0).</summary>
    [Fact]
    public void CamsUpsampleWithEveryInterpolateModeOfCaptum()
    {
        var r = Run(TestEnv.FixturePipeline("""
              - { id: bc, uses: grad-cam, with: { layer: relu3, upsample: bicubic } }
              - { id: ar, uses: grad-cam, with: { layer: relu3, upsample: area } }
              - { id: ne, uses: grad-cam, with: { layer: relu3, upsample: nearest-exact } }
            """, batchSize: 4));
        foreach (var (step, fixture) in new[] { ("bc", "bicubic"), ("ar", "area"), ("ne", "nearest_exact") })
            TechniqueTests.Close(TechniqueTests.Stack(r, step, "grad-cam"), $"conv_gradcam_{fixture}.npy", 1e-5);
        var bad = TestEnv.Run(TestEnv.FixturePipeline("      - { id: gc, uses: grad-cam, with: { layer: relu3, relu: false, convention: pytorch-grad-cam } }"));
        Assert.Contains("option 'relu: false' applies to convention captum", string.Join("\n", bad.Errors));
    }

    [Fact]
    public void FeatureAblationPerElementAndWithAMaskFile()
    {
        var r = Run(Pipeline("conv_input_8x8.npy", 8, 8, """
              - { id: el, uses: feature-ablation, with: { segments: elements } }
            """));
        TechniqueTests.Close(TechniqueTests.Stack(r, "el", "feature-ablation", 2), "conv_fa_elements_8x8.npy", 1e-4);
        var m = Run(TestEnv.FixturePipeline($$"""
              - { id: fm, uses: feature-ablation, with: { segments: mask, feature_mask: {{TestEnv.Yaml(TestEnv.Fixture("conv_fa_mask_ids.npy"))}}, fill_value: 0.5 } }
            """, batchSize: 3));
        TechniqueTests.Close(TechniqueTests.Stack(m, "fm", "feature-ablation"), "conv_fa_mask.npy", 1e-4);
    }

    [Fact]
    public void OcclusionTakesRectangularWindowsStridesAndConstantFills()
    {
        var r = Run(TestEnv.FixturePipeline("""
              - { id: occ, uses: occlusion, with: { window: [3, 5], stride: [2, 4], fill_value: 0.25 } }
              - { id: ig, uses: integrated-gradients, with: { steps: 16, baseline_value: [0.5] } }
            """, batchSize: 3));
        TechniqueTests.Close(TechniqueTests.Stack(r, "occ", "occlusion"), "conv_occlusion_3x5_s2x4_fill025.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "ig", "integrated-gradients"), "conv_ig_baseline05.npy", 1e-4);
    }

    [Fact]
    public void DeletionTakesAConstantBaseline()
    {
        // Black pixels are (0 − 0.2860) / 0.3530 in the demo CNN's normalised space: the constant gives the same curves.
        var black = (0f - 0.2860f) / 0.3530f;
        var r = Run(TestEnv.FixturePipeline($$"""
              - { id: sal, uses: saliency }
              - { id: db, uses: deletion, with: { of: sal, steps: 8, baseline: black } }
              - { id: dc, uses: deletion, with: { of: sal, steps: 8, baseline_value: {{black.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}} } }
              - { id: dz, uses: deletion, with: { of: sal, steps: 8, baseline_value: 0.7 } }
            """, batchSize: 4));
        double Auc(string step) => r.Manifest!["steps"]!.AsArray().First(s => s!["id"]!.GetValue<string>() == step)!["metrics"]!["auc_mean"]!.GetValue<double>();
        Assert.Equal(Auc("db"), Auc("dc"), 1e-5);
        Assert.NotEqual(Auc("db"), Auc("dz"), 3);
    }

    [Fact]
    public void RiseMasksTheNormalisedInputByDefaultAsTheAuthorsCode()
    {
        // eclique/RISE multiplies the normalised input by each mask: masked pixels are 0 in normalised space, fill: zero
        // (the default since 2026-12-05; black, pixels × mask, differs where the normalisation's mean is not 0). Draws
        // are seeded per step: the same step id in each run.
        float[] Rise(string with) => TechniqueTests.Stack(TestEnv.Run(TestEnv.FixturePipeline(
            $"- {{ id: r, uses: rise, with: {{ masks: 40{with} }} }}")), "r", "rise");
        var byDefault = Rise("");
        Assert.Equal(Rise(", fill: zero"), byDefault);
        Assert.NotEqual(Rise(", fill: black"), byDefault);
    }

    [Fact]
    public void OcclusionCoversTheEdgeWithCaptumsCutOffWindow()
    {
        // Window 5, stride 4 on 28 columns: Captum takes ceil(23 / 4) + 1 = 7 origins, the last (24) cut off at the edge,
        // so columns 25–27 are covered (the former floor rule took 6 and left them 0). The fixture restates Captum.
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: occ, uses: occlusion, with: { window: [3, 5], stride: [2, 4], fill: 0.25 } }
            """));
        var a = TechniqueTests.Stack(r, "occ", "occlusion");
        TechniqueTests.Close(a, "conv_occlusion_3x5_s2x4_fill025.npy", 1e-4);
        for (int i = 0; i < 4; i++)
            Assert.Contains(Enumerable.Range(0, 28).Select(y => a[i * 784 + y * 28 + 27]), v => v != 0);
    }

    [Fact]
    public void ConstantFillsOfTheWrongLengthAreValidationErrors()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: occ, uses: occlusion, with: { window: [3, 5, 7, 9], fill_value: [0.1, 0.2] } }
            """));
        Assert.Equal(2, r.ExitCode);
        var all = string.Join("\n", r.Errors);
        Assert.Contains("option 'window': give one value, [height, width] or [channels, height, width]", all);
        Assert.Contains("option 'fill_value': give one value or one per channel (1), got 2", all);
        var bounds = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: occ, uses: occlusion, with: { window: [3, 5], stride: [2, 0] } }
            """));
        Assert.Equal(2, bounds.ExitCode);   // a [Range] bounds each item of a list option
        Assert.Contains("option 'stride' must be between 1 and 4096 (got 0 in [2, 0])", string.Join("\n", bounds.Errors));
    }

    [Fact]
    public void ReluRulesAndInterventionsRunOnTheOnnxBackend()
    {
        // A custom CNN reaches Loupe only through ONNX: its Relu nodes take guided backprop's and DeconvNet's rules
        // (the validator no longer refuses these methods), and its values can be intervened on (Ablation-CAM).
        var path = TestEnv.Pipeline($$"""
            version: 1
            model:
              uses: onnx
              with: { path: {{TestEnv.Yaml(TestEnv.Fixture("conv_cnn3.onnx"))}} }
            data:
              uses: npy
              with: { path: {{TestEnv.Yaml(TestEnv.Fixture("conv_input_3x16.npy"))}} }
            steps:
              - { id: gbp, uses: guided-backprop }
              - { id: dec, uses: deconvnet }
              - { id: ggc, uses: guided-grad-cam, with: { layer: relu2 } }
              - { id: ac, uses: ablation-cam, with: { layer: relu2 } }
              - { id: fa, uses: feature-ablation, with: { segments: mask, feature_mask: {{TestEnv.Yaml(TestEnv.Fixture("conv_cnn3_mask_ids.npy"))}}, fill_value: [0.1, -0.2, 0.3] } }
            """);
        var r = Run(path);
        TechniqueTests.Close(TechniqueTests.Stack(r, "gbp", "guided-backprop", 2), "conv_cnn3_guided.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "dec", "deconvnet", 2), "conv_cnn3_deconv.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "ggc", "guided-grad-cam", 2), "conv_cnn3_guided_gradcam.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "ac", "ablation-cam-layer", 2), "conv_cnn3_ablationcam_layer.npy", 1e-4);
        // Per-channel features with per-channel constant baselines: the three channels of a pixel differ.
        TechniqueTests.Close(TechniqueTests.Stack(r, "fa", "feature-ablation", 2), "conv_cnn3_fa_mask.npy", 1e-4);
    }

    [Fact]
    public void CaptumLayerAttributionsAndPerChannelGradCam()
    {
        var r = Run(Pipeline("conv_input_8x8.npy", 8, 8, """
              - { id: la, uses: layer-activation, with: { layer: relu3 } }
              - { id: gxa, uses: layer-gradient-x-activation, with: { layer: relu3 } }
              - { id: pc, uses: grad-cam, with: { layer: relu3, sum_channels: false } }
            """));
        Assert.Equal([128L, 2, 2], TestEnv.Artifact(r, "gxa/00000.layer-gradient-x-activation-layer.npy").Shape);
        TechniqueTests.Close(TechniqueTests.Stack(r, "la", "layer-activation", 2), "conv_layer_activation_8x8.npy", 1e-5);
        TechniqueTests.Close(TechniqueTests.Stack(r, "gxa", "layer-gradient-x-activation-layer", 2), "conv_layer_gxa_8x8.npy", 1e-4);
        Assert.Equal([128L, 8, 8], TestEnv.Artifact(r, "pc/00000.grad-cam.npy").Shape);
        TechniqueTests.Close(TechniqueTests.Stack(r, "pc", "grad-cam", 2), "conv_gradcam_per_channel_8x8.npy", 1e-4);
        var bad = TestEnv.Run(Pipeline("conv_input_8x8.npy", 8, 8, """
              - { id: pc, uses: grad-cam, with: { layers: [relu2, relu3], sum_channels: false } }
            """));
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("sum_channels: false", string.Join("\n", bad.Errors));
    }

    [Fact]
    public void ModelInputsAreTheExactPreprocessedTensors()
    {
        // Independent of Loupe's readers: the first 3 Fashion-MNIST test images decoded here from the gzip IDX file,
        // /255, then (x − 0.2860) / 0.3530 (the demo CNN's normalisation).
        var gz = Path.Combine(TestEnv.Samples, "data", "fashion-mnist", "t10k-first500-images-idx3-ubyte.gz");
        var path = TestEnv.Pipeline($$"""
            version: 1
            model:
              uses: torchvision
              with: { architecture: fashion-cnn, weights: {{TestEnv.Yaml(TestEnv.Fixture("fashion_cnn_seed0.pt"))}} }
            data:
              uses: idx
              with: { images: {{TestEnv.Yaml(gz)}}, limit: 3 }
            steps:
              - { id: in, uses: model-inputs, with: { images: true } }
            """);
        var r = Run(path);
        using var file = new System.IO.Compression.GZipStream(File.OpenRead(gz), System.IO.Compression.CompressionMode.Decompress);
        var bytes = new byte[16 + 3 * 784];
        file.ReadExactly(bytes);
        for (int i = 0; i < 3; i++)
        {
            var a = TestEnv.Artifact(r, $"in/{i:D5}.input.npy");
            Assert.Equal([1L, 28, 28], a.Shape);
            var expected = Enumerable.Range(0, 784).Select(j => (bytes[16 + i * 784 + j] / 255f - 0.2860f) / 0.3530f).ToArray();
            Assert.True(TestEnv.RelL2(a.Data, expected) < 1e-6);
            Assert.True(File.Exists(Path.Combine(r.OutDir!, "in", $"{i:D5}.input.png")));
        }
        var spec = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "in", "preprocessing.json")))!;
        Assert.Equal(0.3530f, spec["std"]![0]!.GetValue<float>());
    }
}
