using System.Text.Json.Nodes;
using Loupe.Core.Report;
using Loupe.Testing;

namespace Loupe.Report.Tests;

/// <summary>report.html of a real run, loaded in headless Chromium.</summary>
public class ReportTests
{
    const int N = 200;

    [Fact]
    public async Task ReportOfARunOpensInChromiumWithEveryStepTheGridAndAnInteractiveScatter()
    {
        var pipeline = Env.Pipeline("report-test", """
              - id: saliency
                uses: saliency
              - id: cam
                uses: grad-cam
                with: { layer: relu3 }
              - id: tsne
                uses: tsne
                with: { layer: gap, perplexity: 10, iterations: 250, exaggeration_iterations: 100, map_size: 0 }
              - id: broken
                uses: pca
                with: { layer: gap, components: 2 }
                expect: [ "explained_variance_ratio_pc1 > 2" ]
            """, N);
        var r = Env.Run(pipeline);
        Assert.Equal(1, r.ExitCode);                                   // the broken step fails its expect:; the report is still written
        var html = Path.Combine(r.OutDir!, HtmlReport.FileName);
        Assert.True(File.Exists(html));
        Assert.Equal("report.html", r.Manifest!["report"]!["path"]!.GetValue<string>());
        var thumbs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, ThumbnailIndex.IndexPath)))!;
        Assert.Equal(N, thumbs["ids"]!.AsArray().Count);
        Assert.Equal(28, thumbs["size"]!.GetValue<int>());

        await using var browser = await ReportBrowser.LaunchAsync();
        var loaded = await browser.OpenAsync(html);
        var page = loaded.Page;
        Assert.Equal(["saliency", "cam", "tsne", "broken"], await page.EvaluateExpressionAsync<string[]>("[...document.querySelectorAll('section.step')].map(s => s.dataset.step)"));
        Assert.Equal(["summary", "comparison", "metrics"], await page.EvaluateExpressionAsync<string[]>("[...document.querySelectorAll('main > section[id]:not(.step)')].map(s => s.id)"));
        Assert.Equal("failed", await page.EvaluateExpressionAsync<string>("document.querySelector('section[data-step=broken]').dataset.status"));
        Assert.Contains("expect 'explained_variance_ratio_pc1 > 2' failed: explained_variance_ratio_pc1 = 0.",
            await page.EvaluateExpressionAsync<string>("document.querySelector('section[data-step=broken] pre.error').textContent"));
        Assert.Contains("kl_divergence", await page.EvaluateExpressionAsync<string>("document.getElementById('metrics').textContent"));

        // Methods × images: 12 rows per page, the input thumbnail and one column per step with per-input images.
        Assert.Equal(12, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('[data-grid] tbody tr').length"));
        Assert.Equal(12 * 2, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('[data-grid] tbody img').length"));
        Assert.Equal(12, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('[data-grid] tbody .thumb').length"));
        // Galleries are paged (24 inputs a page): 1,000 inputs never mean 1,000 images at once.
        Assert.Equal(24, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('[data-gallery=saliency] img').length"));
        Assert.Contains("page 1 of 9 (200 inputs)", await page.EvaluateExpressionAsync<string>("document.querySelector('[data-gallery=saliency] .pager').textContent"));
        await page.EvaluateExpressionAsync("document.querySelectorAll('[data-gallery=saliency] .pager button')[1].click()");
        Assert.Equal("00024", await page.EvaluateExpressionAsync<string>("document.querySelector('[data-gallery=saliency] .card').dataset.input"));
        Assert.True(await page.EvaluateExpressionAsync<bool>("[...document.querySelectorAll('img')].every(i => i.loading === 'lazy')"));

        // The scatter: every point drawn; hovering a point shows its thumbnail, label and id; clicking opens it.
        Assert.Equal(new[] { N, N }, await page.EvaluateExpressionAsync<int[]>("[...document.querySelectorAll('[data-scatter] canvas[data-points]')].map(c => +c.dataset.points)"));  // t-SNE, PCA
        var ids = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "tsne/points2d.json")))!["ids"]!.AsArray();
        await page.EvaluateExpressionAsync("document.querySelector('[data-scatter]').scrollIntoView(); window.scrollBy(0, -70)");
        var at = await page.EvaluateExpressionAsync<double[]>("(() => { const p = window.loupe.scatters[0].position(7); return [p[0] - window.scrollX, p[1] - window.scrollY]; })()");
        await page.Mouse.MoveAsync((decimal)at[0], (decimal)at[1]);
        var hovered = await page.EvaluateExpressionAsync<int>("window.loupe.scatters[0].hovered()");
        Assert.True(hovered >= 0, "no point under the mouse");
        var tip = await page.EvaluateExpressionAsync<string>("document.querySelector('[data-scatter] .tip:not([hidden])')?.textContent ?? ''");
        Assert.Contains(ids[hovered]!.GetValue<string>(), tip);
        var sprite = await page.EvaluateExpressionAsync<string>("document.querySelector('[data-scatter] .tip .thumb').style.backgroundImage");
        Assert.Contains("report/thumbs-000.png", sprite);
        Assert.True(await page.EvaluateFunctionAsync<bool>("src => new Promise(ok => { const i = new Image(); i.onload = () => ok(i.naturalWidth === 32 * 28); i.onerror = () => ok(false); i.src = src; })",
            "report/thumbs-000.png"), "thumbnail sprite does not load");
        // Kept for people (docs/images/report.png is one of these): the scatter with the hovered point's thumbnail.
        var shot = Path.Combine(AppContext.BaseDirectory, "report-screenshot.png");
        await page.ScreenshotAsync(shot);
        Assert.True(new FileInfo(shot).Length > 20_000, "screenshot is suspiciously small");
        await page.Mouse.ClickAsync((decimal)at[0], (decimal)at[1]);
        Assert.False(await page.EvaluateExpressionAsync<bool>("document.getElementById('lightbox').hidden"));
        Assert.Equal(2, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('#lightbox img').length")); // saliency and grad-cam of that input

        await page.EvaluateExpressionAsync("document.getElementById('lightbox').click(); window.scrollTo(0, 0)");
        Assert.Empty(await ReportBrowser.BrokenImagesAsync(page));
        Assert.Empty(loaded.ConsoleErrors);
        Assert.Empty(loaded.FailedRequests);
    }

    [Fact]
    public void ReportOfAFolderThatIsNotARunIsAClearErrorWithExitCode2()
    {
        var dir = RepoPaths.TempDir("loupe-report-bad");
        var (code, _, err) = Env.Cli(dir, "report", dir);
        Assert.Equal(2, code);
        Assert.Contains($"{dir} is not a Loupe run folder: it has no manifest.json", err);

        File.WriteAllText(Path.Combine(dir, "manifest.json"), "{\n  \"runId\": \"x\",\n  \"steps\": [ oops ]\n}");
        (code, _, err) = Env.Cli(dir, "report", dir);
        Assert.Equal(2, code);
        Assert.Contains(Path.Combine(dir, "manifest.json") + ": not a Loupe manifest: invalid JSON at line 3", err);

        File.WriteAllText(Path.Combine(dir, "manifest.json"), """{ "runId": "x", "steps": [] }""");
        (code, _, err) = Env.Cli(dir, "report", dir);
        Assert.Equal(2, code);
        Assert.Contains("the field 'artifacts' is missing", err);

        File.WriteAllText(Path.Combine(dir, "manifest.json"), """{ "runId": "x", "steps": [], "artifacts": [ { "step": "s", "kind": "raw", "path": "../../etc/passwd", "shape": [], "dtype": "f", "name": "n" } ] }""");
        (code, _, err) = Env.Cli(dir, "report", dir);
        Assert.Equal(2, code);
        Assert.Contains("must name a step, a kind and a path inside the run folder", err);
        Assert.False(File.Exists(Path.Combine(dir, "report.html")));
    }

    [Fact]
    public void TheReportVerbRebuildsFromTheManifestAndEscapesWhatTheRunRecorded()
    {
        // A run folder written by hand: the report needs only the manifest and the files it lists.
        var dir = RepoPaths.TempDir("loupe-report-min");
        Directory.CreateDirectory(Path.Combine(dir, "s1"));
        File.WriteAllBytes(Path.Combine(dir, "s1", "a.x.png"), Loupe.Core.Png.Encode(Loupe.Abstractions.RgbImage.Blank(4, 4, 9)));
        File.WriteAllText(Path.Combine(dir, "manifest.json"), """
            { "runId": "r1", "status": "failed", "pipeline": { "name": "hand <made>" },
              "steps": [ { "id": "s1", "uses": "thing", "status": "succeeded", "metrics": { "score": 0.5 } },
                         { "id": "s2", "uses": "other", "status": "failed", "error": "bad <script>alert(1)</script> input" } ],
              "artifacts": [ { "step": "s1", "input": "a", "kind": "display", "path": "s1/a.x.png", "shape": [4, 4, 3], "dtype": "uint8", "name": "x" } ] }
            """);
        var (code, stdout, err) = Env.Cli(dir, "report", dir);
        Assert.True(code == 0, err);
        Assert.Contains($"report: {Path.Combine(dir, "report.html")}", stdout);
        var html = File.ReadAllText(Path.Combine(dir, "report.html"));
        Assert.Contains("bad &lt;script&gt;alert(1)&lt;/script&gt; input", html);
        Assert.DoesNotContain("<script>alert(1)", html);
        Assert.Contains("<h1>hand &lt;made&gt;</h1>", html);
        Assert.Contains("data-gallery=\"s1\"", html);
        Assert.Contains("\"s1/a.x.png\"", html);
        Assert.DoesNotContain("http://", html);    // nothing from the network
        Assert.DoesNotContain("https://", html);
    }
}
