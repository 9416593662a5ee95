using System.Text.Json.Nodes;
using Loupe.Testing;

namespace Loupe.Report.Tests;

/// <summary><c>loupe compare</c> on real runs.</summary>
public class CompareTests
{
    static JsonObject Step(JsonNode compare, string id) => (JsonObject)compare["steps"]!.AsArray().First(s => (string?)s!["id"] == id)!;

    [Fact]
    public async Task TwoRunsOfOnePipelineWithOtherOptionsAndSeedShowArrayAndMetricDeltas()
    {
        var pipeline = Env.Pipeline("compare-test", """
              - id: saliency
                uses: saliency
              - id: cam
                uses: grad-cam
                with: { layer: relu3 }
              - id: tsne
                uses: tsne
                with: { layer: gap, perplexity: 5, iterations: 250, exaggeration_iterations: 50, map_size: 0, init: random }
            """, 24, report: "none");
        var a = Env.Run(pipeline, "a");
        var b = Env.Run(pipeline, "b", "steps.cam.with.layer=relu2", "seed=1");
        Assert.Equal(0, a.ExitCode);
        Assert.Equal(0, b.ExitCode);
        var work = Path.GetDirectoryName(pipeline)!;
        var (code, stdout, err) = Env.Cli(work, "compare", a.OutDir!, b.OutDir!, "--out", "cmp");
        Assert.True(code == 0, err);
        Assert.Contains("step saliency: 24 arrays compared (0 not: shapes differ), 24 identical", stdout);
        var c = JsonNode.Parse(File.ReadAllText(Path.Combine(work, "cmp", "compare.json")))!;
        Assert.Contains(c["differences"]!.AsArray(), d => (string?)d!["field"] == "seed");
        Assert.Contains(c["differences"]!.AsArray(), d => (string?)d!["field"] == "overrides");

        // Saliency does not depend on the seed or on grad-cam's layer: identical, bit for bit.
        var sal = Step(c, "saliency");
        Assert.Equal(24, sal["summary"]!["identical"]!.GetValue<int>());
        Assert.Equal(0, sal["summary"]!["maxAbs"]!.GetValue<double>());
        // Grad-CAM at another layer: every map differs; the option that differs is named; a delta heatmap per input.
        var cam = Step(c, "cam");
        Assert.Contains(cam["differences"]!.AsArray(), d => (string?)d!["field"] == "options.layer" && (string?)d["a"] == "relu3" && (string?)d["b"] == "relu2");
        Assert.Equal(0, cam["summary"]!["identical"]!.GetValue<int>());
        Assert.True(cam["summary"]!["maxAbs"]!.GetValue<double>() > 0.01);
        // The layer-resolution maps (7×7 vs 14×14) cannot be compared and say so; the input-resolution maps can.
        Assert.Contains(cam["arrays"]!.AsArray(), x => ((string?)x!["note"])?.StartsWith("shapes differ: (7×7) vs (14×14)") == true);
        var first = cam["arrays"]!.AsArray().First(x => x!["relL2"] is not null)!;
        Assert.True(first["relL2"]!.GetValue<double>() > 0);
        Assert.True(File.Exists(Path.Combine(work, "cmp", first["delta"]!.GetValue<string>())));
        // t-SNE with another seed: coordinates and metrics move; metric deltas are B − A.
        var kl = Step(c, "tsne")["metrics"]!.AsArray().First(m => (string?)m!["metric"] == "kl_divergence")!;
        Assert.Equal(kl["b"]!.GetValue<double>() - kl["a"]!.GetValue<double>(), kl["delta"]!.GetValue<double>(), 1e-12);
        Assert.NotEqual(0, kl["delta"]!.GetValue<double>());
        Assert.True(Step(c, "tsne")["summary"]!["maxAbs"]!.GetValue<double>() > 0);

        await using var browser = await ReportBrowser.LaunchAsync();
        var loaded = await browser.OpenAsync(Path.Combine(work, "cmp", "compare.html"));
        Assert.Equal(3, await loaded.Page.EvaluateExpressionAsync<int>("document.querySelectorAll('section.step').length"));
        await loaded.Page.EvaluateExpressionAsync("window.scrollTo(0, document.body.scrollHeight)");
        Assert.Empty(await ReportBrowser.BrokenImagesAsync(loaded.Page));
        Assert.Empty(loaded.ConsoleErrors);
        Assert.Empty(loaded.FailedRequests);

        // Never overwritten.
        (code, _, err) = Env.Cli(work, "compare", a.OutDir!, b.OutDir!, "--out", "cmp");
        Assert.Equal(2, code);
        Assert.Contains("already exists and is not empty", err);
    }

    [Fact]
    public void RunsOfDifferentPipelinesExplainWhatDiffersAndCompareWhatMatches()
    {
        var pa = Env.Pipeline("first", """
              - id: saliency
                uses: saliency
              - id: cam
                uses: grad-cam
                with: { layer: relu3 }
              - id: maps
                uses: saliency
            """, 12, report: "none");
        var pb = Env.Pipeline("second", """
              - id: saliency
                uses: saliency
              - id: occlusion
                uses: occlusion
                with: { window: 4, stride: 4 }
              - id: maps
                uses: gradient-x-input
            """, 8, report: "none");
        var a = Env.Run(pa);
        var b = Env.Run(pb);
        var (code, stdout, err) = Env.Cli(Path.GetDirectoryName(pa)!, "compare", a.OutDir!, b.OutDir!, "--out", "cmp");
        Assert.True(code == 0, err);
        Assert.Contains("differs: data.options.limit: 12 → 8", stdout);
        Assert.Contains("steps only in A: cam", stdout);
        Assert.Contains("steps only in B: occlusion", stdout);
        Assert.Contains("step maps: not compared: different techniques (saliency in A, gradient-x-input in B)", stdout);
        var c = JsonNode.Parse(File.ReadAllText(Path.Combine(Path.GetDirectoryName(pa)!, "cmp", "compare.json")))!;
        Assert.Contains(c["differences"]!.AsArray(), d => (string?)d!["field"] == "pipelineFile");
        // The 8 shared inputs are compared (and identical); the 4 that only A explained are listed.
        var sal = Step(c, "saliency");
        Assert.Equal(8, sal["summary"]!["compared"]!.GetValue<int>());
        Assert.Equal(8, sal["summary"]!["identical"]!.GetValue<int>());
        Assert.Equal(4, sal["arraysOnlyInA"]!.AsArray().Count);
        Assert.Empty(sal["arraysOnlyInB"]!.AsArray());
    }

    [Fact]
    public void CompareWithAFolderThatIsNotARunIsAClearErrorWithExitCode2()
    {
        var dir = RepoPaths.TempDir("loupe-compare-bad");
        var (code, _, err) = Env.Cli(dir, "compare", dir, Path.Combine(dir, "missing"));
        Assert.Equal(2, code);
        Assert.Contains($"{dir} is not a Loupe run folder: it has no manifest.json", err);
        Assert.Empty(Directory.GetFileSystemEntries(dir));                  // nothing written
    }
}
