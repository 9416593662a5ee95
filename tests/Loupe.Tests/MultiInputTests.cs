using Loupe.Abstractions;

namespace Loupe.Tests;

/// <summary>Issue 18 item 10: models with an image and a side input (Captum's tuple inputs) on the onnx and onnx-runtime
/// backends, against PyTorch implementations of Captum's formulas on the same two-input network
/// (tests/fixtures/make_multi_input_fixtures.py); and the layer-input shape check at a Flatten boundary.</summary>
public class MultiInputTests
{
    /// <summary>multi_net.onnx on the three images of multi_image.npy (ids 00000…00002), side input 'meta' from a source.</summary>
    internal static string Pipeline(string steps, string backend = "onnx", string? side = null, int batchSize = 2, string? dir = null) => TestEnv.Pipeline($$"""
        version: 1
        model:
          uses: {{backend}}
          with:
            path: {{TestEnv.Yaml(TestEnv.Fixture("multi_net.onnx"))}}
            {{(side == "" ? "" : $"side_inputs: [ {side ?? $"{{ name: meta, folder: {TestEnv.Yaml(TestEnv.Fixture("multi_meta"))} }}"} ]")}}
        data:
          uses: npy
          with: { path: {{TestEnv.Yaml(TestEnv.Fixture("multi_image.npy"))}} }
        settings: { batch_size: {{batchSize}} }
        steps:
        {{steps}}
        """, dir);

    static void Ok(Loupe.Core.RunResult r)
    {
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.All(r.Manifest!["steps"]!.AsArray(), s => Assert.True(s!["liveTensorDelta"]!.GetValue<long>() == 0, $"{s["id"]}: {s["liveTensorDelta"]}"));
    }

    static float[] Stack(Loupe.Core.RunResult r, string step, string name) => TechniqueTests.Stack(r, step, name, 3);

    [Fact]
    public void GradientAndPerturbationMethodsAttributeToEachInputAsCaptumTupleInputs()
    {
        var r = TestEnv.Run(Pipeline("""
              - { id: sal, uses: saliency }
              - { id: gxi, uses: gradient-x-input }
              - id: ig
                uses: integrated-gradients
                with: { steps: 16, side_baselines: [ { input: meta, value: 0.5 } ], internal_batch_size: 5 }
              - { id: occ, uses: occlusion, with: { window: 3, stride: 2, micro_batch: 4 } }
              - { id: fa, uses: feature-ablation, with: { segments: elements, micro_batch: 7 } }
            """));
        Ok(r);
        TechniqueTests.Close(Stack(r, "sal", "saliency"), "multi_saliency_image.npy", 1e-5);
        TechniqueTests.Close(Stack(r, "sal", "saliency-meta"), "multi_saliency_meta.npy", 1e-5);
        TechniqueTests.Close(Stack(r, "gxi", "gradient-x-input"), "multi_gxi_image.npy", 1e-5);
        TechniqueTests.Close(Stack(r, "gxi", "gradient-x-input-meta"), "multi_gxi_meta.npy", 1e-5);
        TechniqueTests.Close(Stack(r, "ig", "integrated-gradients"), "multi_ig_image.npy", 1e-4);
        TechniqueTests.Close(Stack(r, "ig", "integrated-gradients-meta"), "multi_ig_meta.npy", 1e-4);
        TechniqueTests.Close(Stack(r, "occ", "occlusion"), "multi_occlusion.npy", 1e-4);
        TechniqueTests.Close(Stack(r, "fa", "feature-ablation"), "multi_feature_ablation.npy", 1e-4);
        // The per-step table of the side input's attributions holds the same numbers as the per-input arrays.
        var table = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "ig", "integrated-gradients-meta.json")))!;
        Assert.Equal("meta", (string?)table["input"]);
        var fromTable = Enumerable.Range(0, 3).SelectMany(i => table["rows"]![$"{i:D5}"]!["values"]!.AsArray().Select(v => (float)v!)).ToArray();
        TechniqueTests.Close(fromTable, "multi_ig_meta.npy", 1e-4);
        // Completeness over both inputs: the error recorded is Σ attr(image) + Σ attr(meta) − (F(x, m) − F(x′, m′)),
        // the reference's own (16 points leave a few 1e-3 on this ReLU network).
        var completeness = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "ig", "completeness.json")))!;
        var gap = Npy.Read(TestEnv.Fixture("multi_ig_gap.npy")).Data;
        var img = Npy.Read(TestEnv.Fixture("multi_ig_image.npy")).Data;
        var meta = Npy.Read(TestEnv.Fixture("multi_ig_meta.npy")).Data;
        for (int i = 0; i < 3; i++)
        {
            double expected = img.Skip(192 * i).Take(192).Sum() + meta.Skip(4 * i).Take(4).Sum() - gap[i];
            double actual = (double)completeness[$"{i:D5}"]!;
            Assert.True(Math.Abs(actual - expected) < 1e-5, $"{i}: completeness error {actual} vs the reference's {expected}");
        }
        // The predictions saw each row's own side input.
        var logits = Npy.Read(TestEnv.Fixture("multi_logits.npy")).Data;
        var top = Enumerable.Range(0, 3).Select(i => Array.IndexOf(logits, logits.Skip(3 * i).Take(3).Max(), 3 * i) - 3 * i).ToArray();
        var predicted = Loupe.Core.Predictions.Read(r.Manifest, r.OutDir!).Select(e => e["top"]![0]!["class"]!.GetValue<long>()).ToArray();
        Assert.Equal(top.Select(t => (long)t), predicted);
    }

    [Fact]
    public void ForwardOnlyMethodsOnOnnxRuntimeHoldEachRowsSideInput()
    {
        var r = TestEnv.Run(Pipeline("""
              - { id: occ, uses: occlusion, with: { window: 3, stride: 2 } }
              - { id: fa, uses: feature-ablation, with: { segments: elements } }
            """, backend: "onnx-runtime"));
        Ok(r);
        TechniqueTests.Close(Stack(r, "occ", "occlusion"), "multi_occlusion.npy", 1e-4);
        TechniqueTests.Close(Stack(r, "fa", "feature-ablation"), "multi_feature_ablation.npy", 1e-4);
    }

    [Fact]
    public void AConstantSideInputFileIsUsedForEveryRow()
    {
        var r = TestEnv.Run(Pipeline("- { id: sal, uses: saliency }", side: $"{{ name: meta, file: {TestEnv.Yaml(TestEnv.Fixture("multi_meta_const.npy"))} }}", batchSize: 3));
        Ok(r);
        TechniqueTests.Close(Stack(r, "sal", "saliency"), "multi_saliency_image_const.npy", 1e-5);
        TechniqueTests.Close(Stack(r, "sal", "saliency-meta"), "multi_saliency_meta_const.npy", 1e-5);
    }

    [Fact]
    public void AttributeToLayerInputChecksTheShapeOfTheInputNotOfTheOutput()
    {
        // 'flatten' reads N×4×4×4 and gives N×64: CAM methods accept its input and refuse its output.
        var r = TestEnv.Run(Pipeline("""
              - { id: gc, uses: grad-cam, with: { layer: flatten, attribute_to_layer_input: true } }
              - { id: gxa, uses: layer-gradient-x-activation, with: { layer: flatten, attribute_to_layer_input: true } }
            """));
        Ok(r);
        TechniqueTests.Close(Stack(r, "gc", "grad-cam-layer"), "multi_flatten_in_gradcam.npy", 1e-4);
        TechniqueTests.Close(Stack(r, "gxa", "layer-gradient-x-activation-layer"), "multi_flatten_in_gxa.npy", 1e-4);
        var bad = TestEnv.Run(Pipeline("- { id: gc, uses: grad-cam, with: { layer: flatten } }"));
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("layer 'flatten' has output shape (1×64)", string.Join("\n", bad.Errors));
    }

    [Fact]
    public void BadSideInputsAreClearValidationErrors()
    {
        string Errors(string pipeline) { var r = TestEnv.Run(pipeline); Assert.Equal(2, r.ExitCode); return string.Join("\n", r.Errors); }
        var dir = TestEnv.TempDir("multi-bad");
        // A side input without a source.
        var e = Errors(Pipeline("- { id: sal, uses: saliency }", side: ""));
        Assert.Contains("side input 'meta'", e);
        Assert.Contains("side_inputs", e);
        // A source for an input the model does not have.
        e = Errors(Pipeline("- { id: sal, uses: saliency }", side: $"{{ name: mta, folder: {TestEnv.Yaml(TestEnv.Fixture("multi_meta"))} }}"));
        Assert.Contains("'mta' is not a side input", e);
        Assert.Contains("meta", e);
        // A constant file of the wrong shape names the file.
        var wrong = Path.Combine(dir, "wrong.npy");
        File.WriteAllBytes(wrong, Npy.Encode(new NdArray(new float[5], [5])));
        e = Errors(Pipeline("- { id: sal, uses: saliency }", side: $"{{ name: meta, file: {TestEnv.Yaml(wrong)} }}"));
        Assert.Contains(wrong, e);
        Assert.True(e.Contains("is not the input's shape (4)"), e);
        // A technique that forwards copies without holding side inputs is refused, naming the step.
        e = Errors(Pipeline("- { id: sc, uses: score-cam, with: { layer: relu1 } }"));
        Assert.Contains("step 'sc' (score-cam) cannot explain a model with side inputs (meta)", e);
        // An unknown side baseline.
        e = Errors(Pipeline("- { id: ig, uses: integrated-gradients, with: { side_baselines: [ { input: metta, value: 0 } ] } }"));
        Assert.Contains("'metta' is not a side input of the model", e);
    }

    [Fact]
    public void AMissingPerInputFileFailsTheStepNamingTheFile()
    {
        var dir = TestEnv.TempDir("multi-missing");
        var folder = Path.Combine(dir, "meta");
        Directory.CreateDirectory(folder);
        File.Copy(TestEnv.Fixture(Path.Combine("multi_meta", "00000.npy")), Path.Combine(folder, "00000.npy"));
        File.Copy(TestEnv.Fixture(Path.Combine("multi_meta", "00001.npy")), Path.Combine(folder, "00001.npy"));
        var r = TestEnv.Run(Pipeline("- { id: sal, uses: saliency }", side: $"{{ name: meta, folder: {TestEnv.Yaml(folder)} }}", dir: dir));
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains(Path.Combine(folder, "00002.npy"), r.Manifest?.ToJsonString() + string.Join("\n", r.Errors));
    }

    [Fact]
    public void TheShippedConfigRunsFromTheCli()
    {
        var outDir = Path.Combine(TestEnv.TempDir("multi-cli"), "run");
        var (code, stdout, stderr) = TestEnv.Cli(TestEnv.RepoRoot, "run", "configs/multi-input.yaml", "--out", outDir);
        Assert.True(code == 0, stdout + stderr);
        var ig = Enumerable.Range(0, 3).SelectMany(i => Npy.Read(Path.Combine(outDir, "ig", $"{i:D5}.integrated-gradients-meta.npy")).Data).ToArray();
        TechniqueTests.Close(ig, "multi_ig_meta.npy", 1e-4);
        var occ = Enumerable.Range(0, 3).SelectMany(i => Npy.Read(Path.Combine(outDir, "occlusion", $"{i:D5}.occlusion.npy")).Data).ToArray();
        TechniqueTests.Close(occ, "multi_occlusion.npy", 1e-4);
        Assert.True(File.Exists(Path.Combine(outDir, "saliency", "saliency-meta.json")));
        // The bar chart of a vector side input: blue (positive) and red (negative) bars as the values' signs say.
        var values = Npy.Read(Path.Combine(outDir, "ig", "00000.integrated-gradients-meta.npy")).Data;
        using var png = SixLabors.ImageSharp.Image.Load<SixLabors.ImageSharp.PixelFormats.Rgb24>(Path.Combine(outDir, "ig", "00000.integrated-gradients-meta.png"));
        bool Has(byte r, byte g, byte b) { for (int y = 0; y < png.Height; y++) for (int x = 0; x < png.Width; x++) if (png[x, y] == new SixLabors.ImageSharp.PixelFormats.Rgb24(r, g, b)) return true; return false; }
        Assert.Equal(values.Any(v => v > 0), Has(49, 104, 142));
        Assert.Equal(values.Any(v => v < 0), Has(200, 60, 50));
    }
}
