using Loupe.Explorer;
using Loupe.Testing;
using PuppeteerSharp;

namespace Loupe.Library.Tests;

/// <summary>The explorer page in headless Chromium: switching technique, layer and channel changes the pictures
/// (pixels compared), cancel stops a slow method, the dataset map takes a click, a run's report and a comparison open;
/// no console errors. With LOUPE_SCREENSHOTS=DIR it writes the screenshots of docs/guide/explorer.md.</summary>
[Collection("library")]
public sealed class ExplorerTabsPageTests : IDisposable
{
    readonly string _work = Directory.CreateTempSubdirectory("loupe-explorer-page-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_work, true); } catch (IOException) { }
    }

    static readonly WaitForFunctionOptions Long = new() { Timeout = 120_000 };

    /// <summary>Decoded RGBA pixels of an img element (drawn on a canvas in the page).</summary>
    static Task<int[]> Pixels(IPage page, string selector) => page.EvaluateFunctionAsync<int[]>(
        "s => { const i = document.querySelector(s); const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;" +
        " const g = c.getContext('2d'); g.drawImage(i, 0, 0); return Array.from(g.getImageData(0, 0, c.width, c.height).data); }", selector);

    /// <summary>Fraction of differing pixel values between two decoded images (1 when the sizes differ).</summary>
    static double Difference(int[] a, int[] b) => a.Length != b.Length ? 1 : a.Zip(b).Count(p => p.First != p.Second) / (double)a.Length;

    static async Task<string> Src(IPage page, string selector, string? differentFrom = null)
    {
        await page.WaitForFunctionAsync($"() => {{ const i = document.querySelector({System.Text.Json.JsonSerializer.Serialize(selector)}); return i && i.complete && i.naturalWidth > 0 && i.src !== {System.Text.Json.JsonSerializer.Serialize(differentFrom ?? "")}; }}", Long);
        return await page.EvaluateFunctionAsync<string>("s => document.querySelector(s).src", selector);
    }

    [Fact]
    public async Task EveryTabWorksInTheBrowser()
    {
        var root = Path.Combine(_work, "runs");
        ExplorerRunsTests.MakeRun(Path.Combine(root, "tiny-1"), "html");
        ExplorerRunsTests.MakeRun(Path.Combine(root, "tiny-2"), "none");
        var (server, _, url) = await ExplorerJobsTests.Start(new ExplorerOptions { RunRoots = [root] });
        await using var _s = server;
        await using var browser = await ReportBrowser.LaunchAsync();
        var page = await browser.NewPageAsync();
        await page.SetViewportAsync(new ViewPortOptions { Width = 1400, Height = 900 });
        var errors = new List<string>();
        page.Console += (_, e) => { if (e.Message.Type == ConsoleType.Error) lock (errors) errors.Add(e.Message.Text); };
        page.PageError += (_, e) => { lock (errors) errors.Add(e.Message); };
        await page.GoToAsync(url);
        var shots = Environment.GetEnvironmentVariable("LOUPE_SCREENSHOTS");

        // Explain: grad-cam's map differs from saliency's; switching the layer changes grad-cam's pixels.
        await page.WaitForFunctionAsync("() => document.getElementById('status').textContent === 'done'", Long);
        var cam = await Pixels(page, "#card-grad-cam img.map");
        Assert.True(Difference(cam, await Pixels(page, "#card-saliency img.map")) > 0.05);
        var camSrc = await Src(page, "#card-grad-cam img.map");
        await page.SelectAsync("#layer", "relu2");
        await Src(page, "#card-grad-cam img.map", camSrc);
        Assert.True(Difference(cam, await Pixels(page, "#card-grad-cam img.map")) > 0.05, "grad-cam at relu2 looks like grad-cam at relu3");
        await page.WaitForFunctionAsync("() => document.getElementById('status').textContent === 'done'", Long);
        if (shots is { Length: > 0 }) await page.ScreenshotAsync(Path.Combine(shots, "explorer-explain.png"));

        // Cancel: a slow technique shows progress and a Cancel button; after Cancel the card says so, the page goes on.
        await page.ClickAsync("input.technique[value='occlusion']");      // off: only the slow one runs
        await page.ClickAsync("input.technique[value='saliency']");
        await page.ClickAsync("input.technique[value='shapley-sampling']");
        await page.WaitForSelectorAsync("#opts-shapley-sampling input[name='cell']", new WaitForSelectorOptions { Timeout = 60_000 });
        await page.TypeAsync("#opts-shapley-sampling input[name='samples']", "100000");
        await page.TypeAsync("#opts-shapley-sampling input[name='cell']", "1");
        await page.ClickAsync("#explain");
        await page.WaitForSelectorAsync("#card-shapley-sampling button.cancel", new WaitForSelectorOptions { Timeout = 60_000 });
        Assert.True(await page.EvaluateExpressionAsync<bool>("!!document.querySelector('#card-shapley-sampling progress')"));
        await page.ClickAsync("#card-shapley-sampling button.cancel");
        await page.WaitForSelectorAsync("#card-shapley-sampling .cancelled", new WaitForSelectorOptions { Timeout = 60_000 });
        await page.ClickAsync("input.technique[value='shapley-sampling']");
        await page.ClickAsync("#explain");
        await page.WaitForFunctionAsync("() => document.getElementById('status').textContent === 'done' && !!document.querySelector('#card-grad-cam img.map')", Long);

        // Layers: the channel map changes with the channel and with the layer; filters of a conv layer appear.
        await page.ClickAsync("#tabs button[data-tab='layers']");
        var ch0Src = await Src(page, "#layers-channel img.map");
        var ch0 = await Pixels(page, "#layers-channel img.map");
        await page.EvaluateExpressionAsync("(() => { const c = document.getElementById('channel-number'); c.value = 7; c.dispatchEvent(new Event('change')); })()");
        var ch7Src = await Src(page, "#layers-channel img.map", ch0Src);
        Assert.True(Difference(ch0, await Pixels(page, "#layers-channel img.map")) > 0.01, "channel 7 looks like channel 0");
        await page.SelectAsync("#layers-layer", "conv1");
        await Src(page, "#layers-channel img.map", ch7Src);
        await Src(page, "#layers-filters img.map");
        await page.WaitForFunctionAsync("() => document.getElementById('layers-status').textContent === 'done'", Long);
        await page.SelectAsync("#threshold-mode", "value");
        await page.WaitForFunctionAsync("() => document.getElementById('layers-status').textContent === 'done'", Long);
        if (shots is { Length: > 0 }) await page.ScreenshotAsync(Path.Combine(shots, "explorer-layers.png"));

        // Dataset: the PCA map with a thumbnail per input; clicking one selects it and lists its neighbours.
        await page.ClickAsync("#tabs button[data-tab='dataset']");
        await page.ClickAsync("#dataset-go");
        await page.WaitForFunctionAsync("() => document.querySelectorAll('#map img.point').length === 8", Long);
        await page.ClickAsync("#map img.point[data-index='5']");
        await page.WaitForFunctionAsync("() => document.querySelectorAll('#neighbours img.neighbour').length === 8", Long);
        Assert.Equal("input 5", await page.EvaluateExpressionAsync<string>("document.getElementById('current').textContent"));
        Assert.True(await page.EvaluateExpressionAsync<bool>("document.querySelector('#map img.point[data-index=\"5\"]').classList.contains('selected')"));
        await page.ClickAsync("#patches-go");
        await Src(page, "#patches img.patches");
        if (shots is { Length: > 0 }) await page.ScreenshotAsync(Path.Combine(shots, "explorer-dataset.png"));

        // Runs: a report opens in the frame with its images; two runs compare.
        await page.ClickAsync("#tabs button[data-tab='runs']");
        await page.WaitForSelectorAsync("a.open-run[data-name='tiny-2']");
        await page.ClickAsync("a.open-run[data-name='tiny-2']");
        var frame = await WaitForFrame(page, "report.html", "img");
        Assert.Empty(await ReportBrowser.BrokenImagesAsync((IPage)page));
        Assert.Contains("grad-cam", await frame.EvaluateExpressionAsync<string>("document.body.textContent"));
        await page.ClickAsync("#compare");
        frame = await WaitForFrame(page, "compare.html", "img");
        Assert.Contains("tiny-1", await frame.EvaluateExpressionAsync<string>("document.body.textContent"));
        // Images load lazily: the ones loaded so far decoded (none broken).
        Assert.Equal(0, await frame.EvaluateExpressionAsync<int>("[...document.images].filter(i => i.complete && i.naturalWidth === 0 && i.getBoundingClientRect().top < innerHeight).length"));
        if (shots is { Length: > 0 }) await page.ScreenshotAsync(Path.Combine(shots, "explorer-runs.png"));
        Assert.Empty(errors);
    }

    static async Task<IFrame> WaitForFrame(IPage page, string file, string selector)
    {
        for (int i = 0; i < 600; i++)
        {
            var frame = page.Frames.FirstOrDefault(f => f.Url.Contains(file));
            // The pages load their images lazily; scroll the first into view as a reader would.
            if (frame is not null) await frame.EvaluateExpressionAsync("document.images.length && document.images[0].scrollIntoView()");
            if (frame is not null && await frame.EvaluateExpressionAsync<bool>($"document.readyState === 'complete' && !!document.querySelector('{selector}') && [...document.images].some(i => i.complete && i.naturalWidth > 0)"))
                return frame;
            await Task.Delay(100);
        }
        var last = page.Frames.FirstOrDefault(f => f.Url.Contains(file));
        var state = last is null ? "none" : await last.EvaluateExpressionAsync<string>("document.readyState + ' ' + document.images.length + ' ' + [...document.images].slice(0, 3).map(i => i.src + ':' + i.complete + ':' + i.naturalWidth).join(' ') + ' ' + document.body.innerText.slice(0, 200)");
        throw new TimeoutException($"no frame with {file} and {selector}: {state}");
    }
}
