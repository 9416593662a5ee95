using System.Text;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using static Loupe.Core.Report.Html;

namespace Loupe.Core.Report;

/// <summary><c>loupe compare RUN_A RUN_B</c>: what differs between two runs (pipeline, model, data, versions, step
/// options) and, for every step with the same id and technique in both, the differences of its arrays (same path in
/// both runs: max and mean |Δ|, relative L2, a delta heatmap per input) and of its metrics. Steps, inputs or arrays
/// found in one run only are listed, never fatal: what matches is compared.</summary>
public static class RunComparison
{
    /// <summary>Per-input delta heatmaps written per step (all arrays are compared numerically).</summary>
    public const int MaxHeatmapsPerStep = 48;

    /// <summary>Compares two run folders and writes <c>compare.json</c>, <c>compare.html</c> and the delta heatmaps
    /// under <paramref name="outDir"/> (which must not exist or be empty). Returns compare.json's content.
    /// Throws <see cref="LoupeException"/> when either folder is not a Loupe run or the output folder is not empty.</summary>
    public static JsonObject Write(string runA, string runB, string outDir)
    {
        var a = RunFolder.Open(runA);
        var b = RunFolder.Open(runB);
        outDir = Path.GetFullPath(outDir);
        if (File.Exists(outDir) || Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new LoupeException($"output folder {outDir} already exists and is not empty; choose another --out");
        Directory.CreateDirectory(outDir);
        var result = Compare(a, b, outDir);
        AtomicFile.Write(Path.Combine(outDir, "compare.json"), Encoding.UTF8.GetBytes(result.ToJsonString(Manifest.JsonOptions)));
        AtomicFile.Write(Path.Combine(outDir, "compare.html"), Encoding.UTF8.GetBytes(Render(result, a, b, outDir)));
        return result;
    }

    static JsonObject Describe(RunFolder r) => new()
    {
        ["dir"] = r.Directory, ["name"] = r.Name, ["runId"] = r.Manifest["runId"]?.DeepClone(), ["status"] = r.Status,
        ["pipelineFile"] = r.Manifest["pipelineFile"]?.DeepClone(),
    };

    /// <summary>Run-level fields whose differences are listed (timestamps and ids are expected to differ).</summary>
    static readonly string[] RunFields = ["pipelineFile", "pipelineSha256", "overrides", "seed", "loupe", "model", "data", "environment.torchSharp", "environment.contract", "environment.plugins"];

    static JsonObject Compare(RunFolder a, RunFolder b, string outDir)
    {
        var differences = new JsonArray();
        foreach (var f in RunFields) Diff(f, Get(a.Manifest, f), Get(b.Manifest, f), differences);
        var stepsA = a.Steps.ToDictionary(s => s["id"]!.ToString());
        var stepsB = b.Steps.ToDictionary(s => s["id"]!.ToString());
        var steps = new JsonArray();
        foreach (var sa in a.Steps)
        {
            var id = sa["id"]!.ToString();
            if (!stepsB.TryGetValue(id, out var sb)) continue;
            string? usesA = sa["uses"]?.ToString(), usesB = sb["uses"]?.ToString();
            var step = new JsonObject { ["id"] = id, ["uses"] = usesA, ["statusA"] = sa["status"]?.DeepClone(), ["statusB"] = sb["status"]?.DeepClone() };
            steps.Add(step);
            if (usesA != usesB)
            {
                step["usesB"] = usesB;
                step["compared"] = false;
                step["reason"] = $"different techniques ({usesA} in A, {usesB} in B)";
                continue;
            }
            step["compared"] = true;
            var optionDiffs = new JsonArray();
            Diff("options", sa["options"], sb["options"], optionDiffs);
            Diff("target", sa["target"], sb["target"], optionDiffs);
            step["differences"] = optionDiffs;
            CompareArtifacts(a, b, id, outDir, step);
            step["metrics"] = MetricDeltas(sa["metrics"] as JsonObject, sb["metrics"] as JsonObject);
        }
        return new JsonObject
        {
            ["a"] = Describe(a), ["b"] = Describe(b),
            ["differences"] = differences,
            ["stepsOnlyInA"] = new JsonArray(a.Steps.Select(s => s["id"]!.ToString()).Where(id => !stepsB.ContainsKey(id)).Select(id => (JsonNode)id).ToArray()),
            ["stepsOnlyInB"] = new JsonArray(b.Steps.Select(s => s["id"]!.ToString()).Where(id => !stepsA.ContainsKey(id)).Select(id => (JsonNode)id).ToArray()),
            ["steps"] = steps,
        };
    }

    static JsonNode? Get(JsonObject root, string dotted)
    {
        JsonNode? n = root;
        foreach (var part in dotted.Split('.')) n = (n as JsonObject)?[part];
        return n;
    }

    /// <summary>Leaf-level differences between two JSON values (objects by key, arrays of equal length by index).</summary>
    static void Diff(string path, JsonNode? x, JsonNode? y, JsonArray into)
    {
        if (into.Count >= 200 || JsonNode.DeepEquals(x, y)) return;
        if (x is JsonObject ox && y is JsonObject oy)
        {
            foreach (var k in ox.Select(kv => kv.Key).Union(oy.Select(kv => kv.Key))) Diff($"{path}.{k}", ox[k], oy[k], into);
            return;
        }
        if (x is JsonArray ax && y is JsonArray ay && ax.Count == ay.Count)
        {
            for (int i = 0; i < ax.Count; i++) Diff($"{path}[{i}]", ax[i], ay[i], into);
            return;
        }
        into.Add(new JsonObject { ["field"] = path, ["a"] = x?.DeepClone(), ["b"] = y?.DeepClone() });
    }

    static void CompareArtifacts(RunFolder a, RunFolder b, string step, string outDir, JsonObject into)
    {
        var rawA = a.Artifacts.Where(x => x.Step == step && x.Kind == "raw").ToDictionary(x => x.Path);
        var rawB = b.Artifacts.Where(x => x.Step == step && x.Kind == "raw").ToDictionary(x => x.Path);
        var rows = new JsonArray();
        int heatmaps = 0, identical = 0;
        double maxAbs = 0, sumRel = 0;
        int compared = 0;
        foreach (var (path, ra) in rawA)
        {
            if (!rawB.ContainsKey(path)) continue;
            var row = new JsonObject { ["path"] = path, ["input"] = ra.Input, ["name"] = ra.Name };
            rows.Add(row);
            NdArray x, y;
            try { x = Npy.Read(a.PathOf(ra)); y = Npy.Read(b.PathOf(rawB[path])); }
            catch (Exception e) when (e is IOException or LoupeException or InvalidDataException or UnauthorizedAccessException)
            {
                row["note"] = "not compared: " + e.Message;
                continue;
            }
            if (!x.Shape.SequenceEqual(y.Shape))
            {
                row["note"] = $"shapes differ: ({string.Join("×", x.Shape)}) vs ({string.Join("×", y.Shape)})";
                continue;
            }
            double max = 0, sum = 0, d2 = 0, a2 = 0;
            for (int i = 0; i < x.Data.Length; i++)
            {
                double d = Math.Abs((double)x.Data[i] - y.Data[i]);
                max = Math.Max(max, d); sum += d; d2 += d * d; a2 += (double)x.Data[i] * x.Data[i];
            }
            double rel = a2 > 0 ? Math.Sqrt(d2 / a2) : d2 > 0 ? double.PositiveInfinity : 0;
            row["shape"] = new JsonArray(x.Shape.Select(s => (JsonNode)s).ToArray());
            row["maxAbs"] = max; row["meanAbs"] = x.Data.Length == 0 ? 0 : sum / x.Data.Length;
            row["relL2"] = double.IsFinite(rel) ? rel : null;
            compared++; sumRel += double.IsFinite(rel) ? rel : 0; maxAbs = Math.Max(maxAbs, max);
            if (max == 0) identical++;
            if (ra.Input is not null && x.Shape.Length >= 2 && x.Shape[^1] >= 2 && x.Shape[^2] >= 2 && heatmaps < MaxHeatmapsPerStep)
            {
                var rel2 = Path.ChangeExtension(path, ".delta.png");
                AtomicFile.Write(Path.Combine(outDir, rel2), Png.Encode(DeltaHeatmap(x, y)));
                row["delta"] = rel2.Replace('\\', '/');
                heatmaps++;
            }
        }
        into["arrays"] = rows;
        into["summary"] = new JsonObject
        {
            ["compared"] = compared, ["notCompared"] = rows.Count - compared, ["identical"] = identical, ["maxAbs"] = maxAbs, ["meanRelL2"] = compared == 0 ? null : sumRel / compared,
        };
        into["arraysOnlyInA"] = new JsonArray(rawA.Keys.Where(p => !rawB.ContainsKey(p)).Select(p => (JsonNode)p).ToArray());
        into["arraysOnlyInB"] = new JsonArray(rawB.Keys.Where(p => !rawA.ContainsKey(p)).Select(p => (JsonNode)p).ToArray());
    }

    /// <summary>|A − B| over the last two axes (mean over the leading ones), coloured with viridis on the scale
    /// 0 … max(|A|, |B|): yellow means the difference is as large as the maps themselves. Small maps are enlarged
    /// (nearest) to at least 112 px.</summary>
    public static RgbImage DeltaHeatmap(NdArray x, NdArray y)
    {
        int h = (int)x.Shape[^2], w = (int)x.Shape[^1], planes = x.Data.Length / (h * w);
        var delta = new double[h * w];
        double scale = 0;
        for (int i = 0; i < x.Data.Length; i++)
        {
            delta[i % (h * w)] += Math.Abs((double)x.Data[i] - y.Data[i]) / planes;
            scale = Math.Max(scale, Math.Max(Math.Abs(x.Data[i]), Math.Abs(y.Data[i])));
        }
        int k = Math.Max(1, (int)Math.Ceiling(112.0 / Math.Max(h, w)));
        var lut = Display.Viridis;
        var px = new byte[h * k * w * k * 3];
        for (int yy = 0; yy < h * k; yy++)
            for (int xx = 0; xx < w * k; xx++)
            {
                double v = scale > 0 ? Math.Clamp(delta[yy / k * w + xx / k] / scale, 0, 1) : 0;
                int c = (int)Math.Round(v * 255), o = (yy * w * k + xx) * 3;
                px[o] = lut[c * 3]; px[o + 1] = lut[c * 3 + 1]; px[o + 2] = lut[c * 3 + 2];
            }
        return new RgbImage(w * k, h * k, px);
    }

    static JsonArray MetricDeltas(JsonObject? ma, JsonObject? mb)
    {
        var rows = new JsonArray();
        var names = (ma?.Select(kv => kv.Key) ?? []).Union(mb?.Select(kv => kv.Key) ?? []);
        foreach (var n in names)
        {
            double? va = ma?[n] is JsonValue x && x.TryGetValue<double>(out var dx) ? dx : null;
            double? vb = mb?[n] is JsonValue y && y.TryGetValue<double>(out var dy) ? dy : null;
            rows.Add(new JsonObject { ["metric"] = n, ["a"] = va, ["b"] = vb, ["delta"] = va is { } p && vb is { } q ? q - p : null });
        }
        return rows;
    }

    static string Render(JsonObject r, RunFolder a, RunFolder b, string outDir)
    {
        var sb = new StringBuilder();
        string Rel(RunFolder run, string path) => Url(Path.GetRelativePath(outDir, Path.Combine(run.Directory, path)));
        sb.Append($"<header><h1>Compare: {E(a.Name)} vs {E(b.Name)}</h1><p class=\"muted\">A = {E(a.Directory)}<br>B = {E(b.Directory)}</p></header><main>");
        sb.Append("<section id=\"differences\"><h2>What differs</h2>");
        var diffs = (JsonArray)r["differences"]!;
        if (diffs.Count == 0) sb.Append("<p>Same pipeline, model, data and versions.</p>");
        else
        {
            sb.Append("<table><tr><th>field</th><th>A</th><th>B</th></tr>");
            foreach (var d in diffs) sb.Append($"<tr><td>{E(d!["field"]!.ToString())}</td><td>{E(Text(d["a"]))}</td><td>{E(Text(d["b"]))}</td></tr>");
            sb.Append("</table>");
        }
        foreach (var (key, label) in new[] { ("stepsOnlyInA", "Steps only in A"), ("stepsOnlyInB", "Steps only in B") })
            if (r[key] is JsonArray only && only.Count > 0) sb.Append($"<p><b>{label}:</b> {E(string.Join(", ", only.Select(x => x!.ToString())))}</p>");
        sb.Append("</section>\n");
        foreach (var s in (JsonArray)r["steps"]!)
        {
            var id = s!["id"]!.ToString();
            sb.Append($"<section class=\"step\" data-step=\"{E(id)}\"><h2>{E(id)} <span class=\"muted\">({E(s["uses"]?.ToString())})</span></h2>")
              .Append($"<p class=\"muted\">A: {E(s["statusA"]?.ToString())} · B: {E(s["statusB"]?.ToString())}</p>");
            if (s["compared"]?.GetValue<bool>() != true) { sb.Append($"<p>Not compared: {E(s["reason"]?.ToString())}</p></section>\n"); continue; }
            if (s["differences"] is JsonArray od && od.Count > 0)
                sb.Append("<p>Options differ: ").Append(E(string.Join("; ", od.Select(d => $"{d!["field"]}: {Text(d["a"])} → {Text(d["b"])}")))).Append("</p>");
            var sum = s["summary"]!;
            sb.Append($"<p>{sum["compared"]} arrays compared, {sum["identical"]} identical · max |Δ| {Num((double)sum["maxAbs"]!)} · mean relative L2 {(sum["meanRelL2"] is JsonValue mr ? Num((double)mr) : "—")}</p>");
            if (s["metrics"] is JsonArray ms && ms.Count > 0)
            {
                sb.Append("<table class=\"metrics\"><tr><th>metric</th><th>A</th><th>B</th><th>B − A</th></tr>");
                foreach (var m in ms)
                    sb.Append($"<tr><td>{E(m!["metric"]!.ToString())}</td>{string.Concat(new[] { "a", "b", "delta" }.Select(k => $"<td class=\"num\">{(m[k] is JsonValue v ? Num((double)v) : "—")}</td>"))}</tr>");
                sb.Append("</table>");
            }
            var arrays = ((JsonArray)s["arrays"]!).Where(x => x is not null).ToList();
            var withDelta = arrays.Where(x => x!["delta"] is not null).ToList();
            if (withDelta.Count > 0)
            {
                sb.Append("<div class=\"cards\">");
                foreach (var x in withDelta)
                {
                    var input = x!["input"]?.ToString();
                    string Shown(RunFolder run) => run.Artifacts.FirstOrDefault(d => d.Step == id && d.Kind == "display" && d.Input == input) is { } d
                        ? $"<img loading=\"lazy\" src=\"{E(Rel(run, d.Path))}\" alt=\"{E(input)}\">" : "";
                    sb.Append($"<figure class=\"card\">{Shown(a)}{Shown(b)}<img loading=\"lazy\" src=\"{E(Url(x["delta"]!.ToString()))}\" alt=\"delta {E(input)}\"><figcaption>{E(input)}: A · B · |Δ| (max {Num((double)x["maxAbs"]!)})</figcaption></figure>");
                }
                sb.Append("</div>");
            }
            sb.Append("<details><summary>every array</summary><table><tr><th>path</th><th>max |Δ|</th><th>mean |Δ|</th><th>rel. L2</th><th>note</th></tr>");
            foreach (var x in arrays)
                sb.Append($"<tr><td>{E(x!["path"]!.ToString())}</td>{string.Concat(new[] { "maxAbs", "meanAbs", "relL2" }.Select(k => $"<td class=\"num\">{(x[k] is JsonValue v ? Num((double)v) : "—")}</td>"))}<td>{E(x["note"]?.ToString())}</td></tr>");
            sb.Append("</table></details>");
            foreach (var (key, label) in new[] { ("arraysOnlyInA", "only in A"), ("arraysOnlyInB", "only in B") })
                if (s[key] is JsonArray only && only.Count > 0) sb.Append($"<p class=\"muted\">{only.Count} array(s) {label}, e.g. {E(only[0]!.ToString())}</p>");
            sb.Append("</section>\n");
        }
        sb.Append("</main>");
        return Page($"Loupe compare — {a.Name} vs {b.Name}", sb.ToString(), null, null);
    }
}
