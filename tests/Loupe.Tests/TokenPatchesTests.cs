using Loupe.Abstractions;
using System.Text.Json;

namespace Loupe.Tests;

/// <summary><c>max-patches</c> on a ViT's tokens and a ConvNeXt block's channels-last LayerNorm (the <c>reshape</c>
/// option, <c>auto</c> and explicit), against PyTorch: the same top-k units per channel and each unit's receptive
/// field, which the reference takes as the bounding box of that unit's own gradient support
/// (tests/fixtures/onnx/make_token_patches_fixtures.py).</summary>
public class TokenPatchesTests
{
    static string Onnx(string name) => TestEnv.Yaml(Path.Combine(TestEnv.Fixtures, "onnx", name));

    static void Check(string family, string layer, string reshape, string fixture, int[] channels)
    {
        var path = TestEnv.Pipeline($$"""
            version: 1
            name: token-patches
            model:
              uses: onnx
              with: { path: {{Onnx($"families/{family}.onnx")}} }
            data:
              uses: npy
              with: { path: {{Onnx($"mp_{family}_input.npy")}} }
            steps:
              - id: mp
                uses: max-patches
                with: { layer: {{layer}}, reshape: {{reshape}}, channels: [{{string.Join(", ", channels)}}], top: 5, probes: 4 }
            """);
        var r = TestEnv.Run(path);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        string F(string what) => Path.Combine(TestEnv.Fixtures, "onnx", $"mp_{fixture}_{what}.npy");
        var values = TestEnv.Artifact(r, "mp/top-values.npy");
        var expected = Npy.Read(F("values"));
        Assert.Equal(expected.Shape, values.Shape);
        for (int i = 0; i < expected.Data.Length; i++)
            Assert.True(Math.Abs(values.Data[i] - expected.Data[i]) <= 1e-4 * (1 + Math.Abs(expected.Data[i])), $"{fixture}: value {i}: {values.Data[i]} vs {expected.Data[i]}");
        Assert.Equal(Npy.Read(F("positions")).Data, TestEnv.Artifact(r, "mp/top-positions.npy").Data);

        var boxes = Npy.Read(F("boxes")).Data;
        var index = JsonDocument.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "mp", "index.json"))).RootElement.GetProperty("channels");
        for (int c = 0; c < channels.Length; c++)
        {
            var entries = index.GetProperty(channels[c].ToString(System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal(5, entries.GetArrayLength());
            for (int t = 0; t < 5; t++)
            {
                var box = entries[t].GetProperty("box").EnumerateArray().Select(v => (float)v.GetInt32()).ToArray();
                Assert.Equal(boxes.Skip((c * 5 + t) * 4).Take(4).ToArray(), box);
            }
        }
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "mp", $"channel-{channels[0]:D4}.png")));
    }

    [Theory]
    [InlineData("auto")]
    [InlineData("vit")]
    public void ViTTokensBeforeAttentionSeeTheirOwnPatch(string reshape) =>
        Check("vit", "encoder.layers.encoder_layer_0.ln_1", reshape, "vit_ln1_0", [0, 3, 9]);

    [Fact]
    public void ViTTokensAfterAttentionSeeTheWholeImage() =>
        Check("vit", "encoder.layers.encoder_layer_1.ln_1", "auto", "vit_ln1_1", [2, 15]);

    [Theory]
    [InlineData("auto")]
    [InlineData("nhwc")]
    public void ConvNeXtChannelsLastUnitsSeeTheirConvolutionalField(string reshape) =>
        Check("convnext", "features.1.0.block.2", reshape, "convnext_ln", [1, 6]);

    [Fact]
    public void ALayerThatCannotBeLaidOutIsRefusedAtValidation()
    {
        var r = TestEnv.Run(TestEnv.Pipeline($$"""
            version: 1
            name: token-patches
            model:
              uses: onnx
              with: { path: {{Onnx("families/vit.onnx")}} }
            data:
              uses: npy
              with: { path: {{Onnx("mp_vit_input.npy")}} }
            steps:
              - id: mp
                uses: max-patches
                with: { layer: encoder.layers.encoder_layer_1.ln_1, reshape: tokens }
            """));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(r.Errors, e => e.Message.Contains("reshape 'tokens': 17 tokens are not a grid"));
    }
}
