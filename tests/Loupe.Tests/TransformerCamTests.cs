using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>CAMs on transformer token layers (reshape) and attention rollout, on the small ViT of
/// tests/fixtures/onnx/families (references: tests/fixtures/onnx/make_vit_cam_fixtures.py).</summary>
public class TransformerCamTests
{
    static string Onnx(string name) => TestEnv.Yaml(Path.Combine(TestEnv.Fixtures, "onnx", name));

    static string VitPipeline(string steps) => TestEnv.Pipeline($$"""
        version: 1
        name: vit
        model:
          uses: onnx
          with: { path: {{Onnx("families/vit.onnx")}} }
        data:
          uses: npy
          with: { path: {{Onnx("vit_input.npy")}} }
        steps:
        {{steps}}
        """);

    const string Ln1 = "/encoder/layers/encoder_layer_1/ln_1/LayerNormalization_output_0";
    const string Att = "/encoder/layers/encoder_layer_{0}/self_attention/Softmax_output_0";

    static void Close(Loupe.Core.RunResult r, string step, string artifact, string fixture, double tol)
    {
        var actual = Enumerable.Range(0, 2).SelectMany(i => TestEnv.Artifact(r, $"{step}/{i:D5}.{artifact}.npy").Data).ToArray();
        var expected = Npy.Read(Path.Combine(TestEnv.Fixtures, "onnx", fixture)).Data;
        double err = TestEnv.RelL2(actual, expected);
        Assert.True(err <= tol, $"{step}: rel L2 {err:E2} against {fixture}");
    }

    [Fact]
    public void GradCamOnViTTokensMatchesPytorchGradCamsReshapeTransform()
    {
        // reshape: auto finds the class token (17 = 1 + 4²); 'vit' says it explicitly; both give pytorch-grad-cam's map.
        // The second step names the layer by its PyTorch module path, which the onnx backend resolves to the same value.
        var r = TestEnv.Run(VitPipeline($"""
              - id: auto
                uses: grad-cam
                with: {"{"} layer: "{Ln1}" {"}"}
              - id: vit
                uses: grad-cam
                with: {"{"} layer: encoder.layers.encoder_layer_1.ln_1, reshape: vit {"}"}
              - id: roll
                uses: attention-rollout
                with: {"{"} layers: ["{string.Format(Att, 0)}", "{string.Format(Att, 1)}"] {"}"}
            """));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Close(r, "auto", "grad-cam-layer", "vit_gradcam_ln1.npy", 1e-4);
        Close(r, "vit", "grad-cam-layer", "vit_gradcam_ln1.npy", 1e-4);
        Close(r, "roll", "attention-rollout-grid", "vit_rollout.npy", 1e-5);
        Assert.Equal([32L, 32], TestEnv.Artifact(r, "roll/00000.attention-rollout.npy").Shape);
    }

    /// <summary>An explicit token grid (pytorch-grad-cam's reshape_transform height and width): [4, 4] is the grid auto
    /// finds; [2, 8] lays the same 16 patch tokens out row by row, so Grad-CAM's layer map holds the same values in
    /// that shape (its channel weights are token means, unchanged); [1, 17] takes every token, the class token too; a
    /// grid of more tokens than the layer's, or one beside reshape nhwc, is refused at validation.</summary>
    [Fact]
    public void ExplicitTokenGridsAreReshapeTransformsHeightAndWidth()
    {
        var r = TestEnv.Run(VitPipeline($"""
              - id: g44
                uses: grad-cam
                with: {"{"} layer: "{Ln1}", token_grid: [4, 4] {"}"}
              - id: g28
                uses: grad-cam
                with: {"{"} layer: "{Ln1}", reshape: vit, token_grid: [2, 8] {"}"}
              - id: all
                uses: grad-cam
                with: {"{"} layer: "{Ln1}", reshape: tokens, token_grid: [1, 17] {"}"}
            """));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Close(r, "g44", "grad-cam-layer", "vit_gradcam_ln1.npy", 1e-4);
        for (int i = 0; i < 2; i++)
        {
            var wide = TestEnv.Artifact(r, $"g28/{i:D5}.grad-cam-layer.npy");
            Assert.Equal([2L, 8], wide.Shape);
            var square = TestEnv.Artifact(r, $"g44/{i:D5}.grad-cam-layer.npy").Data;
            Assert.True(TestEnv.RelL2(wide.Data, square) < 1e-6, $"input {i}: the 2×8 grid is not the 4×4 one's tokens");
            Assert.Equal([1L, 17], TestEnv.Artifact(r, $"all/{i:D5}.grad-cam-layer.npy").Shape);
        }
        var bad = TestEnv.Run(VitPipeline($"""
              - id: big
                uses: grad-cam
                with: {"{"} layer: "{Ln1}", token_grid: [5, 5] {"}"}
              - id: nhwc
                uses: grad-cam
                with: {"{"} layer: "{Ln1}", reshape: nhwc, token_grid: [4, 4] {"}"}
              - id: odd
                uses: grad-cam
                with: {"{"} layer: "{Ln1}", token_grid: [4] {"}"}
            """));
        Assert.NotEqual(0, bad.ExitCode);
        var all = string.Join("\n", bad.Errors);
        Assert.Contains("token_grid 5×5 holds 25 tokens; the layer has 17", all);
        Assert.Contains("does not apply with reshape 'nhwc'", all);
        Assert.Contains("give [height, width]", all);
        // On a CNN's N×C×H×W layer a token grid has nothing to lay out: refused, not ignored.
        var cnn = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: g, uses: grad-cam, with: { layer: relu3, token_grid: [7, 7] } }
            """));
        Assert.NotEqual(0, cnn.ExitCode);
        Assert.Contains("token_grid 7×7 lays out a token layer N×T×C", string.Join("\n", cnn.Errors));
    }

    /// <summary>Ablation-CAM under pytorch-grad-cam's convention on a ViT's ln_1 (negative values), as its
    /// AblationLayerVit: channel k ablated in every token, the class token included, to the minimum of the layer's whole
    /// output less 1e7 per row of a batch of 8. (Whether the class token's values count in that minimum moves the value
    /// by less than float32's step at 10⁷ on this model; Loupe follows the library there too.)</summary>
    [Fact]
    public void AblationCamOnViTTokensAblatesAsPytorchGradCamsVitLayer()
    {
        var r = TestEnv.Run(VitPipeline($"""
              - id: pgc
                uses: ablation-cam
                with: {"{"} layer: "{Ln1}", convention: pytorch-grad-cam, batch_size: 8 {"}"}
            """));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Close(r, "pgc", "ablation-cam-layer", "vit_pgc_ablationcam_ln1_b8.npy", 1e-4);
    }

    [Fact]
    public void ActivationsLayTokensOutOnTheirGrid()
    {
        // reshape: auto on the ViT's N×17×16 tokens: channel c of the map at (y, x) is token 1 + 4y + x, channel c.
        var path = VitPipeline($"""
              - id: act
                uses: activations
                with: {"{"} layer: "{Ln1}", channels: [0, 5], threshold: {"{"} mode: quantile, quantile: 0.9 {"}"} {"}"}
            """);
        var r = TestEnv.Run(path);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        using var scope = NewDisposeScope();
        using var prep = Loupe.Core.PipelineRunner.Prepare(new Loupe.Core.RunRequest(path) { PluginDirectories = [TestEnv.PluginDirectory] });
        var x = Npy.Read(Path.Combine(TestEnv.Fixtures, "onnx", "vit_input.npy")).ToTensor();
        using var cap = prep.Model.Capture([Ln1], forGradients: false);
        using (no_grad()) prep.Model.Forward(x);
        var tokens = cap[Ln1].contiguous().ToArray<float>();                 // 2×17×16
        for (int i = 0; i < 2; i++)
        {
            var maps = TestEnv.Artifact(r, $"act/{i:D5}.activations.npy");
            Assert.Equal([2L, 4, 4], maps.Shape);
            int[] channels = [0, 5];
            for (int c = 0; c < 2; c++)
                for (int y = 0; y < 4; y++)
                    for (int xx = 0; xx < 4; xx++)
                        Assert.Equal(tokens[(i * 17 + 1 + 4 * y + xx) * 16 + channels[c]], maps.Data[(c * 4 + y) * 4 + xx], 1e-6f);
        }
        // Thresholds are per channel of the grid (16 channels), from the shared dataset pass over the same layout.
        Assert.Equal([16L], TestEnv.Artifact(r, "act/thresholds.npy").Shape);
        var none = TestEnv.Run(VitPipeline($"""
              - id: act
                uses: activations
                with: {"{"} layer: "{Ln1}", reshape: none {"}"}
            """));
        Assert.Equal(2, none.ExitCode);
        Assert.Contains(none.Errors, e => e.Message.Contains("reshape 'none' needs a 4-D layer"));
    }

    [Fact]
    public void AMistypedModulePathSuggestsTheNearestModule()
    {
        var r = TestEnv.Run(VitPipeline("""
              - id: cam
                uses: grad-cam
                with: { layer: encoder.layers.encoder_layer_1.ln1 }
            """));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(r.Errors, e => e.Message.Contains("did you mean 'encoder.layers.encoder_layer_1.ln_1'"));
    }

    [Fact]
    public void ATokenLayerThatCannotBeAGridIsRefusedAtValidation()
    {
        var path = VitPipeline($"""
              - id: cam
                uses: grad-cam
                with: {"{"} layer: "{Ln1}", reshape: tokens {"}"}
            """);
        var r = TestEnv.Run(path);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(r.Errors, e => e.Message.Contains("reshape 'tokens': 17 tokens are not a grid") && e.Line == 12);
    }

    [Fact]
    public void ReshapesLayOutTokensAndChannelsLastAsChannelsFirstGrids()
    {
        using var scope = NewDisposeScope();
        var nhwc = arange(2 * 3 * 3 * 5, dtype: ScalarType.Float32).view(2, 3, 3, 5);
        Assert.Equal((LayerReshape.Nhwc, (string?)null), LayerReshapes.Resolve(LayerReshape.Auto, nhwc.shape));
        var g = LayerReshapes.ToGrid(nhwc, LayerReshape.Nhwc);
        Assert.Equal([2L, 5, 3, 3], g.shape);
        Assert.Equal(nhwc[1, 2, 0, 4].item<float>(), g[1, 4, 2, 0].item<float>());
        var tokens = arange(2 * 10 * 4, dtype: ScalarType.Float32).view(2, 10, 4);   // class token + 3×3
        Assert.Equal(LayerReshape.Vit, LayerReshapes.Resolve(LayerReshape.Auto, tokens.shape).Mode);
        var t = LayerReshapes.ToGrid(tokens, LayerReshape.Vit);
        Assert.Equal([2L, 4, 3, 3], t.shape);
        Assert.Equal(tokens[0, 1 + 3 * 1 + 2, 3].item<float>(), t[0, 3, 1, 2].item<float>());   // token (1, 2) of the grid
        Assert.Equal(LayerReshape.None, LayerReshapes.Resolve(LayerReshape.Auto, [2, 8, 7, 7]).Mode);
        Assert.NotNull(LayerReshapes.Resolve(LayerReshape.Auto, [2, 12, 4]).Error);   // 12 − 1, 2, 5, 9: no square
    }

    /// <summary>Leading tokens that are not patches besides the class token (pytorch-grad-cam's reshape_transform
    /// tensor[:, k:, :]): DeiT's class + distillation tokens (198 = 2 + 14×14), a ViT with 4 registers (201 = 5 + 14×14).</summary>
    [Fact]
    public void DistillationAndRegisterTokensAreDroppedWithTheClassToken()
    {
        using var scope = NewDisposeScope();
        foreach (var (t, k) in new[] { (198L, 2L), (201L, 5L), (197L, 1L) })
        {
            var tokens = arange(2 * t * 3, dtype: ScalarType.Float32).view(2, t, 3);
            Assert.Equal((LayerReshape.Vit, (string?)null), LayerReshapes.Resolve(LayerReshape.Auto, tokens.shape, (224, 224)));
            var grid = LayerReshapes.ToGrid(tokens, LayerReshape.Vit, (224, 224));
            Assert.Equal([2L, 3, 14, 14], grid.shape);
            Assert.Equal(tokens[1, k + 14 * 3 + 5, 2].item<float>(), grid[1, 2, 3, 5].item<float>());   // patch (3, 5)
        }
    }

    /// <summary>A ViT on a non-square image (224×320, patches of 16: 14×20 tokens after the class token) lays its tokens
    /// on the image's aspect, row by row, as pytorch-grad-cam's reshape_transform with height 14 and width 20; without
    /// the image size only square grids are known.</summary>
    [Fact]
    public void TokensOfANonSquareImageLieOnAGridOfItsAspect()
    {
        using var scope = NewDisposeScope();
        Assert.Equal((14L, 20L), LayerReshapes.Grid(280, (224, 320)));
        Assert.Equal((20L, 14L), LayerReshapes.Grid(280, (320, 224)));
        Assert.Equal((14L, 14L), LayerReshapes.Grid(196, (224, 224)));
        Assert.Equal((16L, 16L), LayerReshapes.Grid(256));
        Assert.Equal((-1L, -1L), LayerReshapes.Grid(280));
        var tokens = arange(2 * 281 * 3, dtype: ScalarType.Float32).view(2, 281, 3);    // class token + 14×20
        Assert.NotNull(LayerReshapes.Resolve(LayerReshape.Auto, tokens.shape).Error);
        Assert.Equal((LayerReshape.Vit, (string?)null), LayerReshapes.Resolve(LayerReshape.Auto, tokens.shape, (224, 320)));
        var grid = LayerReshapes.ToGrid(tokens, LayerReshape.Vit, (224, 320));
        Assert.Equal([2L, 3, 14, 20], grid.shape);
        Assert.Equal(tokens[1, 1 + 20 * 5 + 7, 2].item<float>(), grid[1, 2, 5, 7].item<float>());   // token (5, 7): row 5, column 7
        Assert.Contains("224×320", LayerReshapes.Resolve(LayerReshape.Tokens, [1, 283, 3], (224, 320)).Error);
    }
}
