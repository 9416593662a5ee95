using Loupe.Abstractions;
using Loupe.Core;
using Loupe.Targets;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>Issue 19 item 4: the shipped tiny detector (boxes / scores / labels / probs / objectness outputs), the
/// <c>box</c> target (pytorch-grad-cam's FasterRCNNBoxScoreTarget) and D-RISE's similarity (Petsiuk et al. 2021).
/// References: tests/fixtures/detseg/make_detseg_fixtures.py.</summary>
public class DetectionTests
{
    static string Dir => Path.Combine(TestEnv.Fixtures, "detseg");
    static string Model => Path.Combine(TestEnv.Samples, "models", "shapes-det", "tinydet.onnx");
    static NdArray Fixture(string name) => Npy.Read(Path.Combine(Dir, name));
    static readonly string[] Names = ["boxes", "scores", "labels", "probs", "objectness"];

    static string DetPipeline(string steps, string backend = "onnx") => TestEnv.Pipeline($$"""
        version: 1
        name: det
        model:
          uses: {{backend}}
          with: { path: {{TestEnv.Yaml(Model)}}, flatten_output: false, mean: [0, 0, 0], std: [1, 1, 1] }
          labels: {{TestEnv.Yaml(Path.Combine(TestEnv.Samples, "models", "shapes-det", "labels.txt"))}}
        data:
          uses: npy
          with: { path: {{TestEnv.Yaml(Path.Combine(Dir, "det_input.npy"))}} }
        steps:
        {{steps}}
        """);

    static ITarget Box(BoxOptions o) => new BoxTargetFactory().Create(o, new TargetContext(["square", "disc"], 64, Names));

    /// <summary>The fixture's outputs as a target input (integer labels as the graph gives them).</summary>
    static TargetInput FixtureOutputs()
    {
        var t = Names.ToDictionary(n => n, n => Fixture($"det_{n}.npy").ToTensor());
        t["labels"] = t["labels"].to(ScalarType.Int64);
        return new TargetInput(t["boxes"], l => t[l]);
    }

    [Fact]
    public void TheBoxTargetExplainsTheTopDetectionAsFasterRcnnBoxScoreTarget()
    {
        using var scope = NewDisposeScope();
        var ti = FixtureOutputs();
        var want = Fixture("det_target.npy").Data;                        // per image x1 y1 x2 y2 class
        var top = Box(new BoxOptions { MinScore = 0.3 });
        var selection = top.Select(ti);
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal((long)want[i * 5 + 4], selection.Classes![i]);
            Assert.Equal(want.Skip(i * 5).Take(4).ToArray(), selection.Marks![i]![0].Box!, new FloatTolerance(1e-5f));
        }
        var expected = Fixture("det_box_score.npy").Data;
        Assert.True(TestEnv.RelL2(top.Scores(ti, selection).ToArray<float>(), expected) <= 1e-6);
        // The same detection given as a box and class scores the same; the other class does not match (0).
        var given = Box(new BoxOptions { MinScore = 0.3, Class = want[4] == 0 ? "square" : "disc", Box = want.Take(4).Select(v => (double)v).ToArray() });
        var one = given.Scores(ti, given.Select(ti)).ToArray<float>();
        Assert.Equal(expected[0], one[0], expected[0] * 1e-6f);
        var other = Box(new BoxOptions { MinScore = 0.3, Class = want[4] == 0 ? "disc" : "square", Box = want.Take(4).Select(v => (double)v).ToArray() });
        Assert.Equal(0f, other.Scores(ti, other.Select(ti)).ToArray<float>()[0]);
    }

    /// <summary>all_above: every detection scoring at least the threshold, their scores summed — pytorch-grad-cam's
    /// FasterRCNNBoxScoreTarget over the list of boxes and labels its tutorial takes from the confident detections; on
    /// the unperturbed outputs each matches itself (IoU 1), so the score is Σ (1 + s_k); d-rise refuses several.</summary>
    [Fact]
    public void AllAboveExplainsEveryConfidentDetectionTogether()
    {
        using var scope = NewDisposeScope();
        var ti = FixtureOutputs();
        var scores = Fixture("det_scores.npy");
        long d = scores.Shape[^1];
        foreach (var above in new[] { 0.3, 0.15 })
        {
            var target = Box(new BoxOptions { AllAbove = above });
            var selection = target.Select(ti);
            var got = target.Scores(ti, selection).ToArray<float>();
            for (int i = 0; i < 2; i++)
            {
                var chosen = scores.Data.Skip((int)(i * d)).Take((int)d).Where(v => v >= above).ToArray();
                Assert.Equal(chosen.Length, selection.Marks![i]!.Length);
                Assert.Equal(chosen.Sum(v => 1 + (double)v), got[i], 1e-4);
            }
            if (selection.Marks!.Any(m => m!.Length > 1))
                Assert.Throws<LoupeException>(() => ((IDetectionSimilarity)target).Similarity(ti, selection));
        }
        Assert.Throws<LoupeException>(() => Box(new BoxOptions { AllAbove = 0.3, Class = "disc", Box = [1, 1, 5, 5] }));
    }

    sealed class FloatTolerance(float tol) : IEqualityComparer<float>
    {
        public bool Equals(float a, float b) => Math.Abs(a - b) <= tol * Math.Max(1, Math.Abs(b));
        public int GetHashCode(float v) => 0;
    }

    [Fact]
    public void SaliencyOfABoxMatchesPyTorchAndForwardOnlyMethodsRun()
    {
        var r = TestEnv.Run(DetPipeline("""
              - { id: sal, uses: saliency, target: { box: { min_score: 0.3 } } }
              - { id: cam, uses: grad-cam, with: { layer: body.6 }, target: { box: { min_score: 0.3 } } }
              - { id: eigen, uses: eigen-cam, with: { layer: body.6 }, target: { box: { min_score: 0.3 } } }
              - { id: occ, uses: occlusion, with: { window: 8, stride: 4 }, target: { box: { min_score: 0.3 } } }
              - { id: drise, uses: d-rise, with: { masks: 500, grid: 8 }, target: { box: { min_score: 0.3 } } }
            """));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        var grad = Fixture("det_box_grad.npy").Data.Select(Math.Abs).ToArray();
        var sal = Enumerable.Range(0, 2).SelectMany(i => TestEnv.Artifact(r, $"sal/{i:D5}.saliency.npy").Data).ToArray();
        double err = TestEnv.RelL2(sal, grad);
        Assert.True(err <= 1e-3, $"saliency of the box score: rel L2 {err:E2}");
        // Every overlay draws the explained box; D-RISE's map peaks inside the box.
        var target = Fixture("det_target.npy").Data;
        foreach (var (step, name) in new[] { ("sal", "saliency"), ("cam", "grad-cam"), ("eigen", "eigen-cam"), ("occ", "occlusion"), ("drise", "d-rise") })
        {
            using var png = SixLabors.ImageSharp.Image.Load<Rgb24>(Path.Combine(r.OutDir!, step, $"00000.{name}.png"));
            int marked = 0;
            png.ProcessPixelRows(a => { for (int y = 0; y < a.Height; y++) foreach (var p in a.GetRowSpan(y)) if (p.R == 255 && p.G == 0 && p.B == 160) marked++; });
            Assert.True(marked > 40, $"{step}: {marked} box pixels");
        }
        for (int i = 0; i < 2; i++)
        {
            var map = TestEnv.Artifact(r, $"drise/{i:D5}.d-rise.npy").Data;   // 3×64×64, channels equal
            int best = Array.IndexOf(map, map.Take(64 * 64).Max());
            int bx = best % 64, by = best / 64;
            Assert.True(bx >= target[i * 5] && bx < target[i * 5 + 2] && by >= target[i * 5 + 1] && by < target[i * 5 + 3],
                $"image {i}: d-rise peaks at ({bx}, {by}), outside the box [{string.Join(", ", target.Skip(i * 5).Take(4))}]");
        }
    }

    [Fact]
    public void DRiseSimilarityIsIouTimesClassCosineTimesObjectness()
    {
        using var scope = NewDisposeScope();
        using var prep = PipelineRunner.Prepare(new RunRequest(DetPipeline("  - { id: s, uses: saliency }\n")) { PluginDirectories = [TestEnv.PluginDirectory] });
        var target = Box(new BoxOptions { MinScore = 0.3 });
        var x = Fixture("det_input.npy").ToTensor();
        var masks = Fixture("det_drise_masks.npy").ToTensor();                    // 8×1×64×64
        var expected = Fixture("det_drise_sim.npy").Data;                          // 2×8
        TargetSelection selection;
        using (var cap = prep.Model.Capture(target.RequiredLayers, false))
        using (no_grad())
        {
            var y = prep.Model.Forward(x);
            selection = target.Select(new TargetInput(y, l => cap[l]));
        }
        var sim = target as IDetectionSimilarity ?? throw new InvalidOperationException("box target has no similarity");
        for (int i = 0; i < 2; i++)
        {
            using var cap = prep.Model.Capture(target.RequiredLayers, false);
            using var _ = no_grad();
            var y = prep.Model.Forward(x[i].unsqueeze(0) * masks);
            var s = sim.Similarity(new TargetInput(y, l => cap[l]), selection.Repeat(i, 8)).ToArray<float>();
            double err = TestEnv.RelL2(s, expected.Skip(i * 8).Take(8).ToArray());
            Assert.True(err <= 1e-5, $"image {i}: {string.Join(", ", s)} vs {string.Join(", ", expected.Skip(i * 8).Take(8))}");
        }
    }

    [Fact]
    public void ForwardOnlyMethodsGiveTheSameMapsOnOnnxRuntime()
    {
        // onnx-runtime reads the int64 'labels' graph output as float32 numbers.
        const string steps = """
              - { id: occ, uses: occlusion, with: { window: 8, stride: 4 }, target: { box: { min_score: 0.3 } } }
              - { id: drise, uses: d-rise, with: { masks: 64, grid: 8 }, target: { box: { min_score: 0.3 } } }
              - { id: eigen, uses: eigen-cam, with: { layer: /body/body.7/Relu_output_0 }, target: { box: { min_score: 0.3 } } }
            """;
        var ort = TestEnv.Run(DetPipeline(steps, "onnx-runtime"));
        Assert.True(ort.ExitCode == 0, string.Join("\n", ort.Errors) + ort.Manifest?.ToJsonString());
        var onnx = TestEnv.Run(DetPipeline(steps));
        Assert.True(onnx.ExitCode == 0, string.Join("\n", onnx.Errors) + onnx.Manifest?.ToJsonString());
        foreach (var (step, name) in new[] { ("occ", "occlusion"), ("drise", "d-rise"), ("eigen", "eigen-cam") })
            for (int i = 0; i < 2; i++)
            {
                var a = TestEnv.Artifact(ort, $"{step}/{i:D5}.{name}.npy").Data;
                var b = TestEnv.Artifact(onnx, $"{step}/{i:D5}.{name}.npy").Data;
                double err = TestEnv.RelL2(a, b);
                Assert.True(err <= 1e-4, $"{step} image {i}: onnx-runtime vs onnx rel L2 {err:E2}");
            }
    }

    [Fact]
    public void DetectionTargetsAndDRiseRefuseWhatTheyCannotExplain()
    {
        Assert.Contains("did you mean 'boxes'", Assert.Throws<LoupeException>(() => Box(new BoxOptions { Boxes = "boxs" })).Message);
        Assert.Contains("needs its 'class'", Assert.Throws<LoupeException>(() => Box(new BoxOptions { Box = [0, 0, 8, 8] })).Message);
        var r = TestEnv.Run(DetPipeline("  - { id: d, uses: d-rise, with: { masks: 8 } }\n"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("its target must be a detection target", r.Manifest!.ToJsonString());
    }

    [Fact]
    public void TheShippedConfigRuns()
    {
        var r = TestEnv.Run(Path.Combine(TestEnv.RepoRoot, "configs", "detection.yaml"), Path.Combine(TestEnv.TempDir("detection"), "run"));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "comparison.png")));
        // A detector has no class predictions: each row names the detection its first column explains, and the last
        // column (the top disc) names its own where that differs, under the cell's value range.
        var comparison = r.Manifest!["comparison"]!;
        var rows = comparison["rowLabels"]!.AsArray().Select(l => (string)l!).ToList();
        Assert.All(rows, l => Assert.Matches(@"^shapes\d\.png\n(square|disc) \d\.\d\d at \[", l));
        var captions = comparison["captions"]!.AsArray().Select(row => row!.AsArray().Select(c => (string?)c).ToList()).ToList();
        for (int i = 0; i < rows.Count; i++)
        {
            Assert.All(captions[i].Take(5), c => Assert.DoesNotContain("\n", c!));           // same target as the row: the range only
            bool differs = !rows[i].Contains("\ndisc ");
            if (differs) Assert.Matches(@"\ndisc \d\.\d\d at \[", captions[i][5]!);
            else Assert.DoesNotContain("\n", captions[i][5]!);
        }
        // The HTML report's grid labels its rows the same way.
        var html = File.ReadAllText(Loupe.Core.Report.HtmlReport.Write(r.OutDir!));
        foreach (var row in rows) Assert.Contains(System.Text.Json.JsonSerializer.Serialize(row.Split('\n')[1]), html);
    }
}
