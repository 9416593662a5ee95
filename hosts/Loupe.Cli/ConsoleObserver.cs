using System.Diagnostics;
using Loupe.Abstractions;
using Loupe.Core;

namespace Loupe.Cli;

/// <summary>Progress on stderr: one line per step, a live bar with ETA when stderr is a terminal.</summary>
internal sealed class ConsoleObserver(bool quiet) : IRunObserver
{
    readonly bool _live = !quiet && !Console.IsErrorRedirected;
    readonly bool _color = !Console.IsErrorRedirected && Environment.GetEnvironmentVariable("NO_COLOR") is null;
    readonly Stopwatch _step = new();
    string _label = "";
    long _lastDraw;

    public void StepStarted(string stepId, string uses, int index, int count)
    {
        _label = SafeFile.Printable($"[{index + 1}/{count}] {stepId} ({uses})");
        _step.Restart();
        if (!quiet && !_live) Console.Error.WriteLine(_label + " ...");
    }

    public void StepProgress(string stepId, double fraction, string? message)
    {
        if (!_live) return;
        var now = _step.ElapsedMilliseconds;
        if (now - _lastDraw < 100 && fraction < 1) return;
        _lastDraw = now;
        const int width = 24;
        int filled = (int)Math.Round(fraction * width);
        var eta = fraction > 0.01 ? TimeSpan.FromMilliseconds(now / fraction - now) : (TimeSpan?)null;
        var line = $"{_label} [{new string('#', filled)}{new string('.', width - filled)}] {fraction,4:P0}{(eta is { } e ? $" ETA {e:mm\\:ss}" : "")} {SafeFile.Printable(message ?? "")}";
        Raw.Write("\r" + line.PadRight(Math.Min(Console.BufferWidth > 0 ? Console.BufferWidth - 1 : 100, 120)));
    }

    public void StepFinished(string stepId, string status, TimeSpan duration, string? error)
    {
        if (quiet) { if (error != null) Console.Error.WriteLine($"{stepId}: {status}: {error}"); return; }
        if (_live) Raw.Write("\r" + new string(' ', 100) + "\r");
        var mark = status == "succeeded" ? Paint("✓", "32") : Paint("✗", "31");
        Raw.WriteLine($"{mark} {_label} {status} in {duration.TotalSeconds:F2}s{(error is null ? "" : ": " + SafeFile.Printable(error))}");
    }

    public void Warning(string message)
    {
        if (!quiet) Raw.WriteLine(Paint("warning: ", "33") + SafeFile.Printable(message));
    }

    /// <summary>Standard error without filtering: every text written to it is cleaned here first.</summary>
    static TextWriter Raw => PrintableWriter.RawError;

    string Paint(string s, string code) => _color ? $"\u001b[{code}m{s}\u001b[0m" : s;

    public void PrintSummary(RunResult result, TimeSpan elapsed)
    {
        if (!quiet)
        {
            var steps = result.Manifest?["steps"]?.AsArray();
            if (steps is not null)
            {
                // Columns as wide as their longest entry, so long step ids and technique names stay aligned.
                var rows = steps.Select(s => (Id: (string?)s!["id"] ?? "", Uses: (string?)s["uses"] ?? "", Status: (string?)s["status"] ?? "",
                    Time: $"{(s["durationMs"]?.GetValue<double>() ?? 0) / 1000:F2}s")).ToList();
                int wi = Math.Max(4, rows.Max(r => r.Id.Length)), wu = Math.Max(4, rows.Max(r => r.Uses.Length)), ws = Math.Max(6, rows.Max(r => r.Status.Length));
                Console.WriteLine($"{"step".PadRight(wi)}  {"uses".PadRight(wu)}  {"status".PadRight(ws)}  {"time",8}");
                foreach (var r in rows) Console.WriteLine($"{r.Id.PadRight(wi)}  {r.Uses.PadRight(wu)}  {r.Status.PadRight(ws)}  {r.Time,8}");
            }
            if (result.Manifest?["metricsTable"] is System.Text.Json.Nodes.JsonArray table && table.Count > 0)
            {
                Console.WriteLine();
                int wm = Math.Max(10, table.Max(r => ((string?)r!["step"] ?? "").Length)), wo = Math.Max(2, table.Max(r => r!["of"]?.ToString().Length ?? 0));
                Console.WriteLine($"{"metrics of".PadRight(wm)}  {"of".PadRight(wo)}  values");
                foreach (var row in table)
                {
                    // A curve's points (ROAD's 50 percentages by default) would fill a screen: the first few, then a count.
                    var all = row!["metrics"]!.AsObject();
                    var metrics = all.Take(ShownMetrics).Select(kv => $"{kv.Key}={kv.Value!.GetValue<double>():G4}").ToList();
                    if (all.Count > ShownMetrics) metrics.Add($"… {all.Count - ShownMetrics} more in metrics.csv");
                    Console.WriteLine($"{((string?)row["step"] ?? "").PadRight(wm)}  {(row["of"]?.ToString() ?? "").PadRight(wo)}  {string.Join("  ", metrics)}");
                }
            }
            if (result.Manifest?["methodsTable"] is System.Text.Json.Nodes.JsonObject methods)
            {
                Console.WriteLine("methods × metrics (mean ± std over inputs; ↑ higher is better, ↓ lower is better)");
                foreach (var line in Loupe.Core.MethodsTable.Lines(methods)) Console.WriteLine(line);
                Console.WriteLine();
            }
            PrintPredictions(result.Manifest, result.OutDir!);
            Console.WriteLine();
            Console.WriteLine($"finished in {elapsed.TotalSeconds:F1}s; status: {result.Manifest?["status"]}");
        }
        Console.WriteLine($"outputs: {result.OutDir}");
        if (!quiet) Console.WriteLine($"manifest: {Path.Combine(result.OutDir!, "manifest.json")}");
    }

    /// <summary>Metrics printed per step in the run summary (every one is in metrics.csv and the manifest).</summary>
    const int ShownMetrics = 8;

    /// <summary>The first inputs' top-3 predictions (all of them are in the run folder's predictions file).</summary>
    static void PrintPredictions(System.Text.Json.Nodes.JsonNode? manifest, string runDir)
    {
        const int shown = 8;
        var rows = Loupe.Core.Predictions.Read(manifest, runDir).Take(shown).Select(e => (Id: (string?)e["id"] ?? "", Truth: (string?)e["labelName"] ?? "",
            Top: string.Join(", ", e["top"]!.AsArray().Take(3).Select(t => $"{(string?)t!["label"]} {((double)t["p"]! * 100).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture)}%")))).ToList();
        if (rows.Count == 0) return;
        long count = (long?)manifest!["predictions"]!["count"] ?? (manifest["predictions"]!["inputs"] as System.Text.Json.Nodes.JsonArray)?.Count ?? rows.Count;
        bool truth = rows.Any(r => r.Truth.Length > 0);
        int wi = Math.Max(5, rows.Max(r => r.Id.Length)), wt = Math.Max(4, rows.Max(r => r.Truth.Length));
        Console.WriteLine();
        Console.WriteLine($"{"input".PadRight(wi)}  {(truth ? "true".PadRight(wt) + "  " : "")}predicted (top 3; top {(int?)manifest["predictions"]!["topK"]} in {Loupe.Core.Predictions.FileName})");
        foreach (var r in rows) Console.WriteLine($"{r.Id.PadRight(wi)}  {(truth ? r.Truth.PadRight(wt) + "  " : "")}{r.Top}");
        if (count > shown) Console.WriteLine($"... and {count - shown} more");
    }
}
