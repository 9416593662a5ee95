using System.Globalization;
using System.Text.Json.Nodes;

namespace Loupe.Core;

/// <summary>Methods × metrics: for every step that evaluates another (<c>of:</c>) and declares the direction of its
/// metric series (<c>IArtifactSink.MetricDirection</c>), the series' mean ± std per evaluated step (the method; columns
/// are the metric components), with the
/// direction, and each method's mean rank over the metrics it has (1 = best). Built from the step records alone, so
/// runs and merges produce the same table; the console, the manifest (<c>methodsTable</c>) and the report show it.</summary>
public static class MethodsTable
{
    /// <summary>The table as manifest JSON, or null when no step declared a direction.</summary>
    public static JsonObject? Build(IEnumerable<JsonObject> stepRecords)
    {
        var cells = new Dictionary<(string Method, string Column), (double Mean, double Std)>();
        var columns = new List<(string Name, bool Up)>();
        var methods = new List<string>();
        foreach (var rec in stepRecords)
        {
            if (rec["of"] is not JsonValue ofv || rec["directions"] is not JsonObject dirs || rec["metrics"] is not JsonObject metrics) continue;
            var method = ofv.ToString();
            var uses = rec["uses"]?.ToString() ?? "";
            foreach (var (name, up) in dirs)
            {
                // A series' mean and std, or a rate (one value, e.g. the pointing game's hit rate: the share of inputs).
                if ((metrics[name + "_mean"] ?? metrics[name]) is not JsonValue mv || !mv.TryGetValue<double>(out var mean)) continue;
                double std = metrics[name + "_std"] is JsonValue sv && sv.TryGetValue<double>(out var s) ? s : double.NaN;
                // A column is the component (its series too when it declares several); a second step of the same
                // component on the same method (e.g. MoRF and LeRF) gets its own column, named after the step.
                var label = dirs.Count == 1 ? uses : $"{uses}.{name}";
                // (the step id without the method's own prefix, e.g. 'saliency.road-lerf' → 'road-lerf', so that the
                // column is shared by every method evaluated the same way)
                var id = rec["id"]?.ToString() ?? "";
                var step = id.StartsWith(method + ".", StringComparison.Ordinal) ? id[(method.Length + 1)..] : id;
                var column = cells.ContainsKey((method, label)) ? $"{label} [{step}]" : label;
                if (!columns.Any(c => c.Name == column)) columns.Add((column, up!.GetValue<bool>()));
                if (!methods.Contains(method)) methods.Add(method);
                cells[(method, column)] = (mean, std);
            }
        }
        if (columns.Count == 0) return null;
        var ranks = methods.ToDictionary(m => m, _ => new List<double>());
        var rank = new Dictionary<(string Method, string Column), double>();
        foreach (var (name, up) in columns)
        {
            var have = methods.Where(m => cells.TryGetValue((m, name), out var c) && double.IsFinite(c.Mean)).ToList();
            foreach (var m in have)
            {
                double v = cells[(m, name)].Mean;
                int better = have.Count(o => up ? cells[(o, name)].Mean > v : cells[(o, name)].Mean < v);
                int ties = have.Count(o => cells[(o, name)].Mean == v);
                rank[(m, name)] = better + (ties + 1) / 2.0;
                ranks[m].Add(rank[(m, name)]);
            }
        }
        JsonNode? Num(double v) => double.IsFinite(v) ? JsonValue.Create(v) : null;
        return new JsonObject
        {
            ["methods"] = new JsonArray(methods.Select(m => (JsonNode)JsonValue.Create(m)!).ToArray()),
            ["metrics"] = new JsonArray(columns.Select(c => (JsonNode)new JsonObject { ["name"] = c.Name, ["higherIsBetter"] = c.Up }).ToArray()),
            ["mean"] = new JsonArray(methods.Select(m => (JsonNode)new JsonArray(columns.Select(c => cells.TryGetValue((m, c.Name), out var v) ? Num(v.Mean) : null).ToArray())).ToArray()),
            ["std"] = new JsonArray(methods.Select(m => (JsonNode)new JsonArray(columns.Select(c => cells.TryGetValue((m, c.Name), out var v) ? Num(v.Std) : null).ToArray())).ToArray()),
            ["rank"] = new JsonArray(methods.Select(m => (JsonNode)new JsonArray(columns.Select(c => rank.TryGetValue((m, c.Name), out var r) ? JsonValue.Create(r) : null).ToArray())).ToArray()),
            ["meanRank"] = new JsonArray(methods.Select(m => ranks[m].Count == 0 ? null : JsonValue.Create(ranks[m].Average())).ToArray()),
        };
    }

    /// <summary>"mean ± std" with 3 significant digits ("—" when absent).</summary>
    public static string Cell(JsonNode? mean, JsonNode? std)
    {
        if (mean is null) return "—";
        static string F(double v) => v.ToString("G3", CultureInfo.InvariantCulture);
        var m = mean.GetValue<double>();
        return std is null ? F(m) : $"{F(m)} ± {F(std.GetValue<double>())}";
    }

    /// <summary>The table as text lines (console): one row per method, arrows give the direction (↑ higher is better).</summary>
    public static IEnumerable<string> Lines(JsonObject table)
    {
        var methods = table["methods"]!.AsArray().Select(m => m!.ToString()).ToList();
        var cols = table["metrics"]!.AsArray().Select(c => $"{c!["name"]} {((bool)c["higherIsBetter"]! ? "↑" : "↓")}").ToList();
        var rows = methods.Select((m, i) => new[] { m }.Concat(cols.Select((_, j) => Cell(table["mean"]![i]![j], table["std"]![i]![j])))
            .Append(table["meanRank"]![i] is { } r ? r.GetValue<double>().ToString("F2", CultureInfo.InvariantCulture) : "—").ToArray()).ToList();
        var header = new[] { "method" }.Concat(cols).Append("mean rank").ToArray();
        var widths = header.Select((h, j) => Math.Max(h.Length, rows.Select(r => r[j].Length).DefaultIfEmpty(0).Max())).ToArray();
        string Line(string[] cells) => string.Join("  ", cells.Select((c, j) => j == 0 ? c.PadRight(widths[j]) : c.PadLeft(widths[j])));
        yield return Line(header);
        foreach (var r in rows) yield return Line(r);
    }
}
