using System.Diagnostics;
using PuppeteerSharp;

namespace Loupe.Testing;

/// <summary>Headless Chromium (the Debian <c>chromium</c> package, see scripts/setup.sh) driven by PuppeteerSharp:
/// opens a report from disk and records console errors, failed requests and the load time. Shared by the report
/// tests and tools/Loupe.ReportCheck.</summary>
public sealed class ReportBrowser : IAsyncDisposable
{
    /// <summary>Chromium's path (LOUPE_CHROMIUM overrides).</summary>
    public static string Executable => Environment.GetEnvironmentVariable("LOUPE_CHROMIUM") ?? "/usr/bin/chromium";

    readonly IBrowser _browser;
    ReportBrowser(IBrowser browser) => _browser = browser;

    /// <summary>Starts Chromium; fails with the install command when it is missing.</summary>
    public static async Task<ReportBrowser> LaunchAsync()
    {
        if (!File.Exists(Executable))
            throw new InvalidOperationException($"Chromium not found at {Executable}: run scripts/setup.sh (apt-get install chromium) or set LOUPE_CHROMIUM");
        var browser = await Puppeteer.LaunchAsync(new LaunchOptions
        {
            ExecutablePath = Executable, Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--allow-file-access-from-files"],
        });
        return new ReportBrowser(browser);
    }

    /// <summary>A blank page (for pages served over HTTP, e.g. the explorer).</summary>
    public Task<IPage> NewPageAsync() => _browser.NewPageAsync();

    /// <summary>A loaded page with what went wrong while loading it.</summary>
    public sealed record Loaded(IPage Page, List<string> ConsoleErrors, List<string> FailedRequests, double LoadMs, double ReadyMs);

    /// <summary>Opens an HTML file: load time until the window's load event, ready time until the report's script
    /// has drawn everything (<c>body[data-ready]</c>).</summary>
    public async Task<Loaded> OpenAsync(string htmlFile, int width = 1280, int height = 900)
    {
        var page = await _browser.NewPageAsync();
        await page.SetViewportAsync(new ViewPortOptions { Width = width, Height = height });
        var errors = new List<string>();
        var failed = new List<string>();
        page.Console += (_, e) => { if (e.Message.Type == ConsoleType.Error) lock (errors) errors.Add(e.Message.Text); };
        page.PageError += (_, e) => { lock (errors) errors.Add(e.Message); };
        page.RequestFailed += (_, e) => { lock (failed) failed.Add($"{e.Request.Url}: {e.Request.FailureText}"); };
        var sw = Stopwatch.StartNew();
        await page.GoToAsync(new Uri(Path.GetFullPath(htmlFile)).AbsoluteUri, new NavigationOptions { WaitUntil = [WaitUntilNavigation.Load], Timeout = 60_000 });
        var load = sw.Elapsed.TotalMilliseconds;
        if (await page.EvaluateExpressionAsync<bool>("!!document.getElementById('loupe-data')"))
            await page.WaitForFunctionAsync("() => document.body.dataset.ready === '1'", new WaitForFunctionOptions { Timeout = 30_000 });
        return new Loaded(page, errors, failed, load, sw.Elapsed.TotalMilliseconds);
    }

    /// <summary>Images that finished loading without pixels (broken links), as their src.</summary>
    public static Task<string[]> BrokenImagesAsync(IPage page) =>
        page.EvaluateExpressionAsync<string[]>("[...document.images].filter(i => i.complete && i.naturalWidth === 0).map(i => i.src)");

    /// <inheritdoc/>
    public async ValueTask DisposeAsync() => await _browser.DisposeAsync();
}
