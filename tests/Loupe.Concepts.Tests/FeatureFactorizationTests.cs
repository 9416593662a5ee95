using System.Text.Json;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using Loupe.Analysis.Concepts;

namespace Loupe.Concepts.Tests;

/// <summary>deep-feature-factorization against pytorch-grad-cam's DeepFeatureFactorization as it documents it, with
/// scikit-learn's own NMF (tests/fixtures/make_dff_fixtures.py), on the fixture demo CNN and its 4 inputs.</summary>
public class FeatureFactorizationTests
{
    static string Root(string name) => Path.Combine(Env.RepoRoot, "tests", "fixtures", name);
    static string Yaml(string path) => Loupe.Testing.RepoPaths.Yaml(path);

    static string Pipeline(string steps, int batchSize)
    {
        var dir = Loupe.Testing.RepoPaths.TempDir("loupe-dff");
        var path = Path.Combine(dir, "dff.yaml");
        File.WriteAllText(path, $"""
            version: 1
            name: dff
            model:
              uses: torchvision
              with: {"{"} architecture: fashion-cnn, weights: {Yaml(Root("fashion_cnn_seed0.pt"))} {"}"}
            data:
              uses: npy
              with: {"{"} path: {Yaml(Root("fashion_input.npy"))} {"}"}
            settings: {"{"} batch_size: {batchSize} {"}"}
            steps:
            {steps}
            """);
        return path;
    }

    /// <summary>A float64 .npy's values (little-endian, C order).</summary>
    static double[] Float64(string name)
    {
        var bytes = File.ReadAllBytes(Env.Fixture(name));
        int header = BitConverter.ToUInt16(bytes, 8);
        Assert.Contains("'<f8'", System.Text.Encoding.ASCII.GetString(bytes, 10, header));
        var values = new double[(bytes.Length - 10 - header) / 8];
        Buffer.BlockCopy(bytes, 10 + header, values, 0, values.Length * 8);
        return values;
    }

    static float[] Stack(Loupe.Core.RunResult r, string name) =>
        Enumerable.Range(0, 4).SelectMany(i => Env.Artifact(r, $"d/{i:D5}.{name}.npy").Data).ToArray();

    static void Close(float[] actual, string fixture, double tol)
    {
        var err = Env.RelErr(actual, Npy.Read(Env.Fixture(fixture)).Data);
        Assert.True(err <= tol, $"{fixture}: relative error {err:E2} > {tol:E0}");
    }

    [Fact]
    public void StandardNormalsAreNumpysLegacyDraws()
    {
        var rng = new NumpyRandomState(0);
        foreach (var e in Float64("dff_normals.npy")) Assert.Equal(e, rng.StandardNormal(), 14);
    }

    [Fact]
    public void CoordinateDescentMatchesScikitLearnsNmf()
    {
        var x = Npy.Read(Env.Fixture("dff_nmf_x.npy"));
        var (w, h, iterations) = CoordinateDescentNmf.Fit(x.Data, (int)x.Shape[0], (int)x.Shape[1], 4);
        Close(w, "dff_nmf_w.npy", 1e-4);
        Close(h, "dff_nmf_h.npy", 1e-4);
        var expected = (long)Float64("dff_nmf_iter.npy")[0];
        Assert.Equal(expected, iterations);
    }

    /// <summary>One input at a time (run_dff_on_image) and two inputs together (the batch pytorch-grad-cam is given),
    /// the pairs straddling the run's batches of 3: concepts (W + channel minima), layer maps (H), maps scaled and
    /// resized, and the concepts through the linear head.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void ConceptsAndMapsAreThoseOfTheLibrary(int images)
    {
        var r = Env.Run(Pipeline($"  - {{ id: d, uses: deep-feature-factorization, with: {{ layer: relu3, components: 5, images: {images}, head: fc }} }}\n", 3));
        Env.Succeeded(r, "d");
        Close(Stack(r, "concepts"), $"dff_relu3_concepts_b{images}.npy", 2e-4);
        Close(Stack(r, "dff-layer"), $"dff_relu3_layer_b{images}.npy", 2e-4);
        Close(Stack(r, "dff"), $"dff_relu3_maps_b{images}.npy", 2e-4);
        Close(Stack(r, "concept-scores"), $"dff_relu3_outputs_b{images}.npy", 2e-4);
        // Inputs factorised together share their concepts; one by one they do not.
        Assert.Equal(images == 2, Env.Artifact(r, "d/00000.concepts.npy").Data.SequenceEqual(Env.Artifact(r, "d/00001.concepts.npy").Data));
        // Each concept is named by its two most probable classes, in order.
        var inputs = Env.Json(r, Path.Combine("d", "concept-labels.json")).GetProperty("inputs");
        Assert.Equal(4, inputs.GetArrayLength());
        Assert.Equal("00000", inputs[0].GetProperty("id").GetString());
        var labels = inputs[0].GetProperty("concepts");
        Assert.Equal(5, labels.GetArrayLength());
        var first = labels[0].GetProperty("classes");
        Assert.Equal(2, first.GetArrayLength());
        Assert.True(first[0].GetProperty("probability").GetDouble() >= first[1].GetProperty("probability").GetDouble());
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "d", "dff-grid.png")));
    }

    /// <summary>A transformer's token layer (the small ViT's ln_1, class token dropped by reshape: vit): one map per
    /// concept at the patch grid and at the input, the concepts one per channel, the NMF's start and descent as on a CNN.</summary>
    [Fact]
    public void ATokenLayerIsFactorisedOnItsPatchGrid()
    {
        var onnx = Path.Combine(Env.RepoRoot, "tests", "fixtures", "onnx");
        var dir = Loupe.Testing.RepoPaths.TempDir("loupe-dff-vit");
        var path = Path.Combine(dir, "vit.yaml");
        File.WriteAllText(path, $$"""
            version: 1
            model: { uses: onnx, with: { path: {{Yaml(Path.Combine(onnx, "families", "vit.onnx"))}} } }
            data: { uses: npy, with: { path: {{Yaml(Path.Combine(onnx, "vit_input.npy"))}} } }
            steps:
              - { id: d, uses: deep-feature-factorization, with: { layer: /encoder/layers/encoder_layer_1/ln_1/LayerNormalization_output_0, reshape: vit, components: 3 } }
            """);
        var r = Env.Run(path);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        var layer = Env.Artifact(r, "d/00000.dff-layer.npy");
        var map = Env.Artifact(r, "d/00000.dff.npy");
        var concepts = Env.Artifact(r, "d/00000.concepts.npy");
        Assert.Equal(3, layer.Shape[0]);
        Assert.Equal(3, map.Shape[0]);
        Assert.Equal(3, concepts.Shape[1]);
        Assert.True(map.Shape[1] > layer.Shape[1], "the maps are resized to the input");
        // Each map min-max scaled: its range is [0, 1) unless the concept is absent from the input.
        for (int j = 0; j < 3; j++)
        {
            var m = map.Data.Skip(j * (int)(map.Shape[1] * map.Shape[2])).Take((int)(map.Shape[1] * map.Shape[2])).ToArray();
            Assert.InRange(m.Min(), -1e-6f, 1e-6f);
            Assert.InRange(m.Max(), 0f, 1f);
        }
    }

    [Fact]
    public void AHeadWithoutALinearWeightIsRefusedAndImagesAboveOneCannotBeSharded()
    {
        var r = Env.Run(Pipeline("  - { id: d, uses: deep-feature-factorization, with: { layer: relu3, head: relu3 } }\n", 4));
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains(r.Errors, e => e.ToString().Contains("option 'head'", StringComparison.Ordinal));
        Assert.NotNull(new FeatureFactorization().Unshardable(new FeatureFactorizationOptions { Layer = "relu3", Images = 2 }));
        Assert.Null(new FeatureFactorization().Unshardable(new FeatureFactorizationOptions { Layer = "relu3" }));
    }
}
