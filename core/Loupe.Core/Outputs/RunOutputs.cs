using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using TorchSharp;

namespace Loupe.Core;

/// <summary>Run-level outputs, written from the step records and artifacts of a finished run (or of merged shards):
/// the metrics table and the methods × images comparison.</summary>
internal static class RunOutputs
{
    /// <summary>The run-level outputs, from the step records and artifacts (also used by <c>loupe merge</c>).</summary>
    public static void Write(string outDir, List<JsonObject> stepRecords, List<ArtifactRecord> artifacts, JsonObject manifest, IRunObserver? observer)
    {
        WriteMetricsTable(outDir, stepRecords, artifacts, manifest);
        try { WriteComparison(outDir, stepRecords, artifacts, manifest); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or SixLabors.ImageSharp.ImageFormatException)
        {
            observer?.Warning($"comparison grid not written: {e.Message}");
        }
    }

    /// <summary>Every metric of every step (e.g. each faithfulness metric × each attribution step it measures, as
    /// mean and std over images) in one table: <c>metrics.csv</c> and the manifest's <c>metricsTable</c>.</summary>
    static void WriteMetricsTable(string outDir, List<JsonObject> stepRecords, List<ArtifactRecord> artifacts, JsonObject manifest)
    {
        var rows = new List<(string Step, string Uses, string Of, string Metric, double Value, bool? Up)>();
        foreach (var rec in stepRecords)
        {
            if (rec["metrics"] is not JsonObject metrics) continue;
            string id = (string)rec["id"]!, uses = (string)rec["uses"]!, of = (string?)rec["of"] ?? "";
            var dirs = rec["directions"] as JsonObject;
            bool? Up(string metric) => dirs?.FirstOrDefault(d => metric == d.Key || metric == d.Key + "_mean" || metric == d.Key + "_std").Value?.GetValue<bool>();
            foreach (var (name, value) in metrics)
                if (value is JsonValue v && v.TryGetValue<double>(out var d)) rows.Add((id, uses, of, name, d, Up(name)));
        }
        if (rows.Count == 0) return;
        static string Csv(string s) => s.Contains(',') || s.Contains('"') ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;
        // higher_is_better: true/false for metrics whose step declared a direction, empty otherwise.
        var sb = new System.Text.StringBuilder("step,uses,of,metric,value,higher_is_better\n");
        foreach (var r in rows)
            sb.Append($"{Csv(r.Step)},{Csv(r.Uses)},{Csv(r.Of)},{Csv(r.Metric)},{r.Value.ToString("R", System.Globalization.CultureInfo.InvariantCulture)},{(r.Up is { } up ? (up ? "true" : "false") : "")}\n");
        AtomicFile.Write(Path.Combine(outDir, "metrics.csv"), System.Text.Encoding.UTF8.GetBytes(sb.ToString()));
        artifacts.Add(new ArtifactRecord("metrics", null, "data", "metrics.csv", [rows.Count, 6], "csv", null, "metrics"));
        if (MethodsTable.Build(stepRecords) is { } methods) manifest["methodsTable"] = methods;
        manifest["metricsTable"] = new JsonArray(rows.GroupBy(r => r.Step).Select(g => (JsonNode)new JsonObject
        {
            ["step"] = g.Key, ["uses"] = g.First().Uses, ["of"] = g.First().Of.Length == 0 ? null : g.First().Of,
            ["metrics"] = new JsonObject(g.Select(r => KeyValuePair.Create(r.Metric, (JsonNode?)JsonValue.Create(r.Value)))),
        }).ToArray());
    }

    /// <summary>Methods × images: when two or more steps wrote a per-input display image for the same inputs, one grid
    /// (rows: the first 8 shared inputs; columns: the steps in pipeline order, each step's first per-input image),
    /// labelled: a title per column (step id · technique), a label per row (input id, prediction, true label; without
    /// predictions, the target its first cell explains, and under a cell's value range the target it explains when
    /// that differs).</summary>
    static void WriteComparison(string outDir, List<JsonObject> stepRecords, List<ArtifactRecord> artifacts, JsonObject manifest)
    {
        var perStep = artifacts.Where(a => a.Kind == "display" && a.Input is not null)
            .GroupBy(a => a.Step)
            .Select(g => (Step: g.Key, Name: g.First().Name, ByInput: g.Where(a => a.Name == g.First().Name).GroupBy(a => a.Input!).ToDictionary(x => x.Key, x => x.First())))
            .ToList();
        // Only per-input overlays of the common size (sheets of several channels, plots etc. are left out).
        var size = perStep.Select(s => (s.ByInput.Values.First().Shape[0], s.ByInput.Values.First().Shape[1]))
            .GroupBy(x => x).OrderByDescending(g => g.Count()).FirstOrDefault()?.Key;
        perStep = perStep.Where(s => (s.ByInput.Values.First().Shape[0], s.ByInput.Values.First().Shape[1]) == size).ToList();
        if (perStep.Count < 2) return;
        var inputs = perStep[0].ByInput.Keys.Where(i => perStep.Count(s => s.ByInput.ContainsKey(i)) >= 2).Take(8).ToList();
        if (inputs.Count == 0) return;
        var cells = new List<IReadOnlyList<RgbImage?>>();
        foreach (var input in inputs)
            cells.Add(perStep.Select(s => s.ByInput.TryGetValue(input, out var a) ? Png.Load(Path.Combine(outDir, a.Path)) : null).ToList());
        var uses = stepRecords.ToDictionary(r => (string)r["id"]!, r => (string?)r["uses"] ?? "");
        var titles = perStep.Select(s => uses.GetValueOrDefault(s.Step) is { Length: > 0 } u && u != s.Step ? $"{s.Step} · {u}" : s.Step).ToList();
        var predictions = Predictions.ById(manifest, outDir, inputs);
        // Without class predictions (a detector, a segmentation model) a row is labelled with what its first cell explains
        // (the target's own label: "bicycle 0.48 at [2.1, 37.1, 13.7, 42.9]"); a cell that explains something else says
        // so under its value range.
        string? RowTarget(string input) => perStep.Select(s => s.ByInput.TryGetValue(input, out var a) ? a.Target : null).FirstOrDefault(t => t is not null);
        var rowTargets = inputs.ToDictionary(i => i, i => predictions.ContainsKey(i) ? null : RowTarget(i));
        var rowLabels = inputs.Select(i => predictions.TryGetValue(i, out var p) ? RowLabel(i, p) : rowTargets[i] is { } t ? $"{i}\n{t}" : i).ToList();
        // Each cell's value range (what the colours span on that map; recorded with its overlay), under the cell.
        string? Caption(string input, ArtifactRecord a) =>
            rowTargets[input] is { } row && a.Target is { } own && own != row ? (a.Range is null ? own : $"{a.Range}\n{own}") : a.Range;
        var captions = inputs.Select(i => (IReadOnlyList<string?>)perStep.Select(s => s.ByInput.TryGetValue(i, out var a) ? Caption(i, a) : null).ToList()).ToList();
        var grid = Figure.Table(cells, titles, rowLabels, "Methods × images", captions.Any(r => r.Any(c => c is not null)) ? captions : null);
        AtomicFile.Write(Path.Combine(outDir, "comparison.png"), Png.Encode(grid));
        artifacts.Add(new ArtifactRecord("comparison", null, "display", "comparison.png", [grid.Height, grid.Width, 3], "uint8", null, "comparison"));
        manifest["comparison"] = new JsonObject
        {
            ["path"] = "comparison.png",
            ["columns"] = new JsonArray(perStep.Select(s => (JsonNode)JsonValue.Create($"{s.Step}/{s.Name}")!).ToArray()),
            ["rows"] = new JsonArray(inputs.Select(i => (JsonNode)JsonValue.Create(i)!).ToArray()),
            ["rowLabels"] = new JsonArray(rowLabels.Select(l => (JsonNode)JsonValue.Create(l)!).ToArray()),
            ["captions"] = new JsonArray(captions.Select(r => (JsonNode)new JsonArray(r.Select(c => (JsonNode?)(c is null ? null : JsonValue.Create(c))).ToArray())).ToArray()),
        };
    }

    /// <summary>A comparison row's label: input id, predicted class and probability, true label when known.</summary>
    static string RowLabel(string id, JsonObject prediction)
    {
        var label = $"{id}\npred: {Predictions.Describe(prediction, withTruth: false)}";
        return prediction["labelName"] is { } truth ? $"{label}\ntrue: {(string?)truth}" : label;
    }
}
