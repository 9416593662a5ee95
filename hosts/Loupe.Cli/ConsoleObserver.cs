using System.Diagnostics;
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
        _label = $"[{index + 1}/{count}] {stepId} ({uses})";
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
        var line = $"{_label} [{new string('#', filled)}{new string('.', width - filled)}] {fraction,4:P0}{(eta is { } e ? $" ETA {e:mm\\:ss}" : "")} {message}";
        Console.Error.Write("\r" + line.PadRight(Math.Min(Console.BufferWidth > 0 ? Console.BufferWidth - 1 : 100, 120)));
    }

    public void StepFinished(string stepId, string status, TimeSpan duration, string? error)
    {
        if (quiet) { if (error != null) Console.Error.WriteLine($"{stepId}: {status}: {error}"); return; }
        if (_live) Console.Error.Write("\r" + new string(' ', 100) + "\r");
        var mark = status == "succeeded" ? Paint("✓", "32") : Paint("✗", "31");
        Console.Error.WriteLine($"{mark} {_label} {status} in {duration.TotalSeconds:F2}s{(error is null ? "" : ": " + error)}");
    }

    public void Warning(string message)
    {
        if (!quiet) Console.Error.WriteLine(Paint("warning: ", "33") + message);
    }

    string Paint(string s, string code) => _color ? $"\u001b[{code}m{s}\u001b[0m" : s;

    public void PrintSummary(RunResult result, TimeSpan elapsed)
    {
        if (!quiet)
        {
            var steps = result.Manifest?["steps"]?.AsArray();
            if (steps is not null)
            {
                Console.WriteLine($"{"step",-20} {"uses",-16} {"status",-10} {"time",8}");
                foreach (var s in steps)
                    Console.WriteLine($"{s!["id"],-20} {s["uses"],-16} {s["status"],-10} {(s["durationMs"]?.GetValue<double>() ?? 0) / 1000,7:F2}s");
            }
            if (result.Manifest?["metricsTable"] is System.Text.Json.Nodes.JsonArray table && table.Count > 0)
            {
                Console.WriteLine();
                Console.WriteLine($"{"metrics of",-24} {"of",-16} values");
                foreach (var row in table)
                {
                    var metrics = row!["metrics"]!.AsObject().Select(kv => $"{kv.Key}={kv.Value!.GetValue<double>():G4}");
                    Console.WriteLine($"{row["step"],-24} {row["of"]?.ToString() ?? "",-16} {string.Join("  ", metrics)}");
                }
                Console.WriteLine();
            }
            if (result.Manifest?["methodsTable"] is System.Text.Json.Nodes.JsonObject methods)
            {
                Console.WriteLine("methods × metrics (mean ± std over inputs; ↑ higher is better, ↓ lower is better)");
                foreach (var line in Loupe.Core.MethodsTable.Lines(methods)) Console.WriteLine(line);
                Console.WriteLine();
            }
            Console.WriteLine($"finished in {elapsed.TotalSeconds:F1}s; status: {result.Manifest?["status"]}");
        }
        Console.WriteLine($"outputs: {result.OutDir}");
        if (!quiet) Console.WriteLine($"manifest: {Path.Combine(result.OutDir!, "manifest.json")}");
    }
}
