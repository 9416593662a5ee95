using System.Collections;
using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using System.Globalization;
using System.Reflection;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Core;

/// <summary>JSON Schema (draft 2020-12) of the pipeline file, generated from the registered components' option records
/// (the metadata <c>loupe describe</c> shows): editors such as VS Code's YAML extension complete and check pipelines
/// with it. Each <c>with:</c> is checked against the options of the component its <c>uses:</c> names (if/then per id).
/// The schema is a little stricter than the binder, which also accepts other spellings of keys and enum values.</summary>
public static class PipelineSchema
{
    /// <summary>The JSON Schema dialect.</summary>
    public const string Dialect = "https://json-schema.org/draft/2020-12/schema";

    static readonly JsonSerializerOptions Json = new() { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The schema as indented JSON text (LF line ends, final newline), as committed in <c>configs/</c>.</summary>
    public static string ToText(JsonObject schema) => schema.ToJsonString(Json).Replace("\r\n", "\n") + "\n";

    /// <summary>Generates the schema for the given components (normally a registry's).</summary>
    public static JsonObject Generate(IEnumerable<ComponentDescriptor> components)
    {
        var all = components.OrderBy(c => c.Kind).ThenBy(c => c.Id, StringComparer.Ordinal).ToList();
        ComponentDescriptor[] Of(ComponentKind k) => all.Where(c => c.Kind == k).ToArray();
        var defs = new JsonObject();
        foreach (var c in all) defs[Def(c)] = ObjectSchema(c.OptionsType, 0);

        defs["analysis-with"] = new JsonObject { ["allOf"] = Dispatch(Of(ComponentKind.Analysis)) };
        defs["step-reference"] = new JsonObject
        {
            ["description"] = "a step inside this option: an analysis id, or { uses: <id>, with: { ... } }",
            ["anyOf"] = new JsonArray(Ids(Of(ComponentKind.Analysis)), Component(Of(ComponentKind.Analysis), ["uses", "with"], new(), new JsonObject { ["$ref"] = "#/$defs/analysis-with" })),
        };
        defs["target"] = TargetSchema(Of(ComponentKind.Target));
        defs["step"] = Section("step", PipelineParser.StepKeys, new()
        {
            ["id"] = Str("step id (default: its 'uses'); outputs go to <out>/<id>/", pattern: "^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
            ["uses"] = Ids(Of(ComponentKind.Analysis)),
            ["with"] = WithPlaceholder(),
            ["target"] = new JsonObject { ["$ref"] = "#/$defs/target" },
            ["batch_size"] = Int("batch size of this step (overrides settings.batch_size)", 1),
            ["expect"] = AnyOf(Str("a threshold on a metric of this step, e.g. \"auc_mean < 0.2\""), new JsonObject { ["type"] = "array", ["items"] = Str("a threshold on a metric of this step, e.g. \"auc_mean < 0.2\"") }),
            ["timeout"] = Duration(),
            ["display"] = With(ObjectSchema(typeof(OverlayStyle), 0), "how this step's heatmaps are drawn (over settings.display)"),
        }, required: ["uses"], extra: new JsonObject { ["$ref"] = "#/$defs/analysis-with" });

        var root = Section("pipeline", PipelineParser.TopKeys, new()
        {
            ["version"] = new JsonObject { ["description"] = "pipeline format version", ["enum"] = new JsonArray(1, "1") },
            ["name"] = Str("pipeline name (used by output.dir's {name})"),
            ["seed"] = Int("run seed; each step's seed derives from it and the step id"),
            ["plugins"] = new JsonObject
            {
                ["description"] = "extra plugin folders (or .dll files), relative to this file; { path, sha256 } pins the plugin's assembly hash",
                ["type"] = "array",
                ["items"] = AnyOf(Str("a plugin folder"), Section("plugin", PipelineParser.PluginKeys, new()
                {
                    ["path"] = Str("a plugin folder with one plugin, or its .dll"),
                    ["sha256"] = Str("expected SHA-256 of the plugin assembly (loupe plugins --verify prints it)", pattern: "^[0-9a-fA-F]{64}$"),
                }, required: ["path", "sha256"])),
            },
            ["model"] = Section("model", PipelineParser.ModelKeys, new()
            {
                ["uses"] = Ids(Of(ComponentKind.Model)),
                ["with"] = WithPlaceholder(),
                ["input"] = With(ObjectSchema(typeof(InputOptions), 0), "overrides the model's default preprocessing"),
                ["labels"] = Str("class labels file, one per line, relative to this file"),
            }, required: ["uses"], extra: new JsonObject { ["allOf"] = Dispatch(Of(ComponentKind.Model)) }),
            ["data"] = Section("data", PipelineParser.DataKeys, new()
            {
                ["uses"] = Ids(Of(ComponentKind.Data)),
                ["with"] = WithPlaceholder(),
            }, required: ["uses"], extra: new JsonObject { ["allOf"] = Dispatch(Of(ComponentKind.Data)) }),
            ["steps"] = new JsonObject { ["type"] = "array", ["minItems"] = 1, ["items"] = new JsonObject { ["$ref"] = "#/$defs/step" } },
            ["output"] = Section("output", PipelineParser.OutputKeys, new()
            {
                ["dir"] = Str("output folder; {name} and {timestamp} are replaced"),
                ["report"] = new JsonObject { ["type"] = "string", ["enum"] = new JsonArray(PipelineParser.ReportKinds.Select(k => (JsonNode)k).ToArray()) },
            }),
            ["settings"] = Section("settings", PipelineParser.SettingsKeys, new()
            {
                ["batch_size"] = Int("default batch size", 1),
                ["threads"] = Int("intra-op threads (0: the library default)"),
                ["memory_budget_mb"] = Int("memory budget for batched copies per step, in MiB", 1),
                ["max_image_pixels"] = Int("largest image accepted (width × height, checked from the header before decoding)", 1),
                ["step_timeout"] = Duration(),
                ["max_items"] = Int("largest dataset accepted (items); a larger source is refused before any model runs", 1),
                ["display"] = With(ObjectSchema(typeof(OverlayStyle), 0), "how every step's heatmaps are drawn (colour map, outlier clipping, sign, opacity)"),
                ["top_k"] = Int("classes recorded per input in the manifest's predictions (0: none)", 0),
            }),
        }, required: ["model", "steps"]);
        var schema = new JsonObject
        {
            ["$schema"] = Dialect,
            ["title"] = "Loupe pipeline",
            ["description"] = "A Loupe pipeline file (generated by 'loupe schema' from the registered plugins).",
        };
        foreach (var (k, v) in root) schema[k] = v?.DeepClone();
        schema["$defs"] = defs;
        return schema;
    }

    static string Def(ComponentDescriptor c) => $"{c.Kind.ToString().ToLowerInvariant()}.{c.Id}";

    /// <summary>A mapping with exactly the parser's keys: a key the parser accepts but the schema lacks (or the reverse) is a bug.</summary>
    static JsonObject Section(string where, string[] parserKeys, Dictionary<string, JsonNode> props, string[]? required = null, JsonObject? extra = null)
    {
        if (!props.Keys.Order().SequenceEqual(parserKeys.Order()))
            throw new InvalidOperationException($"pipeline schema of '{where}' is out of date with PipelineParser: schema keys {string.Join(", ", props.Keys)}, parser keys {string.Join(", ", parserKeys)}");
        var o = new JsonObject { ["type"] = "object", ["additionalProperties"] = false, ["properties"] = new JsonObject(props.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))) };
        if (required is { Length: > 0 }) o["required"] = new JsonArray(required.Select(r => (JsonNode)r).ToArray());
        foreach (var (k, v) in extra ?? []) o[k] = v?.DeepClone();
        return o;
    }

    /// <summary><c>{ uses, with }</c> with the with-schema chosen by id.</summary>
    static JsonObject Component(ComponentDescriptor[] cs, string[] keys, Dictionary<string, JsonNode> more, JsonObject dispatch)
    {
        more["uses"] = Ids(cs);
        more["with"] = WithPlaceholder();
        return Section("step reference", keys, more, required: ["uses"], extra: dispatch);
    }

    static JsonObject WithPlaceholder() => new() { ["description"] = "options of the component named by 'uses' (see 'loupe describe <id>')", ["type"] = new JsonArray("object", "null") };

    static JsonObject Ids(ComponentDescriptor[] cs) => new()
    {
        ["type"] = "string",
        ["enum"] = new JsonArray(cs.Select(c => (JsonNode)c.Id).ToArray()),
        ["enumDescriptions"] = new JsonArray(cs.Select(c => (JsonNode)c.Description).ToArray()),
    };

    /// <summary>if uses == id then with must match that component's options (and be present when some are required).</summary>
    static JsonArray Dispatch(ComponentDescriptor[] cs) => new(cs.Select(c =>
    {
        var options = new JsonObject { ["$ref"] = "#/$defs/" + Def(c) };
        var hasRequired = OptionsBinder.Properties(c.OptionsType).Any(p => p.GetCustomAttribute<RequiredAttribute>() != null);
        var then = new JsonObject { ["properties"] = new JsonObject { ["with"] = hasRequired ? options : AnyOf(new JsonObject { ["type"] = "null" }, options) } };
        if (hasRequired) then["required"] = new JsonArray("with");
        return (JsonNode)new JsonObject
        {
            ["if"] = new JsonObject { ["properties"] = new JsonObject { ["uses"] = new JsonObject { ["const"] = c.Id } }, ["required"] = new JsonArray("uses") },
            ["then"] = then,
        };
    }).ToArray());

    /// <summary><c>target: top-1</c>, or a mapping with one key: <c>{ class: 3 }</c> (shorthand) or <c>{ class: { ... } }</c>.</summary>
    static JsonObject TargetSchema(ComponentDescriptor[] cs)
    {
        var byId = new JsonObject();
        foreach (var c in cs)
        {
            var options = new JsonObject { ["$ref"] = "#/$defs/" + Def(c) };
            var v = new JsonArray(new JsonObject { ["type"] = "null" }, options);
            if (Shorthand(c.OptionsType) is { } sp) v.Add(ValueSchema(sp.PropertyType, 0));
            byId[c.Id] = new JsonObject { ["description"] = c.Description, ["anyOf"] = v };
        }
        return new JsonObject
        {
            ["description"] = "what to explain: an id (e.g. top-1) or a mapping with one key (e.g. { class: 3 })",
            ["anyOf"] = new JsonArray(Ids(cs), new JsonObject { ["type"] = "object", ["minProperties"] = 1, ["maxProperties"] = 1, ["additionalProperties"] = false, ["properties"] = byId }),
        };
    }

    static PropertyInfo? Shorthand(Type t) => OptionsBinder.Properties(t).FirstOrDefault(p => p.GetCustomAttribute<ShorthandAttribute>() != null);

    /// <summary>An options record: its properties in snake_case with types, defaults, descriptions, ranges and required.</summary>
    static JsonObject ObjectSchema(Type t, int depth)
    {
        object? defaults = null;
        try { defaults = Activator.CreateInstance(t); } catch { /* no defaults */ }
        var props = new JsonObject();
        var required = new JsonArray();
        foreach (var p in OptionsBinder.Properties(t))
        {
            var s = ValueSchema(p.PropertyType, depth + 1);
            var hint = p.GetCustomAttribute<LayerNameAttribute>() is not null ? "a layer name ('loupe layers FILE' lists them)"
                : p.GetCustomAttribute<FilePathAttribute>() is { } fp ? (fp.Directory ? "a folder" : "a file") + ", relative to the pipeline file" : null;
            var description = string.Join("; ", new[] { p.GetCustomAttribute<DescriptionAttribute>()?.Description, hint }.OfType<string>());
            if (description.Length > 0) s["description"] = description;
            if (defaults is not null && Default(p.GetValue(defaults)) is { } dv) s["default"] = dv;
            // T? is anyOf [T, null]; a list is anyOf [array of T, T]: a [Range] bounds T (each item of a list).
            var alternatives = s["anyOf"] as JsonArray;
            var scalars = alternatives is null ? [s] : alternatives.OfType<JsonObject>().Select(a => a["type"] is JsonValue { } at && at.GetValue<string>() == "array" ? a["items"] as JsonObject : a).ToList();
            if (p.GetCustomAttribute<RangeAttribute>() is { } r)
                foreach (var scalar in scalars)
                    if (scalar?["type"] is JsonValue type && type.GetValue<string>() is "integer" or "number")
                    {
                        scalar[r.MinimumIsExclusive ? "exclusiveMinimum" : "minimum"] = Number(r.Minimum);
                        scalar[r.MaximumIsExclusive ? "exclusiveMaximum" : "maximum"] = Number(r.Maximum);
                    }
            if (p.GetCustomAttribute<RequiredAttribute>() != null) required.Add(OptionsBinder.YamlName(p));
            // [OrConstant]: the named choices or the constant property's numbers; [Alias]: the same schema under each alias.
            if (p.GetCustomAttribute<OrConstantAttribute>() is { } oc && OptionsBinder.Properties(t).FirstOrDefault(c => c.Name == oc.Property) is { } cp)
            {
                var constant = ValueSchema(cp.PropertyType, depth + 1);
                var named = new JsonObject();
                foreach (var key in new[] { "type", "enum", "anyOf" }) if (s[key] is { } node) { named[key] = node.DeepClone(); s.Remove(key); }
                s["anyOf"] = new JsonArray(named, constant);
            }
            props[OptionsBinder.YamlName(p)] = s;
            foreach (var alias in p.GetCustomAttribute<AliasAttribute>()?.Names ?? []) props[alias] = s.DeepClone();
        }
        var o = new JsonObject { ["type"] = "object", ["additionalProperties"] = false, ["properties"] = props };
        if (required.Count > 0) o["required"] = required;
        return o;
    }

    /// <summary>Schema of one option value, mirroring what <see cref="OptionsBinder"/> accepts.</summary>
    static JsonObject ValueSchema(Type t, int depth)
    {
        if (Nullable.GetUnderlyingType(t) is { } u) return AnyOf(ValueSchema(u, depth), new JsonObject { ["type"] = "null" });
        if (t == typeof(string)) return new JsonObject { ["type"] = new JsonArray("string", "number") }; // plain scalars bind to strings
        if (t == typeof(bool)) return new JsonObject { ["type"] = "boolean" };
        if (t == typeof(int) || t == typeof(long)) return new JsonObject { ["type"] = "integer" };
        if (t == typeof(double) || t == typeof(float)) return new JsonObject { ["type"] = "number" };
        if (t.IsEnum) return new JsonObject { ["type"] = "string", ["enum"] = new JsonArray(Enum.GetNames(t).Select(n => (JsonNode)OptionsBinder.Kebab(n)).ToArray()) };
        if (t.IsArray || t.IsGenericType && t.GetGenericTypeDefinition() == typeof(List<>))
        {
            // A single value binds as a one-element list.
            var item = ValueSchema(t.IsArray ? t.GetElementType()! : t.GetGenericArguments()[0], depth);
            return AnyOf(new JsonObject { ["type"] = "array", ["items"] = item }, item.DeepClone());
        }
        if (t == typeof(StepLink)) return new JsonObject { ["type"] = "string", ["description"] = "the id of another step of this pipeline" };
        if (t == typeof(StepReference)) return new JsonObject { ["$ref"] = "#/$defs/step-reference" };
        if (t == typeof(object) || depth > 6 || !t.IsClass) return new JsonObject();
        var obj = ObjectSchema(t, depth);
        return Shorthand(t) is { } sp ? AnyOf(obj, ValueSchema(sp.PropertyType, depth + 1)) : obj;
    }

    static JsonNode? Default(object? v) => v switch
    {
        null => null,
        string s => s.Length == 0 ? null : s,
        bool b => b,
        Enum e => OptionsBinder.Kebab(e.ToString()),
        int or long => Convert.ToInt64(v, CultureInfo.InvariantCulture),
        float f => double.Parse(f.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture),
        double d => d,
        IEnumerable e when e.Cast<object?>().Select(Default).ToList() is var items && items.All(i => i is not null) => new JsonArray(items.ToArray()),
        _ => null,
    };

    static JsonNode Number(object o)
    {
        var d = Convert.ToDouble(o, CultureInfo.InvariantCulture);
        return d == Math.Floor(d) && Math.Abs(d) < 1e15 ? (JsonNode)(long)d : (JsonNode)d;
    }

    /// <summary>A step timeout: 500ms, 30s, 5m, 1h, a number of seconds, or none.</summary>
    static JsonObject Duration() => AnyOf(
        Str("a duration: 500ms, 30s, 5m, 1h (a bare number is seconds), or none", pattern: "^\\s*(none|[0-9]+(\\.[0-9]+)?\\s*(ms|s|m|h)?)\\s*$"),
        new JsonObject { ["type"] = "number", ["minimum"] = 0, ["description"] = "seconds" });

    static JsonObject AnyOf(params JsonNode[] items) => new() { ["anyOf"] = new JsonArray(items) };

    static JsonObject With(JsonObject o, string description) { o["description"] = description; return o; }

    static JsonObject Str(string description, string? pattern = null)
    {
        var o = new JsonObject { ["type"] = "string", ["description"] = description };
        if (pattern is not null) o["pattern"] = pattern;
        return o;
    }

    static JsonObject Int(string description, int? minimum = null)
    {
        var o = new JsonObject { ["type"] = "integer", ["description"] = description };
        if (minimum is not null) o["minimum"] = minimum;
        return o;
    }
}
