using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Loupe.Core;

/// <summary>How to merge shard runs (<c>loupe merge SHARD_DIR... --out DIR</c>).</summary>
public sealed record MergeRequest(IReadOnlyList<string> ShardDirectories, string OutDir)
{
    /// <summary>Folders of built-in plugins (the pipeline's own <c>plugins:</c> folders are added).</summary>
    public IReadOnlyList<string> PluginDirectories { get; init; } = [PluginHost.DefaultPluginDirectory];
    /// <summary>In-process registrars (tests, embedding hosts).</summary>
    public IReadOnlyList<IPluginRegistrar> Registrars { get; init; } = [];
    /// <summary>Event receiver.</summary>
    public IRunObserver? Observer { get; init; }
}

/// <summary>Merges the partial run folders of <c>loupe run --shard i/n</c> (all n of them) into one folder laid out as
/// an unsharded run: per-input artifacts are copied, each step's whole-step results are merged by the step's plugin
/// (<see cref="IShardable"/>), expectations are checked on the merged metrics, and the run-level outputs and the
/// manifest are written. The result is built in a temporary sibling folder and renamed into place at the end.</summary>
public static partial class ShardMerger
{
    sealed record Shard(string Dir, JsonObject Manifest, ShardInfo Info, List<ArtifactRecord> Artifacts);

    /// <summary>The shards' per-input predictions, in shard (dataset) order, streamed into one predictions file of the
    /// merged run (record by record; shards written before the records had their own file are read from their manifest).</summary>
    static void MergePredictions(string dir, JsonObject predictions, IReadOnlyList<Shard> shards)
    {
        long count = 0;
        using (var writer = new StreamWriter(Path.Combine(dir, Predictions.FileName), false, new System.Text.UTF8Encoding(false)))
            foreach (var s in shards)
                foreach (var e in Predictions.Read(s.Manifest, s.Dir))
                {
                    writer.WriteLine(e.ToJsonString());
                    count++;
                }
        predictions.Remove("inputs");
        predictions["count"] = count;
        predictions["file"] = Predictions.FileName;
    }

    /// <summary>Merges; never throws for bad input: problems come back as errors (exit code 2).</summary>
    public static RunResult Merge(MergeRequest request)
    {
        var errors = new List<PipelineError>();
        var shards = Load(request.ShardDirectories, errors);
        var outDir = Path.GetFullPath(request.OutDir);
        if (File.Exists(outDir) || Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            errors.Add(new(outDir, 0, 0, "output folder already exists and is not empty; Loupe never overwrites a run — choose another --out"));
        if (errors.Count > 0) return new RunResult(2, null, null, errors);

        // Only code the user named (built-in plugins, --plugin, LOUPE_PLUGIN_PATH) is loaded: a shard's manifest is data
        // from elsewhere, and the plugin folders it names are never loaded (they are mentioned when a step needs one).
        ComponentRegistry registry;
        try { registry = ComponentRegistry.Load(request.PluginDirectories.Distinct().ToList(), request.Registrars); }
        catch (LoupeException e) { return new RunResult(2, null, null, [new(shards[0].Dir, 0, 0, e.Message)]); }

        var tmp = Path.Combine(Path.GetDirectoryName(outDir)!, $".{Path.GetFileName(outDir)}.merging-{Guid.NewGuid():N}");
        using (registry)
            try
            {
                Directory.CreateDirectory(tmp);
                var manifest = Write(tmp, shards, registry, request.Observer);
                if (Directory.Exists(outDir)) Directory.Delete(outDir);
                Directory.Move(tmp, outDir);
                return new RunResult((string?)manifest["status"] == "succeeded" ? 0 : 1, outDir, manifest, []);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or LoupeException)
            {
                try { Directory.Delete(tmp, true); } catch (IOException) { /* best effort */ }
                return new RunResult(2, null, null, [new(outDir, 0, 0, $"merge failed: {e.Message}")]);
            }
    }

    /// <summary>Reads and cross-checks the shards' manifests: same run, every index once, contiguous rows.</summary>
    static List<Shard> Load(IReadOnlyList<string> dirs, List<PipelineError> errors)
    {
        var shards = new List<Shard>();
        foreach (var d in dirs.Select(Path.GetFullPath))
        {
            var file = Path.Combine(d, "manifest.json");
            if (!File.Exists(file)) { errors.Add(new(d, 0, 0, "not a Loupe run folder (no manifest.json)")); continue; }
            JsonObject m;
            try { m = Manifest.Parse(SafeFile.ReadAllText(file, Manifest.MaxBytes, file))!.AsObject(); }
            catch (Exception e) when (e is JsonException or InvalidOperationException or LoupeException or IOException) { errors.Add(new(file, 0, 0, $"unreadable manifest: {e.Message}")); continue; }
            if (m["shard"] is not JsonObject s) { errors.Add(new(d, 0, 0, "not a shard: this run was made without --shard i/n")); continue; }
            ShardInfo info;
            List<ArtifactRecord> artifacts;
            try
            {
                info = new ShardInfo((int)s["index"]!, (int)s["count"]!, (long)s["firstRow"]!, (long)s["rows"]!);
                // A shard folder comes from another machine: its numbers are checked before any is counted or summed
                // (found by tools/Loupe.Fuzz: a count of −12 threw from the list of missing shards).
                if (info.Count < 1 || info.Index < 0 || info.Index >= info.Count || info.FirstRow < 0 || info.Rows < 0 || info.FirstRow > long.MaxValue / 4 || info.Rows > long.MaxValue / 4)
                    throw new FormatException($"shard {info.Index}/{info.Count} of rows {info.FirstRow} + {info.Rows} is not a shard of a run (index 0 … count − 1, rows ≥ 0)");
                artifacts = m["artifacts"].Deserialize<List<ArtifactRecord>>(Manifest.JsonOptions) ?? [];
                foreach (var a in artifacts) SafeFile.Inside(d, a.Path ?? "", $"{file}: artifact");
            }
            catch (LoupeException e) { errors.Add(new(file, 0, 0, e.Message)); continue; }
            catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or NullReferenceException or OverflowException)
            {
                errors.Add(new(file, 0, 0, $"damaged manifest (shard or artifacts): {e.Message}"));
                continue;
            }
            if ((m["steps"] as JsonArray ?? []).FirstOrDefault(x => x?["id"] is not JsonValue v || !v.TryGetValue<string>(out var id) || !StepId().IsMatch(id)) is { } badStep)
            {
                errors.Add(new(file, 0, 0, $"damaged manifest: step id {SafeFile.Printable(badStep?["id"]?.ToJsonString() ?? "(none)")} is not a valid step id"));
                continue;
            }
            if ((string?)m["status"] != "succeeded")
            {
                var bad = (m["steps"] as JsonArray)?.FirstOrDefault(x => (string?)x?["status"] != "succeeded");
                errors.Add(new(d, 0, 0, $"shard {info.Index}/{info.Count} has status '{m["status"]}'" +
                    (bad is null ? "" : $" (step '{bad["id"]}': {bad["status"]}{(bad["error"] is { } err ? ": " + err : "")})") + "; run this shard again before merging"));
                continue;
            }
            shards.Add(new Shard(d, m, info, artifacts));
        }
        if (errors.Count > 0 || shards.Count == 0) { if (shards.Count == 0 && errors.Count == 0) errors.Add(new("merge", 0, 0, "no shard folders given")); return shards; }

        var f = shards[0];
        static string Steps(JsonObject m) => string.Join(", ", (m["steps"] as JsonArray ?? []).Select(s => $"{s?["id"]} [{s?["uses"]}]"));
        foreach (var s in shards.Skip(1))
        {
            var diff = new List<string>();
            if (s.Info.Count != f.Info.Count) diff.Add($"it is one of {s.Info.Count} shards, not {f.Info.Count}");
            foreach (var key in new[] { "pipelineSha256", "seed" })
                if (!JsonNode.DeepEquals(s.Manifest[key], f.Manifest[key])) diff.Add($"{key} {s.Manifest[key]?.ToJsonString()} ≠ {f.Manifest[key]?.ToJsonString()}");
            if (!JsonNode.DeepEquals(s.Manifest["overrides"], f.Manifest["overrides"])) diff.Add("different --set overrides");
            if (!JsonNode.DeepEquals(s.Manifest["data"]?["files"], f.Manifest["data"]?["files"])) diff.Add("different data files");
            if (Steps(s.Manifest) != Steps(f.Manifest)) diff.Add($"steps {Steps(s.Manifest)} ≠ {Steps(f.Manifest)}");
            if (diff.Count > 0) errors.Add(new(s.Dir, 0, 0, $"not a shard of the same run as {f.Dir}: {string.Join("; ", diff)}"));
        }
        if (errors.Count > 0) return shards;
        foreach (var g in shards.GroupBy(s => s.Info.Index).Where(g => g.Count() > 1))
            errors.Add(new(g.First().Dir, 0, 0, $"shard {g.Key}/{f.Info.Count} is given more than once: {string.Join(", ", g.Select(s => s.Dir))}"));
        // The missing indices, the first ten named: a count from a shard's manifest may be any int (only as many
        // indices are visited as there are shards, plus ten).
        var given = shards.Select(s => s.Info.Index).ToHashSet();
        int absent = f.Info.Count - given.Count;
        if (absent > 0)
        {
            var named = new List<int>();
            for (int i = 0; named.Count < Math.Min(absent, 10); i++)
                if (!given.Contains(i)) named.Add(i);
            errors.Add(new("merge", 0, 0, $"missing shard(s) {string.Join(", ", named.Select(i => $"{i}/{f.Info.Count}"))}{(absent > named.Count ? $" and {absent - named.Count} more" : "")}: all {f.Info.Count} shards are needed"));
        }
        if (errors.Count > 0) return shards;
        shards.Sort((a, b) => a.Info.Index.CompareTo(b.Info.Index));
        for (int i = 1; i < shards.Count; i++)
            if (shards[i].Info.FirstRow != shards[i - 1].Info.FirstRow + shards[i - 1].Info.Rows)
                errors.Add(new(shards[i].Dir, 0, 0, $"shard {i} starts at row {shards[i].Info.FirstRow}, but shard {i - 1} ends at row {shards[i - 1].Info.FirstRow + shards[i - 1].Info.Rows}"));
        return shards;
    }

    /// <summary>Writes the merged run into <paramref name="dir"/>; returns its manifest.</summary>
    static JsonObject Write(string dir, List<Shard> shards, ComponentRegistry registry, IRunObserver? observer)
    {
        var sw = Stopwatch.StartNew();
        var first = shards[0].Manifest;
        var labels = (first["model"]?["labels"] as JsonArray ?? []).Select(l => (string?)l ?? "").ToList();
        var artifacts = new List<ArtifactRecord>();
        var records = new List<JsonObject>();
        var stepNodes = first["steps"]!.AsArray();
        int failed = 0;
        for (int i = 0; i < stepNodes.Count; i++)
        {
            var rec = stepNodes[i]!.DeepClone().AsObject();
            string id = (string)rec["id"]!, uses = (string)rec["uses"]!;
            observer?.StepStarted(id, uses, i, stepNodes.Count);
            var metrics = new Dictionary<string, double>();
            var sink = new StepArtifactSink(dir, id, artifacts, metrics);
            var stepSw = Stopwatch.StartNew();
            string status = "succeeded"; string? error = null;
            try
            {
                foreach (var s in shards)
                    foreach (var a in s.Artifacts.Where(a => a.Step == id && a.Input is not null))
                        sink.Adopt(a, ShardFile(s, a.Path));
                if (registry.Find(ComponentKind.Analysis, uses) is null) throw new LoupeException(registry.Unknown(ComponentKind.Analysis, uses) + NotLoaded(first));
                if (registry.Create<IAnalysis>(uses) is not IShardable shardable) throw new LoupeException($"'{uses}' does not merge shards (not IShardable)");
                shardable.Merge(new MergeContext(id, shards, labels, sink));
            }
            catch (Exception e)
            {
                // A plugin's merge failing fails its step only, as a step does in a run.
                status = "failed";
                error = e is LoupeException ? e.Message : $"{e.GetType().Name}: {e.Message}";
                rec["errorDetail"] = e.ToString();
            }
            // Step-level expect: thresholds, deferred by the shards, are checked on the merged metrics.
            var expectations = (rec["expectations"] as JsonArray ?? []).Select(e => (string)e!["expect"]!).ToList();
            if (status == "succeeded" && expectations.Count > 0)
            {
                var checks = expectations.Select(t => (Text: t, Failure: Expectation.Parse(t, default, out var why)?.Check(metrics) ?? why)).ToList();
                rec["expectations"] = new JsonArray(checks.Select(c => (JsonNode)new JsonObject { ["expect"] = c.Text, ["passed"] = c.Failure is null }).ToArray());
                if (checks.Any(c => c.Failure is not null)) { status = "failed"; error = string.Join("; ", checks.Select(c => c.Failure).OfType<string>()); }
            }
            if (status != "succeeded") failed++;
            var shardSteps = shards.Select(s => s.Manifest["steps"]![i]!).ToList();
            rec["status"] = status;
            rec.Remove("error");
            if (error is not null) rec["error"] = error;
            rec["durationMs"] = Math.Round(shardSteps.Sum(s => (double?)s["durationMs"] ?? 0), 1);
            rec["mergeMs"] = Math.Round(stepSw.Elapsed.TotalMilliseconds, 1);
            var warnings = shardSteps.SelectMany(s => s["warnings"] as JsonArray ?? []).Select(w => (string?)w).Distinct().ToList();
            if (warnings.Count > 0) rec["warnings"] = new JsonArray(warnings.Select(w => (JsonNode)JsonValue.Create(w)!).ToArray());
            rec.Remove("metrics");
            if (metrics.Count > 0) rec["metrics"] = JsonSerializer.SerializeToNode(metrics, Manifest.JsonOptions);
            rec.Remove("directions");
            if (sink.Directions.Count > 0) rec["directions"] = JsonSerializer.SerializeToNode(sink.Directions, Manifest.JsonOptions);
            rec["liveTensorDelta"] = shardSteps.Max(s => (long?)s["liveTensorDelta"] ?? 0);
            records.Add(rec);
            observer?.StepFinished(id, status, stepSw.Elapsed, error);
        }

        var manifest = first.DeepClone().AsObject();
        manifest.Remove("shard");
        manifest.Remove("metricsTable");
        manifest.Remove("comparison");
        manifest["runId"] = Guid.NewGuid().ToString("N");
        manifest["startedAt"] = shards.Select(s => (string?)s.Manifest["startedAt"]).Min();
        manifest["steps"] = new JsonArray(records.Cast<JsonNode>().ToArray());
        if (manifest["predictions"] is JsonObject predictions) MergePredictions(dir, predictions, shards);
        if (manifest["data"] is JsonObject data) data["count"] = shards.Sum(s => s.Info.Rows);
        manifest["warnings"] = new JsonArray(shards.SelectMany(s => s.Manifest["warnings"] as JsonArray ?? []).Select(w => (string?)w).Distinct()
            .Select(w => (JsonNode)JsonValue.Create(w)!).ToArray());
        manifest["mergedFrom"] = new JsonArray(shards.Select(s => (JsonNode)new JsonObject
        {
            ["dir"] = s.Dir, ["runId"] = s.Manifest["runId"]?.DeepClone(), ["index"] = s.Info.Index, ["count"] = s.Info.Count,
            ["firstRow"] = s.Info.FirstRow, ["rows"] = s.Info.Rows, ["durationMs"] = s.Manifest["durationMs"]?.DeepClone(),
        }).ToArray());
        RunOutputs.Write(dir, records, artifacts, manifest, observer);
        manifest["status"] = failed == 0 ? "succeeded" : "failed";
        manifest["finishedAt"] = DateTimeOffset.Now.ToString("o");
        manifest["durationMs"] = Math.Round(shards.Sum(s => (double?)s.Manifest["durationMs"] ?? 0), 1);
        manifest["mergeMs"] = Math.Round(sw.Elapsed.TotalMilliseconds, 1);
        manifest["artifacts"] = JsonSerializer.SerializeToNode(artifacts, Manifest.JsonOptions);
        Manifest.Write(dir, manifest);
        return manifest;
    }

    /// <summary>The plugin entries of the shards' pipeline (folders or <c>{ path, sha256 }</c>), named but not loaded.</summary>
    static string NotLoaded(JsonObject manifest)
    {
        var entries = ((manifest["pipeline"]?["plugins"] as JsonArray) ?? []).Select(p => p switch
        {
            JsonValue v when v.TryGetValue<string>(out var path) => path,
            JsonObject o => (string?)(o["path"] as JsonValue) ?? o.ToJsonString(),
            _ => p?.ToJsonString() ?? "",
        }).Select(SafeFile.Printable).ToList();
        return entries.Count == 0 ? "" : $". The shards' pipeline names plugin folder(s) {string.Join(", ", entries.Select(e => $"'{e}'"))}; " +
            "merge never loads code named in a shard's manifest: pass the plugin you trust with --plugin DIR";
    }

    /// <summary>A file a shard's manifest lists: inside the shard's folder (links resolved), a regular file; a clear
    /// error when it is gone.</summary>
    static string ShardFile(Shard s, string relative)
    {
        var what = $"shard {s.Info.Index}/{s.Info.Count} ({s.Dir}): artifact";
        var path = SafeFile.Inside(s.Dir, relative, what);
        if (!File.Exists(path))
            throw new LoupeException($"shard {s.Info.Index}/{s.Info.Count} ({s.Dir}): '{SafeFile.Printable(relative)}' is listed in its manifest but missing; run this shard again");
        SafeFile.RequireRegular(path, $"{what} '{SafeFile.Printable(relative)}'");
        return path;
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9_.-]*\z")] private static partial System.Text.RegularExpressions.Regex StepId();

    sealed class MergeContext(string stepId, List<Shard> shards, IReadOnlyList<string> labels, IArtifactSink output) : IShardMerge
    {
        public string StepId => stepId;
        public IReadOnlyList<ShardInfo> Shards { get; } = shards.Select(s => s.Info).ToList();
        public IReadOnlyList<string> Labels => labels;
        public IArtifactSink Output => output;
        public OverlayStyle? OverlayStyle { get; } = ((shards[0].Manifest["steps"] as JsonArray)?.FirstOrDefault(x => (string?)x?["id"] == stepId)?["display"] as JsonObject)
            ?.Deserialize<OverlayStyle>(Manifest.JsonOptions);
        public IReadOnlyList<IReadOnlyDictionary<string, double>> Metrics { get; } = shards.Select(s =>
        {
            var step = (s.Manifest["steps"] as JsonArray)?.FirstOrDefault(x => (string?)x?["id"] == stepId);
            return (IReadOnlyDictionary<string, double>)((step?["metrics"] as JsonObject)?.Deserialize<Dictionary<string, double>>(Manifest.JsonOptions) ?? []);
        }).ToList();

        ArtifactRecord? Find(Shard s, string name, string ext) =>
            s.Artifacts.FirstOrDefault(a => a.Step == stepId && a.Input is null && a.Name == name && a.Path.EndsWith("." + ext, StringComparison.Ordinal));

        public bool Has(string name, string extension) => shards.All(s => Find(s, name, extension) is not null);

        IReadOnlyList<T> Read<T>(string name, string ext, Func<string, T> read) => shards.Select(s =>
        {
            var a = Find(s, name, ext) ?? throw new LoupeException($"shard {s.Info.Index}/{s.Info.Count} ({s.Dir}) has no '{stepId}/{name}.{ext}'");
            return read(ShardFile(s, a.Path));
        }).ToList();

        public IReadOnlyList<NdArray> Raw(string name) => Read<NdArray>(name, "npy", p => Npy.Read(p));
        public IReadOnlyList<JsonNode> Json(string name) => Read(name, "json", p => Manifest.Parse(SafeFile.ReadAllText(p, Manifest.MaxBytes, p))!);
        public IReadOnlyList<RgbImage> Display(string name) => Read(name, "png", LoadPng);

        public IReadOnlyList<RgbImage> InputDisplays(string name, int max) => shards
            .SelectMany(s => s.Artifacts.Where(a => a.Step == stepId && a.Input is not null && a.Name == name && a.Kind == "display").Select(a => ShardFile(s, a.Path)))
            .Take(max).Select(LoadPng).ToList();

        public IReadOnlyList<(string Input, string? Target, RgbImage Image)> InputDisplayEntries(string name, int max) => shards
            .SelectMany(s => s.Artifacts.Where(a => a.Step == stepId && a.Input is not null && a.Name == name && a.Kind == "display").Select(a => (a, s)))
            .Take(max).Select(x => (x.a.Input!, x.a.Target, LoadPng(ShardFile(x.s, x.a.Path)))).ToList();

        public IReadOnlyList<(string Input, NdArray Array)> InputRaws(string name, int max) => shards
            .SelectMany(s => s.Artifacts.Where(a => a.Step == stepId && a.Input is not null && a.Name == name && a.Kind == "raw").Select(a => (a, s)))
            .Take(max).Select(x => (x.a.Input!, Npy.Read(ShardFile(x.s, x.a.Path)))).ToList();

        static RgbImage LoadPng(string path) => Png.Load(path);
    }
}
