using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Core.Report;

/// <summary>A finished (or interrupted) run read back from its folder: the manifest and its artifacts. Reports and
/// comparisons are built from this alone, never from the plugins that produced it.</summary>
public sealed class RunFolder
{
    /// <summary>Absolute run folder.</summary>
    public required string Directory { get; init; }
    /// <summary>The parsed <c>manifest.json</c>.</summary>
    public required JsonObject Manifest { get; init; }
    /// <summary>Every artifact the manifest lists (paths relative to <see cref="Directory"/>, checked to stay inside it).</summary>
    public required IReadOnlyList<ArtifactRecord> Artifacts { get; init; }
    /// <summary>The step records, in pipeline order.</summary>
    public required IReadOnlyList<JsonObject> Steps { get; init; }

    /// <summary>Pipeline name.</summary>
    public string Name => (Manifest["pipeline"] as JsonObject)?["name"]?.ToString() ?? "pipeline";
    /// <summary>Run status.</summary>
    public string Status => Manifest["status"]?.ToString() ?? "unknown";

    /// <summary>Reads a run folder. Throws <see cref="LoupeException"/> naming the folder (and the manifest's line) when
    /// it is not a Loupe run: no folder, no or unreadable <c>manifest.json</c>, or a manifest without run id, steps and artifacts.</summary>
    public static RunFolder Open(string directory)
    {
        var dir = Path.GetFullPath(directory);
        if (!System.IO.Directory.Exists(dir)) throw new LoupeException($"{dir}: no such folder");
        var file = Path.Combine(dir, "manifest.json");
        if (!File.Exists(file)) throw new LoupeException($"{dir} is not a Loupe run folder: it has no manifest.json (a run folder is what 'loupe run' prints as 'outputs:')");
        JsonObject manifest;
        try
        {
            manifest = Loupe.Core.Manifest.Parse(SafeFile.ReadAllText(file, Loupe.Core.Manifest.MaxBytes, file)) as JsonObject
                ?? throw new LoupeException($"{file}: not a Loupe manifest: the top level is not a JSON object");
        }
        catch (JsonException e) { throw new LoupeException($"{file}: not a Loupe manifest: invalid JSON at line {e.LineNumber + 1}: {e.Message}"); }
        catch (IOException e) { throw new LoupeException($"{file}: cannot read: {e.Message}"); }
        foreach (var key in new[] { "runId", "steps", "artifacts" })
            if (manifest[key] is null) throw new LoupeException($"{file}: not a Loupe manifest: the field '{key}' is missing");
        if (manifest["steps"] is not JsonArray steps || steps.Any(s => s is not JsonObject o || o["id"] is null))
            throw new LoupeException($"{file}: not a Loupe manifest: 'steps' must be an array of objects with an 'id'");
        List<ArtifactRecord> artifacts;
        try { artifacts = manifest["artifacts"].Deserialize<List<ArtifactRecord>>(Loupe.Core.Manifest.JsonOptions) ?? []; }
        catch (JsonException e) { throw new LoupeException($"{file}: not a Loupe manifest: 'artifacts' is malformed: {e.Message}"); }
        foreach (var a in artifacts)
        {
            if (a.Path is null || a.Step is null || a.Kind is null)
                throw new LoupeException($"{file}: artifact '{SafeFile.Printable(a.Path ?? "")}' must name a step, a kind and a path inside the run folder");
            SafeFile.Inside(dir, a.Path, $"{file}: an artifact must name a step, a kind and a path inside the run folder");
        }
        return new RunFolder { Directory = dir, Manifest = manifest, Artifacts = artifacts, Steps = steps.Cast<JsonObject>().ToList() };
    }

    /// <summary>The absolute path of an artifact.</summary>
    public string PathOf(ArtifactRecord a) => Path.Combine(Directory, a.Path);

    /// <summary>The model's class names.</summary>
    public IReadOnlyList<string> Labels => (Manifest["model"]?["labels"] as JsonArray)?.Select(l => l?.ToString() ?? "").ToList() ?? [];
}
