using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using static Loupe.Core.Report.Html;

namespace Loupe.Core.Report;

/// <summary>The run report (<c>report.html</c>): one static page beside the run's files (images referenced by relative
/// path, lazily loaded; no network). Everything is driven by the manifest and the artifact kinds, never by technique
/// names: per-input display images become paged galleries and the methods × images grid, whole-step images are shown
/// as they are, <see cref="Points2D"/> artifacts become interactive scatters, metrics become tables.</summary>
public static class HtmlReport
{
    /// <summary>Report file name inside the run folder.</summary>
    public const string FileName = "report.html";

    /// <summary>Writes <c>report.html</c> into the run folder (replacing an earlier report) and returns its path.
    /// Throws <see cref="LoupeException"/> when the folder is not a Loupe run.</summary>
    public static string Write(string runDirectory)
    {
        var run = RunFolder.Open(runDirectory);
        var path = Path.Combine(run.Directory, FileName);
        AtomicFile.Write(path, Encoding.UTF8.GetBytes(Build(run)), overwrite: true);
        return path;
    }

    /// <summary>The report's HTML.</summary>
    public static string Build(RunFolder run)
    {
        var m = run.Manifest;
        var displays = run.Artifacts.Where(a => a.Kind == "display" && a.Input is not null).ToList();
        var data = new JsonObject
        {
            ["labels"] = new JsonArray(run.Labels.Select(l => (JsonNode)JsonValue.Create(l)!).ToArray()),
            ["thumbs"] = Thumbs(run),
            ["galleries"] = new JsonObject(),
            ["scatters"] = new JsonArray(),
            ["inputs"] = new JsonObject(displays.GroupBy(a => a.Input!).Select(g => KeyValuePair.Create(g.Key,
                (JsonNode?)new JsonArray(g.Select(a => (JsonNode)new JsonArray(a.Step, a.Name, Url(a.Path))).ToArray())))),
        };
        var sb = new StringBuilder();
        var steps = run.Steps;
        sb.Append("<header><h1>").Append(E(run.Name)).Append("</h1>")
          .Append($"<span class=\"badge {E(run.Status)}\" id=\"run-status\">{E(run.Status)}</span> ")
          .Append($"<span class=\"muted\">{steps.Count} step(s) · {Seconds(m["durationMs"])} · {E(m["startedAt"]?.ToString())}</span>");
        sb.Append("<nav><a href=\"#summary\">summary</a><a href=\"#comparison\">methods × images</a><a href=\"#metrics\">metrics</a>");
        foreach (var s in steps) sb.Append($"<a href=\"#step-{E(Anchor(s))}\">{E(s["id"]?.ToString())}</a>");
        sb.Append("</nav></header>\n<main>\n");
        Summary(sb, run);
        Grid(sb, run, displays, data);
        Metrics(sb, run);
        int scatterIndex = 0;
        foreach (var s in steps) Step(sb, run, s, data, ref scatterIndex);
        sb.Append("</main>\n<div id=\"lightbox\" hidden></div>");
        return Page($"Loupe report — {run.Name}", sb.ToString(), data, "report.js");
    }

    static string Anchor(JsonObject step) => string.Concat((step["id"]?.ToString() ?? "").Select(c => char.IsLetterOrDigit(c) || c is '-' or '_' ? c : '_'));

    static JsonNode? Thumbs(RunFolder run)
    {
        var file = Path.Combine(run.Directory, ThumbnailIndex.IndexPath);
        if (!File.Exists(file)) return null;
        try
        {
            var t = JsonSerializer.Deserialize<ThumbnailIndex>(File.ReadAllText(file), Manifest.JsonOptions);
            if (t is null || t.Sheets.Any(s => !File.Exists(Path.Combine(run.Directory, s)))) return null;
            return JsonSerializer.SerializeToNode(t with { Sheets = t.Sheets.Select(Url).ToArray() }, Manifest.JsonOptions);
        }
        catch (JsonException) { return null; }
    }

    static void Summary(StringBuilder sb, RunFolder run)
    {
        var m = run.Manifest;
        sb.Append("<section id=\"summary\"><h2>Run summary</h2>");
        string Files(JsonNode? files) => files is JsonArray a && a.Count > 0
            ? string.Join("<br>", a.Select(f => $"{E(f?["path"]?.ToString())} <span class=\"muted\">sha256 {E(f?["sha256"]?.ToString() ?? "—")}</span>"))
            : "—";
        var env = m["environment"] as JsonObject;
        var plugins = env?["plugins"] as JsonArray;
        KeyValues(sb, [
            ("pipeline", $"{E(m["pipelineFile"]?.ToString())} <span class=\"muted\">sha256 {E(m["pipelineSha256"]?.ToString())}</span>"),
            ("overrides", E(Text(m["overrides"]))),
            ("run id", E(m["runId"]?.ToString())),
            ("status", E(run.Status)),
            ("started / finished", $"{E(m["startedAt"]?.ToString())} / {E(m["finishedAt"]?.ToString() ?? "—")} ({Seconds(m["durationMs"])})"),
            ("seed", E(Text(m["seed"]))),
            ("model", $"<b>{E(m["model"]?["uses"]?.ToString())}</b> {E(Text(m["model"]?["options"]))}"),
            ("model files", Files(m["model"]?["files"])),
            ("input", E(Text(m["model"]?["input"]))),
            ("data", m["data"] is null ? "—" : $"<b>{E(m["data"]?["uses"]?.ToString())}</b> {E(Text(m["data"]?["options"]))} · {E(Text(m["data"]?["count"]))} inputs"),
            ("data files", Files(m["data"]?["files"])),
            ("versions", $"Loupe {E(m["loupe"]?.ToString())} · contract {E(Text(env?["contract"]))} · .NET {E(env?["dotnet"]?.ToString())} · TorchSharp {E(env?["torchSharp"]?.ToString())} · {E(Text(env?["threads"]))} threads · {E(env?["os"]?.ToString())}"),
            ("plugins", plugins is null ? "—" : string.Join(", ", plugins.Select(p => E($"{p?["name"]} {p?["version"]}")))),
            ("warnings", m["warnings"] is JsonArray w && w.Count > 0 ? string.Join("<br>", w.Select(x => E(x?.ToString()))) : "none"),
        ]);
        sb.Append("<table id=\"steps-table\"><tr><th>step</th><th>technique</th><th>status</th><th>time</th><th>error</th></tr>");
        foreach (var s in run.Steps)
            sb.Append($"<tr><td><a href=\"#step-{E(Anchor(s))}\">{E(s["id"]?.ToString())}</a></td><td>{E(s["uses"]?.ToString())}</td>")
              .Append($"<td><span class=\"badge {E(s["status"]?.ToString())}\">{E(s["status"]?.ToString())}</span></td><td class=\"num\">{Seconds(s["durationMs"])}</td><td>{E(s["error"]?.ToString())}</td></tr>");
        sb.Append("</table></section>\n");
    }

    /// <summary>Methods × images: one column per step with per-input display images (its first image name), one row per
    /// input shown by at least two steps; paged in the page.</summary>
    static void Grid(StringBuilder sb, RunFolder run, List<ArtifactRecord> displays, JsonObject data)
    {
        sb.Append("<section id=\"comparison\"><h2>Methods × images</h2>");
        var columns = displays.GroupBy(a => a.Step).Select(g => (Step: g.Key, Name: g.First().Name,
            ByInput: g.Where(a => a.Name == g.First().Name).GroupBy(a => a.Input!).ToDictionary(x => x.Key, x => x.First().Path))).ToList();
        var rows = columns.SelectMany(c => c.ByInput.Keys).Distinct().Where(i => columns.Count(c => c.ByInput.ContainsKey(i)) >= 2).ToList();
        if (columns.Count < 2 || rows.Count == 0)
        {
            sb.Append("<p class=\"muted\">Fewer than two steps wrote per-input images: nothing to compare side by side.</p></section>\n");
            return;
        }
        data["grid"] = new JsonObject
        {
            ["columns"] = new JsonArray(columns.Select(c => (JsonNode)new JsonObject { ["step"] = c.Step, ["name"] = c.Name }).ToArray()),
            ["rows"] = new JsonArray(rows.Select(i => (JsonNode)new JsonArray(i, new JsonArray(columns.Select(c =>
                c.ByInput.TryGetValue(i, out var p) ? (JsonNode?)JsonValue.Create(Url(p)) : null).ToArray()))).ToArray()),
            // Per input: the top classes with probabilities and the true label (manifest predictions); without them (a
            // detector, a segmentation model), what the row's first image explains, as comparison.png labels its rows.
            ["predictions"] = RowLines(run, displays, rows),
        };
        sb.Append($"<p class=\"muted\">{rows.Count} inputs × {columns.Count} steps.</p><div data-grid></div></section>\n");
    }

    /// <summary>The lines under each grid row's input id: its predictions, else its first image's target.</summary>
    static JsonObject RowLines(RunFolder run, List<ArtifactRecord> displays, List<string> rows)
    {
        var predictions = Predictions.ById(run.Manifest, run.Directory, rows);
        var lines = new JsonObject();
        foreach (var row in rows)
        {
            if (predictions.TryGetValue(row, out var p))
                lines[row] = new JsonArray([.. (p["top"] as JsonArray ?? []).Take(3).Select(t => (JsonNode)JsonValue.Create(
                    $"{(string?)t!["label"]} {((double)t["p"]!).ToString("0.0%", System.Globalization.CultureInfo.InvariantCulture)}")!),
                    .. p["labelName"] is { } truth ? [(JsonNode)JsonValue.Create($"true: {(string?)truth}")!] : Array.Empty<JsonNode>()]);
            else if (displays.FirstOrDefault(a => a.Input == row && a.Target is not null)?.Target is { } target)
                lines[row] = new JsonArray((JsonNode)JsonValue.Create(target)!);
        }
        return lines;
    }

    /// <summary>Metric tables: steps grouped by technique, one column per metric.</summary>
    static void Metrics(StringBuilder sb, RunFolder run)
    {
        sb.Append("<section id=\"metrics\"><h2>Metrics</h2>");
        var of = (run.Manifest["metricsTable"] as JsonArray)?.Where(r => r?["of"] is not null)
            .ToDictionary(r => r!["step"]!.ToString(), r => r!["of"]!.ToString()) ?? [];
        var withMetrics = run.Steps.Where(s => s["metrics"] is JsonObject o && o.Count > 0).ToList();
        if (withMetrics.Count == 0) sb.Append("<p class=\"muted\">No step reported metrics.</p>");
        MethodsSection.Write(sb, run.Manifest["methodsTable"] as JsonObject);
        foreach (var group in withMetrics.GroupBy(s => s["uses"]?.ToString() ?? ""))
        {
            var names = group.SelectMany(s => ((JsonObject)s["metrics"]!).Select(kv => kv.Key)).Distinct().ToList();
            bool hasOf = group.Any(s => of.ContainsKey(s["id"]!.ToString()));
            sb.Append($"<h3>{E(group.Key)}</h3><table class=\"metrics\"><tr><th>step</th>{(hasOf ? "<th>of</th>" : "")}");
            foreach (var n in names) sb.Append("<th>").Append(E(n)).Append("</th>");
            sb.Append("</tr>");
            foreach (var s in group)
            {
                var id = s["id"]!.ToString();
                sb.Append($"<tr><td>{E(id)}</td>{(hasOf ? $"<td>{E(of.GetValueOrDefault(id))}</td>" : "")}");
                foreach (var n in names)
                    sb.Append("<td class=\"num\">").Append(s["metrics"]![n] is JsonValue v && v.TryGetValue<double>(out var d) ? Num(d) : "").Append("</td>");
                sb.Append("</tr>");
            }
            sb.Append("</table>");
        }
        if (File.Exists(Path.Combine(run.Directory, "metrics.csv"))) sb.Append("<p><a href=\"metrics.csv\">metrics.csv</a></p>");
        sb.Append("</section>\n");
    }

    static void Step(StringBuilder sb, RunFolder run, JsonObject s, JsonObject data, ref int scatterIndex)
    {
        var id = s["id"]!.ToString();
        var status = s["status"]?.ToString() ?? "unknown";
        var mine = run.Artifacts.Where(a => a.Step == id).ToList();
        sb.Append($"<section class=\"step\" id=\"step-{E(Anchor(s))}\" data-step=\"{E(id)}\" data-status=\"{E(status)}\">")
          .Append($"<h2>{E(id)} <span class=\"muted\">({E(s["uses"]?.ToString())})</span> <span class=\"badge {E(status)}\">{E(status)}</span></h2>")
          .Append($"<p class=\"muted\">time {Seconds(s["durationMs"])} · target {E(s["target"]?.ToString() ?? "—")}</p>");
        if (s["error"] is { } error) sb.Append("<pre class=\"error\">").Append(E(error.ToString())).Append("</pre>");
        if (s["warnings"] is JsonArray w && w.Count > 0) sb.Append("<p>warnings:</p><ul>").Append(string.Concat(w.Select(x => $"<li>{E(x?.ToString())}</li>"))).Append("</ul>");
        if (s["expectations"] is JsonArray ex)
            sb.Append("<p>").Append(string.Join(" · ", ex.Select(x => $"{E(x?["expect"]?.ToString())}: {((bool?)x?["passed"] == true ? "passed" : "<b>failed</b>")}"))).Append("</p>");
        if (s["metrics"] is JsonObject metrics && metrics.Count > 0)
            KeyValues(sb, metrics.Select(kv => (kv.Key, kv.Value is JsonValue v && v.TryGetValue<double>(out var d) ? Num(d) : E(Text(kv.Value)))));
        if (s["options"] is { } options) sb.Append("<details><summary>options</summary><pre>").Append(E(options.ToJsonString(Manifest.JsonOptions))).Append("</pre></details>");

        foreach (var p in mine.Where(a => a.Kind == "data" && a.Name == Points2D.ArtifactName && a.Dtype == "json"))
        {
            Points2D? pts = null;
            try { pts = JsonSerializer.Deserialize<Points2D>(File.ReadAllText(run.PathOf(p)), Manifest.JsonOptions)?.Validated(); }
            catch (Exception e) when (e is JsonException or IOException or ArgumentException) { sb.Append($"<p class=\"muted\">{E(p.Path)}: not shown ({E(e.Message)})</p>"); }
            if (pts is null) continue;
            ((JsonArray)data["scatters"]!).Add(new JsonObject
            {
                ["step"] = id, ["title"] = pts.Title, ["xLabel"] = pts.XLabel, ["yLabel"] = pts.YLabel,
                ["ids"] = JsonSerializer.SerializeToNode(pts.Ids),
                ["x"] = new JsonArray(pts.X.Select(v => (JsonNode)JsonValue.Create(MathF.Round(v, 4))).ToArray()),
                ["y"] = new JsonArray(pts.Y.Select(v => (JsonNode)JsonValue.Create(MathF.Round(v, 4))).ToArray()),
                ["labels"] = pts.Labels is null ? null : JsonSerializer.SerializeToNode(pts.Labels),
            });
            sb.Append($"<h3>{E(pts.Title)}</h3><p class=\"muted\">{pts.Ids.Length} points · hover for the image, click to open it</p><div class=\"scatter\" data-scatter=\"{scatterIndex++}\"></div>");
        }
        var whole = mine.Where(a => a.Kind == "display" && a.Input is null).ToList();
        if (whole.Count > 0)
        {
            sb.Append("<div class=\"wide\">");
            foreach (var a in whole)
                sb.Append($"<figure><a href=\"{E(Url(a.Path))}\" target=\"_blank\"><img loading=\"lazy\" src=\"{E(Url(a.Path))}\" alt=\"{E(a.Name)}\" width=\"{a.Shape.ElementAtOrDefault(1)}\"></a><figcaption>{E(a.Name)}</figcaption></figure> ");
            sb.Append("</div>");
        }
        var perInput = mine.Where(a => a.Kind == "display" && a.Input is not null).ToList();
        if (perInput.Count > 0)
        {
            var names = perInput.Select(a => a.Name).Distinct().ToList();
            ((JsonObject)data["galleries"]!)[id] = new JsonObject
            {
                ["names"] = new JsonArray(names.Select(n => (JsonNode)JsonValue.Create(n)!).ToArray()),
                ["items"] = new JsonArray(perInput.GroupBy(a => a.Input!).Select(g => (JsonNode)new JsonArray(g.Key,
                    new JsonArray(names.Select(n => g.FirstOrDefault(a => a.Name == n) is { } a ? (JsonNode?)JsonValue.Create(Url(a.Path)) : null).ToArray()))).ToArray()),
            };
            sb.Append($"<h3>Per-input images</h3><div class=\"gallery\" data-gallery=\"{E(id)}\"></div>");
        }
        var files = mine.Where(a => a.Kind != "display").ToList();
        if (files.Count > 0)
        {
            sb.Append($"<details><summary>{files.Count} data file(s)</summary><ul>");
            foreach (var g in files.GroupBy(a => (a.Name, PerInput: a.Input is not null)))
                sb.Append(g.Key.PerInput
                    ? $"<li>{E(g.Key.Name)}: {g.Count()} per-input arrays ({E(string.Join("×", g.First().Shape))} {E(g.First().Dtype)}), e.g. <a href=\"{E(Url(g.First().Path))}\">{E(g.First().Path)}</a></li>"
                    : $"<li><a href=\"{E(Url(g.First().Path))}\">{E(g.First().Path)}</a> <span class=\"muted\">{E(string.Join("×", g.First().Shape))} {E(g.First().Dtype)}</span></li>");
            sb.Append("</ul></details>");
        }
        if (mine.Count == 0 && s["error"] is null) sb.Append("<p class=\"muted\">No outputs.</p>");
        sb.Append("</section>\n");
    }
}
