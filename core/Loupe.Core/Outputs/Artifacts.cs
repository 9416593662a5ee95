using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Loupe.Abstractions;

namespace Loupe.Core;

/// <summary>One persisted result, as listed in the manifest.</summary>
public sealed record ArtifactRecord(string Step, string? Input, string Kind, string Path, long[] Shape, string Dtype, string? Target, string Name,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)] string? Range = null);

/// <summary>Persists one step's results under <c>&lt;out&gt;/&lt;step-id&gt;/</c> with atomic writes.</summary>
public sealed partial class StepArtifactSink(string runDirectory, string stepId, List<ArtifactRecord> records, Dictionary<string, double> metrics) : IArtifactSink
{
    readonly object _gate = new();
    readonly HashSet<string> _paths = [];
    bool _closed;

    /// <summary>The first write that failed because of the output folder (disk full, not writable), if any.</summary>
    public OutputWriteException? Fault { get; private set; }

    /// <summary>Stops recording: later writes (from a step thread that was abandoned) throw and are not listed.</summary>
    public void Close() { lock (_gate) _closed = true; }

    string PathFor(string name, string? inputId, string ext)
    {
        if (string.IsNullOrWhiteSpace(name)) throw new ArgumentException("artifact name must not be empty", nameof(name));
        var file = inputId is null ? Safe(name) : $"{Safe(inputId)}.{Safe(name)}";
        // Names near the 255-byte limit of a file name are shortened (with a hash), never failed as "not writable".
        if (file.Length + ext.Length > 200) file = $"{file[..160]}~{Hash(file)}";
        var rel = Path.Combine(stepId, file + ext);
        lock (_gate)
        {
            ThrowIfClosed();
            if (!_paths.Add(rel)) throw new InvalidOperationException($"step '{stepId}' wrote artifact '{rel}' twice");
        }
        return rel;
    }

    void ThrowIfClosed()
    {
        if (_closed) throw new OperationCanceledException($"step '{stepId}' was abandoned; its outputs are no longer recorded");
    }

    void Write(string rel, ReadOnlySpan<byte> bytes)
    {
        var root = Path.GetFullPath(runDirectory);
        var path = Path.GetFullPath(Path.Combine(root, rel));
        if (!SafeFile.IsUnder(path, root)) throw new LoupeException($"step '{SafeFile.Printable(stepId)}': artifact path '{SafeFile.Printable(rel)}' points outside the output folder; refused");
        try { AtomicFile.Write(path, bytes); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            var fault = new OutputWriteException(path, e);
            lock (_gate) Fault ??= fault;
            throw fault;
        }
    }

    /// <summary>A file-name part: unsafe characters become '_', and then a hash of the original is appended, so names
    /// that differ only in those characters ("a b", "a_b", "a?b", names that were not UTF-8) stay distinct.</summary>
    static string Safe(string s)
    {
        var safe = SafeRx().Replace(s, "_");
        return safe == s ? s : $"{safe}~{Hash(s)}";
    }

    /// <summary>12 hex digits of the FNV-1a hash of the UTF-16 text.</summary>
    static string Hash(string s)
    {
        ulong h = 14695981039346656037;
        foreach (var c in s) { h ^= c; h *= 1099511628211; }
        return (h & 0xFFFFFFFFFFFF).ToString("x12");
    }

    void Add(ArtifactRecord r)
    {
        lock (_gate)
        {
            ThrowIfClosed();
            records.Add(r);
        }
    }

    /// <inheritdoc/>
    public void Raw(string name, string? inputId, NdArray array, string? target = null)
    {
        var expected = array.Shape.Aggregate(1L, (a, b) => a * b);
        if (expected != array.Data.Length) throw new ArgumentException($"artifact '{name}': shape ({string.Join(",", array.Shape)}) does not match {array.Data.Length} values");
        var rel = PathFor(name, inputId, ".npy");
        Write(rel, Npy.Encode(array));
        Add(new ArtifactRecord(stepId, inputId, "raw", rel, array.Shape, "float32", target, name));
    }

    /// <inheritdoc/>
    public void Display(string name, string? inputId, RgbImage image, string? target = null) => Display(name, inputId, image, target, null);

    /// <inheritdoc/>
    public void Display(string name, string? inputId, RgbImage image, string? target, string? range)
    {
        var rel = PathFor(name, inputId, ".png");
        Write(rel, Png.Encode(image));
        Add(new ArtifactRecord(stepId, inputId, "display", rel, [image.Height, image.Width, 3], "uint8", target, name, range));
    }

    /// <inheritdoc/>
    public void Json(string name, object value)
    {
        var rel = PathFor(name, null, ".json");
        Write(rel, JsonSerializer.SerializeToUtf8Bytes(value, value.GetType(), Manifest.JsonOptions));
        Add(new ArtifactRecord(stepId, null, "data", rel, [], "json", null, name));
    }

    /// <summary>Copies an artifact another run wrote (a shard's per-input result) into this step, keeping its record.</summary>
    public void Adopt(ArtifactRecord record, string sourceFile)
    {
        lock (_gate)
            if (!_paths.Add(record.Path)) throw new LoupeException($"step '{stepId}': '{record.Path}' is in more than one shard (the shards overlap)");
        // The record comes from another folder's manifest: its path must stay inside this run's folder.
        var root = Path.GetFullPath(runDirectory);
        var dest = Path.GetFullPath(Path.Combine(root, record.Path));
        if (Path.IsPathRooted(record.Path) || !SafeFile.IsUnder(dest, root) || dest == root || record.Path.Contains('\0'))
            throw new LoupeException($"step '{stepId}': artifact path '{SafeFile.Printable(record.Path)}' points outside the output folder; refused");
        Directory.CreateDirectory(Path.GetDirectoryName(dest)!);
        File.Copy(sourceFile, dest);
        Add(record);
    }

    /// <inheritdoc/>
    public void Metric(string name, double value)
    {
        lock (_gate)
        {
            ThrowIfClosed();
            metrics[name] = value;
        }
    }

    /// <summary>Directions the step declared (<see cref="MetricDirection"/>): series name → higher is better.</summary>
    public Dictionary<string, bool> Directions { get; } = [];

    /// <inheritdoc/>
    public void MetricDirection(string name, bool higherIsBetter)
    {
        lock (_gate)
        {
            ThrowIfClosed();
            Directions[name] = higherIsBetter;
        }
    }

    [GeneratedRegex("[^A-Za-z0-9._-]")] private static partial Regex SafeRx();
}

/// <summary>The run manifest (<c>manifest.json</c>): what ran, on what, with which versions, and what it produced.</summary>
public static class Manifest
{
    /// <summary>JSON settings for manifests and JSON artifacts.</summary>
    public static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new System.Text.Json.Serialization.JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };

    /// <summary>Parses a manifest (or a JSON artifact) read back from a folder that may come from elsewhere: duplicate
    /// keys and nesting over 64 levels are JSON errors here, not exceptions later (found by tools/Loupe.Fuzz).</summary>
    public static JsonNode? Parse(string text) =>
        JsonNode.Parse(text, null, new JsonDocumentOptions { AllowDuplicateProperties = false, MaxDepth = 64 });

    /// <summary>Largest manifest read back from a folder (run or shard folders may come from elsewhere).</summary>
    public const long MaxBytes = 512L << 20;

    /// <summary>Writes the manifest atomically (replacing the previous one).</summary>
    public static void Write(string runDirectory, JsonObject manifest) =>
        AtomicFile.Write(Path.Combine(runDirectory, "manifest.json"), System.Text.Encoding.UTF8.GetBytes(manifest.ToJsonString(JsonOptions)), overwrite: true);

    /// <summary>Options as JSON for the manifest; a value that cannot be serialised is written as text, never fails the run.</summary>
    public static JsonNode? ToNode(object value)
    {
        try { return JsonSerializer.SerializeToNode(value, value.GetType(), JsonOptions); }
        catch (Exception e) when (e is NotSupportedException or InvalidOperationException or JsonException) { return JsonValue.Create(value.ToString()); }
    }

    /// <summary>A YAML node as JSON (scalars stay strings).</summary>
    public static JsonNode? FromYaml(YamlDotNet.RepresentationModel.YamlNode? node) => node switch
    {
        null => null,
        YamlDotNet.RepresentationModel.YamlScalarNode s => JsonValue.Create(s.Value),
        YamlDotNet.RepresentationModel.YamlSequenceNode q => new JsonArray(q.Children.Select(FromYaml).ToArray()),
        YamlDotNet.RepresentationModel.YamlMappingNode m => FromMapping(m),
        _ => null,
    };

    // Keys that are not plain scalars (YAML allows `? [a, b] : c`) are written as their YAML text; the last of two
    // keys with the same text wins (found by tools/Loupe.Fuzz: both used to throw while writing the manifest).
    static JsonObject FromMapping(YamlDotNet.RepresentationModel.YamlMappingNode m)
    {
        var o = new JsonObject();
        foreach (var (k, v) in m.Children)
            o[k is YamlDotNet.RepresentationModel.YamlScalarNode s ? s.Value ?? "" : k.ToString()] = FromYaml(v);
        return o;
    }
}
