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
        Assert.Equal(19.0 / 20, w.Sum(), 12);
    }

    [Fact]
    public void PytorchGradCamRescalesAfterResizingAlsoForOneLayerOnANonSquareInput()
    {
        var r = Run(Pipeline("conv_input_20x30.npy", 20, 30, """
              - { id: gc, uses: grad-cam, with: { layer: relu3, convention: pytorch-grad-cam } }
              - { id: lc, uses: layer-cam, with: { layers: [relu2, relu3], convention: pytorch-grad-cam } }
            """));
        var gc = TechniqueTests.Stack(r, "gc", "grad-cam", 2);
        TechniqueTests.Close(gc, "conv_pgc_gradcam_20x30.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "lc", "layer-cam", 2), "conv_pgc_layercam_multi_20x30.npy", 1e-4);
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
        // The Captum-style default keeps align_corners = false: on a 2×2 layer that is a different map (5 % here).
        var other = TechniqueTests.Stack(r, "scc", "score-cam-layer", 2);
        Assert.True(TestEnv.RelL2(other, Npy.Read(TestEnv.Fixture("conv_scorecam_pgc_8x8_layer.npy")).Data) > 1e-2);
    }
}
