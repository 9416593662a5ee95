using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Core;

namespace Loupe.Cli;

/// <summary>The CLI verbs. Exit codes: 0 success, 1 a step failed, 2 invalid pipeline or usage.</summary>
internal static class Commands
{
    internal static IReadOnlyList<string> PluginDirs
    {
        get
        {
            var extra = Environment.GetEnvironmentVariable("LOUPE_PLUGIN_PATH");
            var dirs = new List<string> { PluginHost.DefaultPluginDirectory };
            if (!string.IsNullOrEmpty(extra)) dirs.AddRange(extra.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries));
            return dirs;
        }
    }

    static void Error(string message) => Console.Error.WriteLine(message);

    static bool ParseShard(string? text, out ShardRequest? shard)
    {
        shard = null;
        if (text is null) return true;
        shard = ShardRequest.Parse(text, out var why);
        if (why is not null) Error("error: " + why);
        return shard is not null;
    }

    public static int Run(string[] files, string? outDir, string[] overrides, bool quiet, bool json, string? shardText = null)
    {
        if (outDir is not null && files.Length > 1) { Error("error: --out can only be used with a single pipeline file"); return 2; }
        if (!ParseShard(shardText, out var shard)) return 2;
        using var cts = new CancellationTokenSource();
        // Ctrl+C (SIGINT) or SIGTERM: cancel the current step, mark the rest "not run", write the manifest, exit 130.
        // A second Ctrl+C terminates at once (the manifest on disk is still valid: it is always replaced atomically).
        void OnSignal(PosixSignalContext e)
        {
            if (cts.IsCancellationRequested) return;
            e.Cancel = true;
            cts.Cancel();
            Console.Error.WriteLine($"\nloupe: {e.Signal}: stopping the current step and writing the manifest (Ctrl+C again to abort)...");
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        int worst = 0;
        var summaries = new JsonArray();
        foreach (var file in files)
        {
            var observer = new ConsoleObserver(quiet || json);
            var sw = Stopwatch.StartNew();
            var result = PipelineRunner.Run(new RunRequest(file) { OutDir = outDir, Overrides = overrides, PluginDirectories = PluginDirs, Observer = observer, Shard = shard }, cts.Token);
            sw.Stop();
            foreach (var e in result.Errors) Error(e.ToString());
            if (json) summaries.Add(Summary(file, result));
            else if (result.OutDir is not null) observer.PrintSummary(result, sw.Elapsed);
            worst = Math.Max(worst, result.ExitCode);
            if (cts.IsCancellationRequested) break;
        }
        if (json) Console.WriteLine(summaries.Count == 1 ? summaries[0]!.ToJsonString(Manifest.JsonOptions) : summaries.ToJsonString(Manifest.JsonOptions));
        return worst;
    }

    static JsonObject Summary(string file, RunResult r) => new()
    {
        ["pipeline"] = Path.GetFullPath(file),
        ["exitCode"] = r.ExitCode,
        ["outDir"] = r.OutDir,
        ["status"] = r.Manifest?["status"]?.GetValue<string>() ?? "invalid",
        ["errors"] = new JsonArray(r.Errors.Select(e => (JsonNode)JsonValue.Create(e.ToString())!).ToArray()),
        ["steps"] = r.Manifest?["steps"]?.DeepClone(),
    };

    public static int Merge(string[] dirs, string outDir, bool quiet, bool json, string[]? plugins = null)
    {
        var observer = new ConsoleObserver(quiet || json);
        var sw = Stopwatch.StartNew();
        var result = ShardMerger.Merge(new MergeRequest(dirs, outDir) { PluginDirectories = [.. PluginDirs, .. plugins ?? []], Observer = observer });
        foreach (var e in result.Errors) Error(e.ToString());
        if (json) Console.WriteLine(Summary((string?)result.Manifest?["pipelineFile"] ?? outDir, result).ToJsonString(Manifest.JsonOptions));
        else if (result.OutDir is not null) observer.PrintSummary(result, sw.Elapsed);
        return result.ExitCode;
    }

    public static int Validate(string file, string[] overrides, bool json, string? shardText = null)
    {
        if (!ParseShard(shardText, out var shard)) return 2;
        try
        {
            using var prepared = PipelineRunner.Prepare(new RunRequest(file) { Overrides = overrides, PluginDirectories = PluginDirs, Shard = shard });
            if (json) Console.WriteLine(new JsonObject { ["pipeline"] = Path.GetFullPath(file), ["valid"] = true, ["steps"] = prepared.Steps.Count }.ToJsonString());
            else Console.WriteLine($"{file}: valid ({prepared.Steps.Count} step(s): {string.Join(", ", prepared.Steps.Select(s => $"{s.Spec.Id} [{s.Spec.Uses}]"))})");
            foreach (var w in prepared.Warnings) Console.Error.WriteLine("warning: " + w);
            return 0;
        }
        catch (PipelineException e)
        {
            foreach (var err in e.Errors) Error(err.ToString());
            if (json) Console.WriteLine(new JsonObject { ["pipeline"] = Path.GetFullPath(file), ["valid"] = false, ["errors"] = new JsonArray(e.Errors.Select(x => (JsonNode)JsonValue.Create(x.ToString())!).ToArray()) }.ToJsonString());
            return 2;
        }
    }

    internal static ComponentRegistry? LoadRegistry()
    {
        try { return ComponentRegistry.Load(PluginDirs); }
        catch (LoupeException e) { Error("error: " + e.Message); return null; }
    }

    public static int Plugins(bool json)
    {
        using var registry = LoadRegistry();
        if (registry is null) return 2;
        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                plugins = registry.Plugins,
                components = registry.Components.Select(c => new { c.Id, Kind = c.Kind.ToString().ToLowerInvariant(), c.Description, c.Source }),
            }, Manifest.JsonOptions));
            return 0;
        }
        Console.WriteLine("plugin assemblies:");
        foreach (var p in registry.Plugins) Console.WriteLine($"  {p.Name} {p.Version} (contract {p.ContractVersion})  {p.Path}");
        int width = registry.Components.Select(c => c.Id.Length).DefaultIfEmpty(0).Max();
        foreach (var group in registry.Components.GroupBy(c => c.Kind).OrderBy(g => g.Key))
        {
            Console.WriteLine();
            Console.WriteLine(group.Key switch
            {
                ComponentKind.Model => "model backends:", ComponentKind.Data => "data sources:", ComponentKind.Analysis => "analyses (steps):",
                ComponentKind.Target => "targets:", var k => k.ToString().ToLowerInvariant() + ":",
            });
            foreach (var c in group.OrderBy(c => c.Id)) Console.WriteLine($"  {c.Id.PadRight(width)}  {c.Description}  [{c.Source}]");
        }
        return 0;
    }

    /// <summary><c>loupe plugins --verify [PIPELINE]</c>: every plugin assembly's path, version, contract version and
    /// SHA-256, read from the files without loading them; exit 2 when any is refused (wrong contract, pin mismatch...).</summary>
    public static int VerifyPlugins(string? pipeline, bool json)
    {
        var sources = PluginDirs.Select(d => new PluginSource(d)).ToList();
        if (pipeline is not null)
        {
            try { sources.AddRange(PipelineParser.Parse(pipeline).Plugins); }
            catch (PipelineException e) { foreach (var err in e.Errors) Error(err.ToString()); return 2; }
        }
        IReadOnlyList<PluginCheck> checks;
        try { checks = PluginHost.Verify(sources); }
        catch (LoupeException e) { Error("error: " + e.Message); return 2; }
        if (json) Console.WriteLine(JsonSerializer.Serialize(new { plugins = checks }, Manifest.JsonOptions));
        else
            foreach (var c in checks)
            {
                Console.WriteLine($"{(c.Ok ? "ok  " : "FAIL")} {c.Name ?? Path.GetFileNameWithoutExtension(c.Path)} {c.Version ?? "?"} (contract {c.ContractVersion?.ToString() ?? "none"})");
                Console.WriteLine($"     path    {c.Path}");
                if (c.Sha256.Length > 0) Console.WriteLine($"     sha256  {c.Sha256}{(c.PinnedSha256 is null ? "" : " (pinned)")}");
                if (c.Error is not null) Console.WriteLine($"     error   {c.Error}");
            }
        return checks.All(c => c.Ok) ? 0 : 2;
    }

    public static int Describe(string id, bool json)
    {
        using var registry = LoadRegistry();
        if (registry is null) return 2;
        var matches = registry.Components.Where(c => c.Id == id).ToList();
        if (matches.Count == 0)
        {
            Error($"error: no component '{id}'{Suggest.DidYouMean(id, registry.Components.Select(c => c.Id))}; run 'loupe plugins' for the list");
            return 2;
        }
        foreach (var c in matches)
        {
            var options = Inspector.Options(c.OptionsType, c.ImplementationType);
            if (json)
            {
                Console.WriteLine(JsonSerializer.Serialize(new { c.Id, Kind = c.Kind.ToString().ToLowerInvariant(), c.Description, c.Source, Options = options }, Manifest.JsonOptions));
                continue;
            }
            Console.WriteLine($"{c.Id} ({c.Kind.ToString().ToLowerInvariant()}, from {c.Source})");
            Console.WriteLine($"  {c.Description}");
            Console.WriteLine(options.Count == 0 ? "  options: none" : "  options (under 'with:'):");
            foreach (var o in options)
                Console.WriteLine($"    {o.Name,-20} {o.Type}{(o.Required ? ", required" : "")}{(o.Default is null ? "" : $", default {o.Default}")}{(o.Description is null ? "" : $"\n    {"",-20} {o.Description}")}");
        }
        return 0;
    }

    public static int Layers(string file, string[] overrides, bool json)
    {
        try
        {
            var (rows, input) = Inspector.Layers(file, overrides, PluginDirs);
            if (json) { Console.WriteLine(JsonSerializer.Serialize(new { input, layers = rows }, Manifest.JsonOptions)); return 0; }
            Console.WriteLine($"input: {input.Channels}×{input.Height}×{input.Width}, mean [{string.Join(", ", input.Mean)}], std [{string.Join(", ", input.Std)}]");
            var width = rows.Count == 0 ? 10 : rows.Max(r => r.Name.Length) + 2;
            // The kind column is as wide as its longest entry (module paths' "module (Conv) = <value>"), so the shapes
            // never run into it.
            var kindWidth = rows.Count == 0 ? 22 : Math.Max(22, rows.Max(r => r.Kind.Length) + 2);
            foreach (var r in rows)
                Console.WriteLine($"{r.Name.PadRight(width)}{r.Kind.PadRight(kindWidth)}{(r.OutputShape is null ? "" : string.Join("×", r.OutputShape))}");
            return 0;
        }
        catch (PipelineException e) { foreach (var err in e.Errors) Error(err.ToString()); return 2; }
        catch (LoupeException e) { Error($"{file}: error: {e.Message}"); return 2; }
    }

    public static int Report(string runDir, bool json)
    {
        try
        {
            var path = Loupe.Core.Report.HtmlReport.Write(runDir);
            Console.WriteLine(json ? new JsonObject { ["report"] = path }.ToJsonString() : $"report: {path}");
            return 0;
        }
        catch (LoupeException e) { Error("error: " + e.Message); return 2; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { Error($"error: {runDir}: {e.Message}"); return 2; }
    }

    public static int Compare(string runA, string runB, string? outDir, bool quiet, bool json)
    {
        outDir ??= UniqueFolder($"compare-{Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(runA)))}-vs-{Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(runB)))}");
        JsonObject r;
        try { r = Loupe.Core.Report.RunComparison.Write(runA, runB, outDir); }
        catch (LoupeException e) { Error("error: " + e.Message); return 2; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { Error($"error: {e.Message}"); return 2; }
        var html = Path.Combine(Path.GetFullPath(outDir), "compare.html");
        if (json) { Console.WriteLine(new JsonObject { ["report"] = html, ["compare"] = r }.ToJsonString(Manifest.JsonOptions)); return 0; }
        if (!quiet)
        {
            foreach (var d in r["differences"]!.AsArray()) Console.WriteLine($"differs: {d!["field"]}: {Short(d["a"])} → {Short(d["b"])}");
            foreach (var (key, label) in new[] { ("stepsOnlyInA", "only in A"), ("stepsOnlyInB", "only in B") })
                if (r[key]!.AsArray().Count > 0) Console.WriteLine($"steps {label}: {string.Join(", ", r[key]!.AsArray())}");
            foreach (var s in r["steps"]!.AsArray())
            {
                if (s!["compared"]!.GetValue<bool>() == false) { Console.WriteLine($"step {s["id"]}: not compared: {s["reason"]}"); continue; }
                var sum = s["summary"]!;
                var opts = s["differences"]!.AsArray().Count > 0 ? $"; options differ ({string.Join(", ", s["differences"]!.AsArray().Select(d => d!["field"]))})" : "";
                Console.WriteLine($"step {s["id"]}: {sum["compared"]} arrays compared ({sum["notCompared"]} not: shapes differ), {sum["identical"]} identical, max |Δ| {sum["maxAbs"]}{opts}");
            }
        }
        Console.WriteLine($"report: {html}");
        return 0;
    }

    static string Short(JsonNode? n) { var t = n?.ToJsonString() ?? "null"; return t.Length > 80 ? t[..77] + "..." : t; }

    static string UniqueFolder(string baseName)
    {
        var dir = Path.GetFullPath(baseName);
        for (int i = 2; Directory.Exists(dir) || File.Exists(dir); i++) dir = Path.GetFullPath($"{baseName}-{i}");
        return dir;
    }
}
