using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using Loupe;
using Loupe.Core;
using Loupe.Testing;
using Loupe.Explorer;

// Load test of `loupe serve` (opt-in, not part of `dotnet test`; run it on an idle machine — timings on a busy one
// mean nothing). Two servers in this process, each driven by an HTTP client over loopback with caching off (every
// request computes):
//   1. Grad-CAM (relu3) on the demo CNN over configs/quickstart.yaml: N requests; RSS after request 50 vs after the last
//      (bar: growth ≤ 10 %), p50 latency (bar: ≤ 50 ms).
//   2. Saliency on torchvision resnet18 (random weights) at 224² over samples/images/photos: p50 latency of N requests vs
//      p50 of the same call in-process through the library (bar: ≤ 1.3×).
//   dotnet run -c Release --project tools/Loupe.ExplorerLoad -- [--requests 500] [--csv FILE]
NativeHeap.LimitArenas(); // first, as the CLI does
int requests = 500;
string? csv = null;
for (int i = 0; i < args.Length; i++)
    switch (args[i])
    {
        case "--requests": requests = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--csv": csv = args[++i]; break;
        default: Console.Error.WriteLine($"unknown argument '{args[i]}'; usage: Loupe.ExplorerLoad [--requests N] [--csv FILE]"); return 2;
    }
if (requests < 100) { Console.Error.WriteLine("--requests must be at least 100 (request 50 is the RSS reference)"); return 2; }
var root = RepoPaths.Root;
var settings = new LoupeSettings { PluginDirectories = [Path.Combine(AppContext.BaseDirectory, "plugins")] };
var rows = new List<string> { "scenario,request,milliseconds,rss_bytes" };

// 1. Grad-CAM on the demo CNN.
var (camMs, rss50, rssLast) = await Drive(Path.Combine(root, "configs", "quickstart.yaml"), "grad-cam", new { layer = "relu3" }, "gradcam-demo-cnn");
var growth = (rssLast - rss50) / (double)rss50;
var camP50 = Median(camMs);
Console.WriteLine($"grad-cam, demo CNN: {requests} requests, p50 {camP50:F1} ms, p90 {Percentile(camMs, 0.9):F1} ms; RSS {rss50 >> 20} MiB after 50 → {rssLast >> 20} MiB after {requests} ({growth:+0.0%;-0.0%})");

// 2. Saliency on resnet18 224², served vs in-process.
var work = Directory.CreateTempSubdirectory("loupe-explorer-load-").FullName;
try
{
    var yaml = Path.Combine(work, "resnet18.yaml");
    File.WriteAllText(yaml, $"""
        version: 1
        name: resnet18-load
        seed: 0
        model: {"{"} uses: torchvision, with: {"{"} architecture: resnet18 {"}"} {"}"}
        data: {"{"} uses: image-folder, with: {"{"} path: {Path.Combine(root, "samples", "images", "photos")} {"}"} {"}"}
        steps: [{"{"} id: saliency, uses: saliency {"}"}]
        """);
    var (servedMs, _, _) = await Drive(yaml, "saliency", null, "saliency-resnet18-served");
    using var model = LoupeModel.FromPipeline(yaml, settings);
    var inputs = model.PipelineInputs(64);
    var direct = new List<double>();
    for (int i = 0; i < requests; i++)
    {
        var sw = Stopwatch.StartNew();
        model.Explain("saliency", inputs[i % inputs.Count].Input).Overlay().ToPng();   // what the server does per request
        direct.Add(sw.Elapsed.TotalMilliseconds);
        rows.Add(FormattableString.Invariant($"saliency-resnet18-in-process,{i},{direct[^1]:F3},"));
    }
    var ratio = Median(servedMs) / Median(direct);
    Console.WriteLine($"saliency, resnet18 224²: served p50 {Median(servedMs):F1} ms, in-process p50 {Median(direct):F1} ms (×{ratio:F2})");
    if (csv is not null) File.WriteAllLines(csv, rows);
    bool ok = growth <= 0.10 && camP50 <= 50 && ratio <= 1.3;
    Console.WriteLine(ok ? "PASS: RSS growth ≤ 10 %, Grad-CAM p50 ≤ 50 ms, served saliency ≤ 1.3× in-process" : "FAIL");
    return ok ? 0 : 1;
}
finally { try { Directory.Delete(work, true); } catch (IOException) { } }

async Task<(List<double> Ms, long Rss50, long RssLast)> Drive(string pipeline, string technique, object? options, string scenario)
{
    await using var server = ExplorerServer.Create(pipeline, new ExplorerOptions { CacheEntries = 0 }, settings);
    var url = await server.StartAsync();
    using var http = new HttpClient { BaseAddress = new Uri(server.BaseUrl) };
    http.DefaultRequestHeaders.Add("X-Loupe-Token", new Uri(url).Query.Split("token=")[1]);
    var info = await http.GetFromJsonAsync<System.Text.Json.JsonElement>("/api/info");
    int count = info.GetProperty("inputs").GetArrayLength();
    var ms = new List<double>();
    long rss50 = 0;
    for (int i = 0; i < requests; i++)
    {
        var sw = Stopwatch.StartNew();
        var r = await http.PostAsJsonAsync("/api/explain", new { input = i % count, technique, options });
        await r.Content.ReadAsByteArrayAsync();
        if (!r.IsSuccessStatusCode) throw new InvalidOperationException($"{scenario}: request {i} answered {(int)r.StatusCode}");
        ms.Add(sw.Elapsed.TotalMilliseconds);
        long rss = 0;
        if (i == 49 || i == requests - 1) { ProcessMemory.Settle(); rss = ProcessMemory.Rss(); if (i == 49) rss50 = rss; }
        rows.Add(FormattableString.Invariant($"{scenario},{i},{ms[^1]:F3},{(rss > 0 ? rss.ToString(CultureInfo.InvariantCulture) : "")}"));
    }
    ProcessMemory.Settle();
    return (ms, rss50, ProcessMemory.Rss());
}

static double Median(List<double> xs) => Percentile(xs, 0.5);
static double Percentile(List<double> xs, double q)
{
    var s = xs.Order().ToArray();
    return s[(int)Math.Min(s.Length - 1, Math.Floor(q * s.Length))];
}
