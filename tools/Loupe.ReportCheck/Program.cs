// loupe-report-check RUN_DIR [--runs N] [--screenshot FILE]
// Opens RUN_DIR/report.html N times (default 5) in headless Chromium and prints the median time to the load event
// and to the report's script being ready (scatters drawn), the weight of the report (the HTML, its thumbnails and the
// display images it shows), element counts and console errors. Exit 1 on console errors or broken images.
using System.Globalization;
using System.Text.Json.Nodes;
using Loupe.Testing;

if (args.Length == 0 || args[0] is "-h" or "--help")
{
    Console.WriteLine("usage: Loupe.ReportCheck RUN_DIR [--runs N] [--screenshot FILE]");
    return 2;
}
var dir = Path.GetFullPath(args[0]);
int runs = 5;
string? screenshot = null;
for (int i = 1; i < args.Length - 1; i++)
{
    if (args[i] == "--runs") runs = int.Parse(args[++i], CultureInfo.InvariantCulture);
    else if (args[i] == "--screenshot") screenshot = Path.GetFullPath(args[++i]);
}
var html = Path.Combine(dir, "report.html");
if (!File.Exists(html)) { Console.Error.WriteLine($"{html}: not found (run with output.report: html, or 'loupe report {dir}')"); return 2; }

long Size(string f) => new FileInfo(f).Length;
var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "manifest.json")))!;
long htmlBytes = Size(html);
long thumbBytes = Directory.Exists(Path.Combine(dir, "report")) ? Directory.GetFiles(Path.Combine(dir, "report")).Sum(Size) : 0;
long imageBytes = manifest["artifacts"]!.AsArray().Where(a => (string?)a!["kind"] == "display").Sum(a => Size(Path.Combine(dir, (string)a!["path"]!)));
string Mb(long b) => (b / 1048576.0).ToString("0.00", CultureInfo.InvariantCulture) + " MB";
Console.WriteLine($"weight: {Mb(htmlBytes + thumbBytes + imageBytes)} (report.html {Mb(htmlBytes)}, thumbnails {Mb(thumbBytes)}, display images {Mb(imageBytes)})");

await using var browser = await ReportBrowser.LaunchAsync();
var loads = new List<double>();
var readies = new List<double>();
int exit = 0;
for (int r = 0; r < runs; r++)
{
    var loaded = await browser.OpenAsync(html);
    loads.Add(loaded.LoadMs);
    readies.Add(loaded.ReadyMs);
    if (r == 0)
    {
        var counts = await loaded.Page.EvaluateExpressionAsync<int[]>(
            "[document.querySelectorAll('section.step').length, document.images.length, [...document.querySelectorAll('[data-scatter] canvas[data-points]')].reduce((s, c) => s + +c.dataset.points, 0)]");
        Console.WriteLine($"steps: {counts[0]}, images in the page: {counts[1]}, scatter points: {counts[2]}");
        var broken = await ReportBrowser.BrokenImagesAsync(loaded.Page);
        foreach (var e in loaded.ConsoleErrors) Console.WriteLine("console error: " + e);
        foreach (var b in broken) Console.WriteLine("broken image: " + b);
        if (loaded.ConsoleErrors.Count > 0 || broken.Length > 0) exit = 1;
        if (screenshot is not null) await loaded.Page.ScreenshotAsync(screenshot);
    }
    await loaded.Page.CloseAsync();
}
double Median(List<double> v) { v.Sort(); return v[v.Count / 2]; }
Console.WriteLine($"open (median of {runs}): load event {Median(loads):0} ms, ready (scatters drawn) {Median(readies):0} ms; all ready times: {string.Join(", ", readies.Select(x => x.ToString("0", CultureInfo.InvariantCulture)))} ms");
return exit;
