using Loupe.Abstractions;
using Loupe.Targets;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>Issue 19 item 3: torchvision FCN / DeepLabV3 / LRASPP exported to ONNX keep their N×K×H×W output, and the
/// <c>region</c> target is pytorch-grad-cam's SemanticSegmentationTarget. References: tests/fixtures/detseg/make_detseg_fixtures.py.</summary>
public class SegmentationTests
{
    static string Dir => Path.Combine(TestEnv.Fixtures, "detseg");
    static string ModelPath(string m) => m == "lraspp" ? Path.Combine(TestEnv.Samples, "models", "shapes-seg", "lraspp.onnx") : Path.Combine(Dir, m + ".onnx");
    static NdArray Fixture(string name) => Npy.Read(Path.Combine(Dir, name));

    static (string Layer, int Class, long[] Pixels) Info(string m)
    {
        var lines = File.ReadAllLines(Path.Combine(Dir, $"seg_{m}.txt")).Select(l => l.Split(' ')).ToDictionary(p => p[0], p => p[1..]);
        return (lines["layer"][0], int.Parse(lines["class"][0]), lines["mask_pixels"].Select(long.Parse).ToArray());
    }

    static string SegPipeline(string m, string steps, bool flatten = false) => TestEnv.Pipeline($$"""
        version: 1
        name: seg
        model:
          uses: onnx
          with: { path: {{TestEnv.Yaml(ModelPath(m))}}, flatten_output: {{(flatten ? "true" : "false")}}, mean: [0, 0, 0], std: [1, 1, 1] }
          labels: {{TestEnv.Yaml(Path.Combine(TestEnv.Samples, "models", "shapes-seg", "labels.txt"))}}
        data:
          uses: npy
          with: { path: {{TestEnv.Yaml(Path.Combine(Dir, "seg_input.npy"))}} }
        steps:
        {{steps}}
        """);

    static ITarget Region(RegionOptions o) => new RegionTargetFactory().Create(o, new TargetContext(["background", "square", "disc"], 3, []) { Input = new InputSpec(3, 64, 64, [0, 0, 0], [1, 1, 1]) });

    [Theory]
    [InlineData("lraspp")]
    [InlineData("fcn")]
    [InlineData("deeplabv3")]
    public void RegionScoreIsTheClassLogitSummedOverTheArgmaxMask(string m)
    {
        using var scope = NewDisposeScope();
        var (_, k, pixels) = Info(m);
        var output = Fixture($"seg_{m}.out.npy").ToTensor();
        var target = Region(new RegionOptions { Class = k.ToString() });
        var ti = new TargetInput(output, _ => throw new InvalidOperationException());
        var selection = target.Select(ti);
        Assert.Equal(pixels, selection.Marks!.Select(ms => (long)ms![0].Mask!.Count(v => v)).ToArray());
        var scores = target.Scores(ti, selection).ToArray<float>();
        var expected = Fixture($"seg_{m}.score.npy").Data;
        Assert.True(TestEnv.RelL2(scores, expected) <= 1e-6, $"{m}: {string.Join(", ", scores)} vs {string.Join(", ", expected)}");
        // Copies of a row (perturbation methods) keep the row's mask.
        var copies = cat([output[1].unsqueeze(0), output[1].unsqueeze(0)], 0);
        var again = target.Scores(new TargetInput(copies, _ => throw new InvalidOperationException()), selection.Repeat(1, 2)).ToArray<float>();
        Assert.All(again, v => Assert.Equal(expected[1], v, expected[1] * 1e-6f));
    }

    [Theory]
    [InlineData("lraspp")]
    [InlineData("fcn")]
    [InlineData("deeplabv3")]
    public void SaliencyAndGradCamOfARegionMatchPyTorch(string m)
    {
        var (layer, k, _) = Info(m);
        var r = TestEnv.Run(SegPipeline(m, $$"""
              - id: sal
                uses: saliency
                target: { region: { class: {{k}} } }
              - id: cam
                uses: grad-cam
                with: { layer: {{layer}} }
                target: { region: { class: {{k}} } }
            """));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        var grad = Fixture($"seg_{m}.grad.npy").Data.Select(Math.Abs).ToArray();
        var sal = Enumerable.Range(0, 2).SelectMany(i => TestEnv.Artifact(r, $"sal/{i:D5}.saliency.npy").Data).ToArray();
        double e1 = TestEnv.RelL2(sal, grad);
        Assert.True(e1 <= 1e-3, $"{m} saliency: rel L2 {e1:E2}");
        var cam = Enumerable.Range(0, 2).SelectMany(i => TestEnv.Artifact(r, $"cam/{i:D5}.grad-cam-layer.npy").Data).ToArray();
        double e2 = TestEnv.RelL2(cam, Fixture($"seg_{m}.gradcam.npy").Data);
        Assert.True(e2 <= 1e-3, $"{m} grad-cam at {layer}: rel L2 {e2:E2}");
        // The overlay outlines the mask (the mark colour appears) and the manifest says what was explained.
        using var png = SixLabors.ImageSharp.Image.Load<Rgb24>(Path.Combine(r.OutDir!, "cam", "00000.grad-cam.png"));
        int marked = 0;
        png.ProcessPixelRows(a => { for (int y = 0; y < a.Height; y++) foreach (var p in a.GetRowSpan(y)) if (p.R == 255 && p.G == 0 && p.B == 160) marked++; });
        Assert.True(marked > 20, $"{marked} outline pixels");
        Assert.Contains($"region class {k}", r.Manifest!.ToJsonString());
    }

    [Fact]
    public void ABoxOrAMaskFileGiveTheSameRegion()
    {
        using var scope = NewDisposeScope();
        var output = Fixture("seg_lraspp.out.npy").ToTensor();
        var ti = new TargetInput(output, _ => throw new InvalidOperationException());
        var expected = Fixture("seg_box_score.npy").Data;
        var box = Region(new RegionOptions { Class = "square", Box = [8, 16, 40, 48] });
        Assert.True(TestEnv.RelL2(box.Scores(ti, box.Select(ti)).ToArray<float>(), expected) <= 1e-6);
        var dir = TestEnv.TempDir();
        var mask = new float[64 * 64];
        for (int y = 16; y < 48; y++) for (int x = 8; x < 40; x++) mask[y * 64 + x] = 1;
        var npy = Path.Combine(dir, "mask.npy");
        File.WriteAllBytes(npy, Npy.Encode(new NdArray(mask, [64, 64])));
        var fromNpy = Region(new RegionOptions { Class = "1", Mask = npy });
        Assert.True(TestEnv.RelL2(fromNpy.Scores(ti, fromNpy.Select(ti)).ToArray<float>(), expected) <= 1e-6);
        // A PNG at half resolution is resized to the output by nearest neighbour.
        using (var img = new Image<L8>(32, 32))
        {
            for (int y = 8; y < 24; y++) for (int x = 4; x < 20; x++) img[x, y] = new L8(255);
            img.SaveAsPng(Path.Combine(dir, "mask.png"));
        }
        var fromPng = Region(new RegionOptions { Class = "1", Mask = Path.Combine(dir, "mask.png") });
        Assert.True(TestEnv.RelL2(fromPng.Scores(ti, fromPng.Select(ti)).ToArray<float>(), expected) <= 1e-6);
    }

    [Fact]
    public void BadRegionsAreRefusedWithClearMessages()
    {
        Assert.Contains("not both", Assert.Throws<LoupeException>(() => Region(new RegionOptions { Class = "1", Box = [0, 0, 4, 4], Mask = "m.png" })).Message);
        Assert.Contains("did you mean 'disc'", Assert.Throws<LoupeException>(() => Region(new RegionOptions { Class = "disk" })).Message);
        Assert.Contains("x2 > x1", Assert.Throws<LoupeException>(() => Region(new RegionOptions { Class = "1", Box = [9, 0, 4, 4] })).Message);
        // A flattened output (the onnx default) is not a segmentation output: the step fails and says what to set.
        var r = TestEnv.Run(SegPipeline("fcn", "  - { id: sal, uses: saliency, target: { region: { class: 1 } } }\n", flatten: true));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("flatten_output: false", r.Manifest!.ToJsonString());
    }

    [Fact]
    public void TheShippedConfigRuns()
    {
        var r = TestEnv.Run(Path.Combine(TestEnv.RepoRoot, "configs", "segmentation.yaml"), Path.Combine(TestEnv.TempDir("segmentation"), "run"));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "comparison.png")));
    }
}
