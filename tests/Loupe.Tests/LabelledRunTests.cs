using System.Diagnostics;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Core;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>The quickstart run once, for the tests that read its labelled figures and predictions.</summary>
public sealed class QuickstartRun
{
    public RunResult Result { get; } = TestEnv.Run(Path.Combine(TestEnv.RepoRoot, "configs", "quickstart.yaml"), Path.Combine(TestEnv.TempDir("quickstart"), "run"));
    public JsonNode Manifest => Result.Manifest!;
}

/// <summary>What a person reads in a run's outputs: labelled comparison (checked by OCR), predictions, display styles.</summary>
public class LabelledRunTests(QuickstartRun quickstart) : IClassFixture<QuickstartRun>
{
    static readonly string[] Classes = File.ReadAllLines(Path.Combine(TestEnv.Samples, "models", "fashion-cnn", "labels.txt")).Where(l => l.Trim().Length > 0).ToArray();

    [Fact]
    public void OcrOfTheQuickstartComparisonFindsEveryStepAndAClassName()
    {
        Assert.True(quickstart.Result.ExitCode == 0, string.Join("\n", quickstart.Result.Errors));
        var png = Path.Combine(quickstart.Result.OutDir!, "comparison.png");
        // Tesseract 5 (Debian tesseract-ocr, installed by scripts/setup.sh); sparse-text mode suits labels beside images.
        var psi = new ProcessStartInfo("tesseract") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { png, "-", "--psm", "11" }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var text = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, p.StandardError.ReadToEnd());
        var columns = quickstart.Manifest["comparison"]!["columns"]!.AsArray().Select(c => ((string)c!).Split('/')[0]).ToList();
        Assert.Equal(["saliency", "grad-cam", "occlusion"], columns);
        foreach (var id in columns) Assert.Contains(id, text);
        Assert.Contains(Classes, c => text.Contains("pred: " + c, StringComparison.Ordinal));
        Assert.Contains("true:", text);
        // Each cell's value range is recorded with its overlay and printed under the cell (issue 23: the numbers the
        // colours stand for): every comparison cell has one, and OCR reads the upper ends of most of them.
        var rows = quickstart.Manifest["comparison"]!["rows"]!.AsArray().Select(r => (string)r!).ToList();
        var ranges = quickstart.Manifest["artifacts"]!.AsArray()
            .Where(a => (string?)a!["kind"] == "display" && columns.Contains((string)a!["step"]!) && rows.Contains((string?)a!["input"] ?? ""))
            .Select(a => (string?)a!["range"]).ToList();
        Assert.Equal(columns.Count * rows.Count, ranges.Count);
        Assert.All(ranges, r => Assert.Matches(@"^-?[0-9.e-]+ … [0-9.e+-]+$", r ?? "(none)"));
        int read = ranges.Count(r => text.Contains(r!.Split(' ')[^1], StringComparison.Ordinal));
        Assert.True(read >= ranges.Count / 2, $"OCR read {read} of {ranges.Count} range ends: {string.Join(", ", ranges)}\n{text}");
        // The figure itself, against its golden copy (overlays may move a level or two between libtorch builds).
        FigureTests.AssertGolden("quickstart-comparison", Png.Load(png), 0.01, 2.0);
    }

    [Fact]
    public void TheReportGridShowsPredictionsReadFromThePredictionsFile()
    {
        var html = Loupe.Core.Report.HtmlReport.Build(Loupe.Core.Report.RunFolder.Open(quickstart.Result.OutDir!));
        var first = Predictions.Read(quickstart.Manifest, quickstart.Result.OutDir!).First();
        var top = first["top"]![0]!;
        Assert.Contains($"{(string?)top["label"]} {((double)top["p"]!).ToString("0.0%", System.Globalization.CultureInfo.InvariantCulture)}", html);
        Assert.Contains($"true: {(string?)first["labelName"]}", html);
    }

    [Fact]
    public void PredictionsAreTheSoftmaxTopKOfTheModelWithTrueLabels()
    {
        var preds = quickstart.Manifest["predictions"]!;
        Assert.Equal(Predictions.DefaultTopK, (int)preds["topK"]!);
        // The records are streamed to their own file in the run folder; the manifest counts and names it.
        Assert.Equal(Predictions.FileName, (string)preds["file"]!);
        Assert.Null(preds["inputs"]);
        var inputs = Predictions.Read(quickstart.Manifest, quickstart.Result.OutDir!).ToList();
        Assert.Equal(32, inputs.Count);
        Assert.Equal(32, (long)preds["count"]!);
        Assert.Equal(32, File.ReadLines(Path.Combine(quickstart.Result.OutDir!, Predictions.FileName)).Count());
        Assert.False(File.Exists(Path.Combine(quickstart.Result.OutDir!, Predictions.FileName + ".part")));
        // Independent check: logits of the shipped model on the first 4 inputs, softmax in double precision here.
        using var scope = NewDisposeScope();
        using var prep = PipelineRunner.Prepare(new RunRequest(Path.Combine(TestEnv.RepoRoot, "configs", "quickstart.yaml")) { PluginDirectories = [TestEnv.PluginDirectory] });
        var batch = prep.Data!.Read(prep.Input, 4, default).First();
        var logits = prep.Model.Forward(prep.Input.Normalize(batch.Pixels)).to(ScalarType.Float64).contiguous().ToArray<double>();
        for (int i = 0; i < 4; i++)
        {
            var row = logits.AsSpan(i * 10, 10).ToArray();
            double max = row.Max(), z = row.Sum(v => Math.Exp(v - max));
            var order = Enumerable.Range(0, 10).OrderByDescending(k => row[k]).Take(5).ToList();
            var top = inputs[i]!["top"]!.AsArray();
            Assert.Equal(batch.Ids[i], (string)inputs[i]!["id"]!);
            for (int j = 0; j < 5; j++)
            {
                Assert.Equal(order[j], (long)top[j]!["class"]!);
                Assert.Equal(Classes[order[j]], (string)top[j]!["label"]!);
                double want = Math.Exp(row[order[j]] - max) / z, got = (double)top[j]!["p"]!;
                Assert.True(Math.Abs(want - got) <= 2e-6, $"input {i} top {j + 1}: p {got} vs softmax {want}"); // stored to 6 decimals
            }
            Assert.Equal(batch.Labels![i], (long)inputs[i]!["label"]!);
            Assert.Equal(Classes[batch.Labels[i]], (string)inputs[i]!["labelName"]!);
        }
        batch.Dispose();
    }

    [Fact]
    public void DisplayStylesChangeThePicturesNeverTheRawMaps()
    {
        var steps = """
              - { id: sal, uses: saliency }
              - id: styled
                uses: saliency
                display: { colormap: grey, sign: all, outlier_perc: 5, opacity: 0.8 }
            """;
        var path = Loupe.Testing.FashionPipelines.Write("display", "display", steps, 4, 4, "output: { dir: out }\n");
        var r = TestEnv.Run(path, Path.Combine(Path.GetDirectoryName(path)!, "run"));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        var a = File.ReadAllBytes(Path.Combine(r.OutDir!, "sal", "00000.saliency.npy"));
        var b = File.ReadAllBytes(Path.Combine(r.OutDir!, "styled", "00000.saliency.npy"));
        Assert.Equal(a, b);
        var pa = Png.Load(Path.Combine(r.OutDir!, "sal", "00000.saliency.png"));
        var pb = Png.Load(Path.Combine(r.OutDir!, "styled", "00000.saliency.png"));
        Assert.NotEqual(pa.Pixels, pb.Pixels);
        // Grey colour map: every overlay pixel of a grey image stays grey.
        Assert.All(Enumerable.Range(0, pb.Pixels.Length / 3), p => Assert.True(pb.Pixels[p * 3] == pb.Pixels[p * 3 + 1] && pb.Pixels[p * 3 + 1] == pb.Pixels[p * 3 + 2]));
        var rec = r.Manifest!["steps"]![1]!["display"]!;
        Assert.Equal("grey", (string)rec["colormap"]!);
        Assert.Equal("all", (string)rec["sign"]!);
        Assert.Null(r.Manifest["steps"]![0]!["display"]);
    }

    [Fact]
    public void SettingsDisplayIsTheDefaultAndBadValuesAreNamed()
    {
        var steps = """
              - id: sal
                uses: saliency
                display: { colourmap: grey, sign: sideways }
            """;
        var path = Loupe.Testing.FashionPipelines.Write("display-bad", "display", steps, 4, 4, "output: { dir: out }\n");
        var text = File.ReadAllText(path).Replace("settings: { batch_size: 4 }", "settings: { batch_size: 4, display: { opacity: 2 }, top_k: -1 }");
        File.WriteAllText(path, text);
        var e = Assert.Throws<PipelineException>(() => PipelineRunner.Prepare(new RunRequest(path) { PluginDirectories = [TestEnv.PluginDirectory] }));
        var all = string.Join("\n", e.Errors);
        Assert.Contains("colourmap", all);
        Assert.Contains("colormap", all); // did you mean
        Assert.Contains("sideways", all);
        Assert.Contains("settings.display", all);
        Assert.Contains("top_k", all);
    }
}
