using Loupe.Abstractions;
using System.Globalization;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.RepresentationModel;

namespace Loupe.Core;

/// <summary>Parses a pipeline file into a <see cref="PipelineSpec"/>: structure only; ids and options are checked later.</summary>
public static partial class PipelineParser
{
    internal static readonly string[] TopKeys = ["version", "name", "seed", "plugins", "model", "data", "steps", "output", "settings"];
    internal static readonly string[] ModelKeys = ["uses", "with", "input", "labels"];
    internal static readonly string[] DataKeys = ["uses", "with"];
    internal static readonly string[] StepKeys = ["id", "uses", "with", "target", "batch_size", "expect", "timeout", "display"];
    internal static readonly string[] OutputKeys = ["dir", "report"];
    internal static readonly string[] SettingsKeys = ["batch_size", "threads", "memory_budget_mb", "max_image_pixels", "max_items", "step_timeout", "display", "top_k"];
    internal static readonly string[] PluginKeys = ["path", "sha256"];
    internal static readonly string[] ReportKinds = ["none", "html"];

    /// <summary>Largest pipeline file accepted (bytes).</summary>
    public const long MaxFileBytes = 1 << 20;

    /// <summary>Parses <paramref name="path"/>, applying <c>--set key=value</c> overrides first.</summary>
    public static PipelineSpec Parse(string path, IReadOnlyList<string>? overrides = null)
    {
        var spec = Parse(path, overrides, out var errors);
        if (errors.Count > 0) throw new PipelineException(errors);
        return spec;
    }

    /// <summary>As <see cref="Parse(string, IReadOnlyList{string}?)"/>, but returns the spec together with the errors of its
    /// sections, so that later checks (ids, options, files) can report theirs in the same pass. Throws only when the
    /// file cannot be read as a pipeline at all (missing, not YAML, bad overrides, no model or steps).</summary>
    public static PipelineSpec Parse(string path, IReadOnlyList<string>? overrides, out List<PipelineError> errors)
    {
        var file = Path.GetFullPath(path);
        if (!System.IO.File.Exists(file)) throw new PipelineException([new(file, 0, 0, "pipeline file not found")]);
        // Capped by the bytes read, not the reported length (/dev/zero and procfs files report 0).
        byte[] bytes;
        try { bytes = SafeFile.ReadAllBytes(file, MaxFileBytes, file); }
        catch (LoupeException e) { throw new PipelineException([new(file, 0, 0, e.Message.Contains("larger than") ? $"pipeline file is larger than {MaxFileBytes} bytes" : e.Message)]); }
        string text;
        try { text = new System.Text.UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes); }
        catch (System.Text.DecoderFallbackException e)
        {
            throw new PipelineException([new(file, 0, 0, $"the pipeline file is not UTF-8 text (invalid byte at offset {e.Index}); save it as UTF-8")]);
        }
        return ParseText(text.TrimStart('\uFEFF'), file, overrides, out errors);
    }

    /// <summary>Parses YAML text as if it were the file <paramref name="file"/>. <paramref name="requireSteps"/> false
    /// accepts a pipeline without steps (an in-process host loading a model before it knows what to run).</summary>
    public static PipelineSpec ParseText(string text, string file, IReadOnlyList<string>? overrides = null, bool requireSteps = true)
    {
        var spec = ParseText(text, file, overrides, out var errors, requireSteps);
        if (errors.Count > 0) throw new PipelineException(errors);
        return spec;
    }

    /// <summary>As <see cref="ParseText(string, string, IReadOnlyList{string}?, bool)"/>, but returns the sections' errors
    /// with the spec (see <see cref="Parse(string, IReadOnlyList{string}?, out List{PipelineError})"/>).</summary>
    public static PipelineSpec ParseText(string text, string file, IReadOnlyList<string>? overrides, out List<PipelineError> found, bool requireSteps = true)
    {
        var errors = found = [];
        YamlMappingNode root;
        try
        {
            CheckStructure(text, file);
            var stream = new YamlStream();
            stream.Load(new StringReader(text));
            if (stream.Documents.Count == 0) throw new PipelineException([new(file, 0, 0, "the pipeline file is empty")]);
            if (stream.Documents.Count > 1) throw new PipelineException([new(file, 0, 0, "the pipeline file holds more than one YAML document")]);
            if (stream.Documents[0].RootNode is not YamlMappingNode m)
                throw new PipelineException([At(file, stream.Documents[0].RootNode, "the pipeline must be a mapping (version, name, model, data, steps, output)")]);
            root = m;
        }
        catch (YamlException e)
        {
            throw new PipelineException([new(file, (int)e.Start.Line, (int)e.Start.Column, "malformed YAML: " + Clean(e))]);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or IndexOutOfRangeException or NullReferenceException)
        {
            // YamlDotNet occasionally fails without a position; report the last token it could read.
            var at = LastGoodMark(text);
            throw new PipelineException([new(file, (int)at.Line, (int)at.Column, $"malformed YAML near here: the parser could not go on (expected a closing '}}', ']' or quote, or a line indented like its siblings; parser: {e.Message})")]);
        }
        for (int k = 0; k < (overrides?.Count ?? 0); k++) Overrides.Apply(root, overrides![k], file, errors, k);
        if (errors.Count > 0) throw new PipelineException(errors);

        var spec = new PipelineSpec { File = file, Root = root };
        CheckKeys(file, root, TopKeys, "pipeline", errors);
        if (Scalar(file, root, "version", errors) is { } v && v.Value != "1")
            errors.Add(At(file, v, $"unsupported pipeline version '{v.Value}' (this Loupe reads version 1)"));
        if (Scalar(file, root, "name", errors) is { } n)
        {
            // The name becomes part of the output folder: no path separators, no '..', no control characters.
            if (n.Value is { } nv && (nv.Any(char.IsControl) || nv.IndexOfAny(['/', '\\']) >= 0 || nv.Contains("..")))
                errors.Add(At(file, n, "'name' may not contain '/', '\\', '..' or control characters (it names the output folder)"));
            else spec.Name = n.Value ?? spec.Name;
        }
        if (Scalar(file, root, "seed", errors) is { } s) spec.Seed = Int(file, s, "seed", errors);

        if (Child(root, "settings") is { } settingsNode)
        {
            if (settingsNode is not YamlMappingNode settings) errors.Add(At(file, settingsNode, "'settings' must be a mapping"));
            else
            {
                CheckKeys(file, settings, SettingsKeys, "settings", errors);
                if (Scalar(file, settings, "batch_size", errors) is { } b) spec.BatchSize = Positive(file, b, "settings.batch_size", errors);
                if (Scalar(file, settings, "threads", errors) is { } t) spec.Threads = Int(file, t, "settings.threads", errors);
                if (Scalar(file, settings, "memory_budget_mb", errors) is { } mb) spec.MemoryBudgetBytes = Positive(file, mb, "settings.memory_budget_mb", errors) * (1L << 20);
                if (Scalar(file, settings, "max_image_pixels", errors) is { } mp) spec.MaxImagePixels = Positive(file, mp, "settings.max_image_pixels", errors);
                if (Scalar(file, settings, "max_items", errors) is { } mi) spec.MaxItems = Positive(file, mi, "settings.max_items", errors);
                if (Scalar(file, settings, "step_timeout", errors) is { } st) spec.StepTimeout = Timeout(file, st, "settings.step_timeout", errors);
            }
        }

        if (Child(root, "plugins") is { } pluginsNode)
        {
            if (pluginsNode is YamlSequenceNode seq)
                foreach (var item in seq)
                {
                    string? path = null, sha = null;
                    if (item is YamlScalarNode ps) path = ps.Value;
                    else if (item is YamlMappingNode pm)
                    {
                        CheckKeys(file, pm, PluginKeys, "a 'plugins' entry", errors);
                        path = Scalar(file, pm, "path", errors)?.Value;
                        if (Scalar(file, pm, "sha256", errors) is { } h)
                        {
                            sha = h.Value?.Trim().ToLowerInvariant();
                            if (sha is null || !System.Text.RegularExpressions.Regex.IsMatch(sha, "^[0-9a-f]{64}$"))
                                errors.Add(At(file, h, $"'sha256' must be 64 hexadecimal digits (as printed by 'loupe plugins --verify'), got '{h.Value}'"));
                        }
                    }
                    if (string.IsNullOrWhiteSpace(path)) errors.Add(At(file, item, "each 'plugins' entry must be a folder path or { path: FOLDER-OR-DLL, sha256: HASH }"));
                    else spec.Plugins.Add(new PluginSource(Path.GetFullPath(Path.Combine(spec.BaseDirectory, path)), sha) { Line = (int)item.Start.Line, Column = (int)item.Start.Column });
                }
            else errors.Add(At(file, pluginsNode, "'plugins' must be a list of folder paths"));
        }

        var modelNode = Child(root, "model");
        if (modelNode is null) errors.Add(new(file, 1, 1, "missing 'model' section"));
        else if (modelNode is not YamlMappingNode model) errors.Add(At(file, modelNode, "'model' must be a mapping with 'uses' and 'with'"));
        else
        {
            CheckKeys(file, model, ModelKeys, "model", errors);
            var uses = RequiredScalar(file, model, "uses", "model", errors);
            var labels = Scalar(file, model, "labels", errors);
            spec.Model = new ModelSpec(uses ?? "", Child(model, "with"), model.Start, Child(model, "input"), labels?.Value, labels?.Start ?? model.Start);
        }

        var dataNode = Child(root, "data");
        if (dataNode is not null)
        {
            if (dataNode is not YamlMappingNode data) errors.Add(At(file, dataNode, "'data' must be a mapping with 'uses' and 'with'"));
            else
            {
                CheckKeys(file, data, DataKeys, "data", errors);
                var uses = RequiredScalar(file, data, "uses", "data", errors);
                spec.Data = new ComponentRef(uses ?? "", Child(data, "with"), data.Start);
            }
        }

        var stepsNode = Child(root, "steps");
        if (stepsNode is null) { if (requireSteps) errors.Add(new(file, 1, 1, "missing 'steps' section")); }
        else if (stepsNode is not YamlSequenceNode steps) errors.Add(At(file, stepsNode, "'steps' must be a list"));
        else
        {
            var ids = new HashSet<string>();
            int index = 0;
            foreach (var stepNode in steps)
            {
                index++;
                if (stepNode is not YamlMappingNode step) { errors.Add(At(file, stepNode, $"step {index} must be a mapping with 'id' and 'uses'")); continue; }
                CheckKeys(file, step, StepKeys, $"step {index}", errors);
                var usesNode = Child(step, "uses");
                var uses = RequiredScalar(file, step, "uses", $"step {index}", errors);
                var id = Scalar(file, step, "id", errors)?.Value ?? uses ?? $"step{index}";
                // \z, not $: '$' also matches before a final newline, which let "cam\n" through.
                if (!System.Text.RegularExpressions.Regex.IsMatch(id, @"^[A-Za-z0-9][A-Za-z0-9_.-]*\z"))
                    errors.Add(At(file, Child(step, "id") ?? step, $"step id '{SafeFile.Printable(id)}' may contain only letters, digits, '-', '_' and '.'"));
                else if (!ids.Add(id)) errors.Add(At(file, Child(step, "id") ?? step, $"duplicate step id '{id}'"));
                int? bs = Scalar(file, step, "batch_size", errors) is { } bsn ? Positive(file, bsn, $"steps.{id}.batch_size", errors) : null;
                var timeout = Scalar(file, step, "timeout", errors) is { } tn ? Timeout(file, tn, $"steps.{id}.timeout", errors) ?? TimeSpan.Zero : (TimeSpan?)null;
                var expectations = new List<Expectation>();
                if (Child(step, "expect") is { } expectNode)
                {
                    var items = expectNode is YamlSequenceNode es ? es.Children.ToList() : [expectNode];
                    foreach (var item in items)
                    {
                        if (item is not YamlScalarNode { Value: { } line }) { errors.Add(At(file, item, $"step '{id}': each 'expect' entry must be a string such as \"auc_mean < 0.2\"")); continue; }
                        var e = Expectation.Parse(line, item.Start, out var why);
                        if (e is null) errors.Add(At(file, item, $"step '{id}': expect '{line}': {why}"));
                        else expectations.Add(e);
                    }
                }
                spec.Steps.Add(new StepSpec(id, uses ?? "", Child(step, "with"), Child(step, "target"), step.Start, usesNode?.Start ?? step.Start) { BatchSize = bs, Expect = expectations, Timeout = timeout });
            }
            if (steps.Children.Count == 0) errors.Add(At(file, steps, "'steps' is empty: add at least one step"));
        }

        if (Child(root, "output") is { } outputNode)
        {
            if (outputNode is not YamlMappingNode output) errors.Add(At(file, outputNode, "'output' must be a mapping"));
            else
            {
                CheckKeys(file, output, OutputKeys, "output", errors);
                if (Scalar(file, output, "dir", errors) is { } d && !string.IsNullOrWhiteSpace(d.Value)) spec.OutputDir = d.Value!;
                if (Scalar(file, output, "report", errors) is { } r)
                {
                    if (!ReportKinds.Contains(r.Value)) errors.Add(At(file, r, $"unknown report kind '{r.Value}' (expected {string.Join(" or ", ReportKinds)})"));
                    else spec.Report = r.Value!;
                }
            }
        }

        // Without a model or steps nothing later can be checked: stop here.
        if (errors.Count > 0 && (spec.Model is null || spec.Steps.Count == 0)) throw new PipelineException(errors);
        return spec;
    }

    /// <summary>Deepest nesting of mappings and lists accepted.</summary>
    public const int MaxDepth = 64;
    /// <summary>Most nodes a pipeline may hold once aliases are expanded (an "alias bomb" expands exponentially).</summary>
    public const long MaxNodes = 100_000;

    internal static PipelineError At(string file, YamlNode node, string message) => new(file, (int)node.Start.Line, (int)node.Start.Column, message);

    internal static YamlNode? Child(YamlMappingNode m, string key) =>
        m.Children.TryGetValue(new YamlScalarNode(key), out var v) ? v : null;

    static void CheckKeys(string file, YamlMappingNode m, string[] allowed, string where, List<PipelineError> errors)
    {
        foreach (var key in m.Children.Keys)
        {
            if (key is not YamlScalarNode k) { errors.Add(At(file, key, $"keys in {where} must be plain names")); continue; }
            if (!allowed.Contains(k.Value))
                errors.Add(At(file, k, $"unknown key '{k.Value}' in {where}{Suggest.DidYouMean(k.Value ?? "", allowed)}; allowed: {string.Join(", ", allowed)}"));
        }
    }

    static YamlScalarNode? Scalar(string file, YamlMappingNode m, string key, List<PipelineError> errors)
    {
        var n = Child(m, key);
        if (n is null) return null;
        if (n is YamlScalarNode s) return s;
        errors.Add(At(file, n, $"'{key}' must be a single value"));
        return null;
    }

    static string? RequiredScalar(string file, YamlMappingNode m, string key, string where, List<PipelineError> errors)
    {
        var s = Scalar(file, m, key, errors);
        if (s is null || string.IsNullOrWhiteSpace(s.Value))
        {
            if (Child(m, key) is null) errors.Add(At(file, m, $"{where} is missing '{key}'"));
            return null;
        }
        return s.Value;
    }

    static int Int(string file, YamlScalarNode s, string what, List<PipelineError> errors)
    {
        if (int.TryParse(s.Value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v)) return v;
        errors.Add(At(file, s, $"'{what}' must be an integer, got '{s.Value}'"));
        return 0;
    }

    static int Positive(string file, YamlScalarNode s, string what, List<PipelineError> errors)
    {
        var v = Int(file, s, what, errors);
        if (v <= 0 && int.TryParse(s.Value, out _)) { errors.Add(At(file, s, $"'{what}' must be > 0, got {v}")); return 1; }
        return v;
    }

    /// <summary>A duration (<c>30s</c>, <c>500ms</c>, <c>2m</c>, <c>1h</c>, seconds) or <c>none</c> (null).</summary>
    static TimeSpan? Timeout(string file, YamlScalarNode s, string what, List<PipelineError> errors)
    {
        if (s.Value is "none" or "0") return null;
        if (Duration.Parse(s.Value) is { } t && t > TimeSpan.Zero) return t;
        errors.Add(At(file, s, $"'{what}' must be a duration such as 30s, 500ms, 5m or 1h (or none), at most {Duration.Max.TotalDays:F0} days, got '{SafeFile.Printable(s.Value ?? "")}'"));
        return null;
    }

    static string Clean(YamlException e)
    {
        var msg = e.InnerException?.Message ?? e.Message;
        var i = msg.IndexOf("): ", StringComparison.Ordinal);
        return i >= 0 && msg.StartsWith('(') ? msg[(i + 3)..] : msg;
    }
}
