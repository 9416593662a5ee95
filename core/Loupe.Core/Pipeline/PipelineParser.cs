using Loupe.Abstractions;
using System.Globalization;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.RepresentationModel;

namespace Loupe.Core;

/// <summary>Parses a pipeline file into a <see cref="PipelineSpec"/>: structure only; ids and options are checked later.</summary>
public static partial class PipelineParser
{
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
        var root = LoadRoot(text, file);
        for (int k = 0; k < (overrides?.Count ?? 0); k++) Overrides.Apply(root, overrides![k], file, errors, k);
        if (errors.Count > 0) throw new PipelineException(errors);

        var spec = new PipelineSpec { File = file, Root = root };
        ReadHeader(spec, errors);
        ReadSettings(spec, errors);
        ReadPlugins(spec, errors);
        ReadModel(spec, errors);
        ReadData(spec, errors);
        ReadSteps(spec, requireSteps, errors);
        ReadOutput(spec, errors);
        // Without a model or steps nothing later can be checked: stop here.
        if (errors.Count > 0 && (spec.Model is null || spec.Steps.Count == 0)) throw new PipelineException(errors);
        return spec;
    }

    /// <summary>The text as one YAML mapping, after the structure checks; malformed YAML is reported at its position.</summary>
    static YamlMappingNode LoadRoot(string text, string file)
    {
        try
        {
            CheckStructure(text, file);
            var stream = new YamlStream();
            stream.Load(new StringReader(text));
            if (stream.Documents.Count == 0) throw new PipelineException([new(file, 0, 0, "the pipeline file is empty")]);
            if (stream.Documents.Count > 1) throw new PipelineException([new(file, 0, 0, "the pipeline file holds more than one YAML document")]);
            if (stream.Documents[0].RootNode is not YamlMappingNode m)
                throw new PipelineException([At(file, stream.Documents[0].RootNode, "the pipeline must be a mapping (version, name, model, data, steps, output)")]);
            return m;
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
    }

    /// <summary>Binds one section of the file to its record (<c>PipelineSections.cs</c>), in the host's voice.</summary>
    static T Bind<T>(PipelineSpec spec, YamlNode node, string where, string path, List<PipelineError> errors) =>
        (T)OptionsBinder.Bind(typeof(T), node, spec.File, new BindVoice(where, path), spec.BaseDirectory, errors, node.Start).Value;

    /// <summary>Top-level keys, and the scalars among them (version, name, seed); the sections are read one by one below.</summary>
    static void ReadHeader(PipelineSpec spec, List<PipelineError> errors)
    {
        var (file, root) = (spec.File, spec.Root);
        var voice = new BindVoice("pipeline", "");
        var props = OptionsBinder.Properties(typeof(PipelineSection));
        var names = OptionsBinder.Keys(typeof(PipelineSection));
        var scalars = props.Where(p => p.PropertyType == typeof(string) || p.PropertyType.IsValueType).Select(OptionsBinder.YamlName).ToHashSet();
        var header = new YamlMappingNode();
        foreach (var (key, value) in root.Children)
        {
            if (key is not YamlScalarNode k) errors.Add(At(file, key, "keys in pipeline must be plain names"));
            else if (!names.Contains(k.Value)) errors.Add(At(file, k, voice.Unknown(k.Value ?? "", names)));
            else if (scalars.Contains(k.Value!)) header.Add(key, value);
        }
        var h = (PipelineSection)OptionsBinder.Bind(typeof(PipelineSection), header, file, voice, spec.BaseDirectory, errors, root.Start).Value;
        if (h.Version is { } v && v != "1") errors.Add(At(file, Child(root, "version")!, $"unsupported pipeline version '{v}' (this Loupe reads version 1)"));
        // The name becomes part of the output folder: no path separators, no '..', no control characters.
        if (h.Name.Any(char.IsControl) || h.Name.IndexOfAny(['/', '\\']) >= 0 || h.Name.Contains(".."))
            errors.Add(At(file, Child(root, "name")!, "'name' may not contain '/', '\\', '..' or control characters (it names the output folder)"));
        else spec.Name = h.Name;
        spec.Seed = h.Seed;
    }

    static void ReadSettings(PipelineSpec spec, List<PipelineError> errors)
    {
        var s = Child(spec.Root, "settings") is { } node ? Bind<SettingsSection>(spec, node, "settings", "settings", errors) : new SettingsSection();
        spec.BatchSize = s.BatchSize;
        spec.Threads = s.Threads;
        spec.MemoryBudgetBytes = s.MemoryBudgetMb * (1L << 20);
        spec.MaxImagePixels = s.MaxImagePixels;
        spec.MaxItems = s.MaxItems;
        spec.StepTimeout = s.StepTimeout is { } t && t > TimeSpan.Zero ? t : null;
        spec.Display = s.Display;
        spec.TopK = s.TopK;
    }

    static void ReadPlugins(PipelineSpec spec, List<PipelineError> errors)
    {
        if (Child(spec.Root, "plugins") is not { } pluginsNode) return;
        var file = spec.File;
        if (pluginsNode is not YamlSequenceNode seq) { errors.Add(At(file, pluginsNode, "'plugins' must be a list of folder paths")); return; }
        foreach (var item in seq)
        {
            if (item is not (YamlScalarNode or YamlMappingNode))
            {
                errors.Add(At(file, item, "each 'plugins' entry must be a folder path or { path: FOLDER-OR-DLL, sha256: HASH }"));
                continue;
            }
            var entry = Bind<PluginSection>(spec, item, "a 'plugins' entry", "plugins", errors);
            string? sha = null;
            if (entry.Sha256 is { } h)
            {
                sha = h.Trim().ToLowerInvariant();
                if (!System.Text.RegularExpressions.Regex.IsMatch(sha, "^[0-9a-f]{64}$"))
                    errors.Add(At(file, Child((YamlMappingNode)item, "sha256")!, $"'sha256' must be 64 hexadecimal digits (as printed by 'loupe plugins --verify'), got '{h}'"));
            }
            if (!string.IsNullOrWhiteSpace(entry.Path))
                spec.Plugins.Add(new PluginSource(Path.GetFullPath(Path.Combine(spec.BaseDirectory, entry.Path)), sha) { Line = (int)item.Start.Line, Column = (int)item.Start.Column });
        }
    }

    static void ReadModel(PipelineSpec spec, List<PipelineError> errors)
    {
        var modelNode = Child(spec.Root, "model");
        if (modelNode is null) errors.Add(new(spec.File, 1, 1, "missing 'model' section"));
        else if (modelNode is not YamlMappingNode model) errors.Add(At(spec.File, modelNode, "'model' must be a mapping with 'uses' and 'with'"));
        else
        {
            var m = Bind<ModelSection>(spec, model, "model", "model", errors);
            spec.Model = new ModelSpec(m.Uses ?? "", m.With, model.Start, m.Input, m.Labels, Child(model, "labels")?.Start ?? model.Start);
        }
    }

    static void ReadData(PipelineSpec spec, List<PipelineError> errors)
    {
        if (Child(spec.Root, "data") is not { } dataNode) return;
        if (dataNode is not YamlMappingNode data) { errors.Add(At(spec.File, dataNode, "'data' must be a mapping with 'uses' and 'with'")); return; }
        var d = Bind<DataSection>(spec, data, "data", "data", errors);
        spec.Data = new ComponentRef(d.Uses ?? "", d.With, data.Start);
    }

    static void ReadSteps(PipelineSpec spec, bool requireSteps, List<PipelineError> errors)
    {
        var stepsNode = Child(spec.Root, "steps");
        if (stepsNode is null) { if (requireSteps) errors.Add(new(spec.File, 1, 1, "missing 'steps' section")); return; }
        if (stepsNode is not YamlSequenceNode steps) { errors.Add(At(spec.File, stepsNode, "'steps' must be a list")); return; }
        var ids = new HashSet<string>();
        int index = 0;
        foreach (var stepNode in steps)
        {
            index++;
            if (stepNode is not YamlMappingNode step) { errors.Add(At(spec.File, stepNode, $"step {index} must be a mapping with 'id' and 'uses'")); continue; }
            spec.Steps.Add(ReadStep(spec, step, index, ids, errors));
        }
        if (steps.Children.Count == 0) errors.Add(At(spec.File, steps, "'steps' is empty: add at least one step"));
    }

    static StepSpec ReadStep(PipelineSpec spec, YamlMappingNode step, int index, HashSet<string> ids, List<PipelineError> errors)
    {
        var file = spec.File;
        string? Text(string key) => Child(step, key) is YamlScalarNode { Value: { } v } && !string.IsNullOrWhiteSpace(v) ? v : null;
        var named = Child(step, "id") is YamlScalarNode { Value: { } given } ? given : Text("uses") ?? $"step{index}";
        var s = Bind<StepSection>(spec, step, $"step {index}", $"steps.{named}", errors);
        var uses = string.IsNullOrWhiteSpace(s.Uses) ? null : s.Uses;
        var id = s.Id ?? uses ?? $"step{index}";
        // \z, not $: '$' also matches before a final newline, which let "cam\n" through.
        if (!System.Text.RegularExpressions.Regex.IsMatch(id, @"^[A-Za-z0-9][A-Za-z0-9_.-]*\z"))
            errors.Add(At(file, Child(step, "id") ?? step, $"step id '{SafeFile.Printable(id)}' may contain only letters, digits, '-', '_' and '.'"));
        else if (!ids.Add(id)) errors.Add(At(file, Child(step, "id") ?? step, $"duplicate step id '{id}'"));
        return new StepSpec(id, uses ?? "", s.With, s.Target, step.Start, Child(step, "uses")?.Start ?? step.Start)
        {
            BatchSize = s.BatchSize, Expect = Expectations(file, id, s.Expect, errors), Timeout = s.Timeout, Display = s.Display,
        };
    }

    /// <summary>A step's <c>expect:</c> (one line or a list), each line parsed; errors name the line's position.</summary>
    static List<Expectation> Expectations(string file, string id, YamlNode? expectNode, List<PipelineError> errors)
    {
        var expectations = new List<Expectation>();
        if (expectNode is null) return expectations;
        var items = expectNode is YamlSequenceNode es ? es.Children.ToList() : [expectNode];
        foreach (var item in items)
        {
            if (item is not YamlScalarNode { Value: { } line }) { errors.Add(At(file, item, $"step '{id}': each 'expect' entry must be a string such as \"auc_mean < 0.2\"")); continue; }
            var e = Expectation.Parse(line, item.Start, out var why);
            if (e is null) errors.Add(At(file, item, $"step '{id}': expect '{line}': {why}"));
            else expectations.Add(e);
        }
        return expectations;
    }

    static void ReadOutput(PipelineSpec spec, List<PipelineError> errors)
    {
        if (Child(spec.Root, "output") is not { } node) return;
        var o = Bind<OutputSection>(spec, node, "output", "output", errors);
        if (!string.IsNullOrWhiteSpace(o.Dir)) spec.OutputDir = o.Dir;
        spec.Report = OptionsBinder.Kebab(o.Report.ToString());
    }

    /// <summary>Deepest nesting of mappings and lists accepted.</summary>
    public const int MaxDepth = 64;
    /// <summary>Most nodes a pipeline may hold once aliases are expanded (an "alias bomb" expands exponentially).</summary>
    public const long MaxNodes = 100_000;

    internal static PipelineError At(string file, YamlNode node, string message) => new(file, (int)node.Start.Line, (int)node.Start.Column, message);

    /// <summary>The value under <paramref name="key"/>, whatever tag the key carries (<c>!!str name:</c>, or a fuzzer's
    /// <c>!!binary version:</c>, is bound by its text as everywhere else: a lookup by an untagged node would miss it).</summary>
    internal static YamlNode? Child(YamlMappingNode m, string key) => KeyNode(m, key) is { } k ? m.Children[k] : null;

    /// <summary>The key node of <paramref name="m"/> whose text is <paramref name="key"/>, tagged or not, or null.</summary>
    internal static YamlNode? KeyNode(YamlMappingNode m, string key)
    {
        var plain = new YamlScalarNode(key);
        if (m.Children.ContainsKey(plain)) return plain;
        foreach (var k in m.Children.Keys)
            if (k is YamlScalarNode s && s.Value == key) return k;
        return null;
    }

    static string Clean(YamlException e)
    {
        var msg = e.InnerException?.Message ?? e.Message;
        var i = msg.IndexOf("): ", StringComparison.Ordinal);
        return i >= 0 && msg.StartsWith('(') ? msg[(i + 3)..] : msg;
    }
}
