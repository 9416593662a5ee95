using System.Text.Json.Nodes;

namespace Loupe.Evaluation.Tests;

/// <summary>Focus on Quantus's own mosaics: <c>mosaics: quantus</c> follows mosaic_creation draw for draw (Python's
/// random seeded with 7, two mosaics per class of the labels) and scores them as Quantus's Focus.</summary>
public partial class QuantusReferenceTests
{
    [Fact]
    public void FocusOnQuantusMosaicCreationIsQuantus()
    {
        var r = Env.Run($$"""
            version: 1
            model: { uses: torchvision, with: { architecture: fashion-cnn, weights: {{Env.DemoWeights}} } }
            data: { uses: npy, with: { path: {{Fixture("inputs.npy")}}, labels: {{Fixture("labels.npy")}} } }
            settings: { batch_size: 3 }
            steps:
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: focus, uses: focus, with: { of: sal, mosaics: quantus, mosaics_per_class: 2, mosaic_seed: 7, micro_batch: 4 } }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        var want = Expected["focus_mosaics"]!;
        var mosaics = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "focus", "mosaics.json")))!["mosaics"]!.AsArray();
        // The same mosaics: inputs by quadrant, target quadrants and class, in Quantus's order.
        Assert.Equal(want["indices"]!.AsArray().Select(i => string.Join(",", i!.AsArray().Select(v => $"{(int)Num(v):D5}"))),
            mosaics.Select(m => string.Join(",", m!["inputs"]!.AsArray().Select(v => (string)v!))));
        Assert.Equal(want["p_batch"]!.AsArray().Select(p => string.Join(",", p!.AsArray().Select(v => (int)Num(v)))),
            mosaics.Select(m => string.Join(",", m!["target"]!.AsArray().Select(v => (bool)v! ? 1 : 0))));
        Assert.Equal(want["targets"]!.AsArray().Select(v => (long)Num(v)), mosaics.Select(m => (long)m!["class"]!));
        var m = new Mismatches();
        m.Close("focus (Quantus's mosaics)", want["scores"]!.AsArray().Select(Num).ToArray(), Values(r, "focus", "focus"), 1e-4);
        m.Check();
        // The figure: the mosaics (56×56, upscaled ×2) with their maps, quadrants and scores, in a sheet of 4 columns.
        using var sheet = SixLabors.ImageSharp.Image.Load(Path.Combine(r.OutDir!, "focus", "focus-grid.png"));
        Assert.True(sheet.Width > 4 * 112 && sheet.Height > 3 * 112, $"{sheet.Width}×{sheet.Height}");
    }

    [Fact]
    public void QuantusMosaicsNeedTheirCountAndSeedAndLabels()
    {
        var bad = OnDemoCnn("inputs.npy", 8, """
              - { id: sal, uses: saliency }
              - { id: f1, uses: focus, with: { of: sal, mosaics: quantus } }
              - { id: f2, uses: focus, with: { of: sal, mosaic_seed: 3 } }
            """);
        Assert.NotEqual(0, bad.ExitCode);
        var errors = QualityTests.Failures(bad);
        Assert.Contains("mosaics: quantus needs 'mosaics_per_class'", errors);
        Assert.Contains("mosaics: quantus needs 'mosaic_seed'", errors);
        Assert.Contains("step 'f2' (focus): options 'mosaics_per_class' and 'mosaic_seed' apply to mosaics: quantus", errors);
        // Data without labels: the step fails naming the input; the run's other steps keep their results.
        var unlabelled = OnDemoCnn("inputs.npy", 8, """
              - { id: sal, uses: saliency }
              - { id: f, uses: focus, with: { of: sal, mosaics: quantus, mosaics_per_class: 1, mosaic_seed: 3 } }
            """);
        Assert.NotEqual(0, unlabelled.ExitCode);
        Assert.Contains("input '00000' has none", Loupe.Testing.HostRuns.StepError(unlabelled, "f"));
        Assert.Equal("succeeded", Loupe.Testing.HostRuns.StepStatus(unlabelled, "sal"));
        // A label past the model's outputs names the input.
        var dir = Env.TempDir();
        File.WriteAllBytes(Path.Combine(dir, "labels.npy"), Loupe.Abstractions.Toolkit.Npy.EncodeInt64([1, 2, 12, 3, 1, 2, 1, 2]));
        var big = Env.Run($$"""
            version: 1
            model: { uses: torchvision, with: { architecture: fashion-cnn, weights: {{Env.DemoWeights}} } }
            data: { uses: npy, with: { path: {{Fixture("inputs.npy")}}, labels: {{Env.Yaml(Path.Combine(dir, "labels.npy"))}} } }
            steps:
              - { id: sal, uses: saliency }
              - { id: f, uses: focus, with: { of: sal, mosaics: quantus, mosaics_per_class: 1, mosaic_seed: 3 } }
            """);
        Assert.Contains("input '00002' has label 12, outside the model's 10 outputs", Loupe.Testing.HostRuns.StepError(big, "f"));
        // A model of fixed input size (the ViT sample takes 28×28 only) cannot take the 56×56 mosaics: said so.
        var vit = Env.Run($$"""
            version: 1
            model: { uses: onnx, with: { path: {{Env.Yaml(Path.Combine(Env.RepoRoot, "samples", "models", "fashion-vit", "fashion-vit.onnx"))}} } }
            data: { uses: npy, with: { path: {{Fixture("inputs.npy")}}, labels: {{Fixture("labels.npy")}} } }
            steps:
              - { id: sal, uses: saliency }
              - { id: f, uses: focus, with: { of: sal, mosaics: quantus, mosaics_per_class: 1, mosaic_seed: 3 } }
            """);
        Assert.NotEqual(0, vit.ExitCode);
        Assert.Contains("four inputs side by side, 56×56, and the model could not take them", Loupe.Testing.HostRuns.StepError(vit, "f"));
    }
}
