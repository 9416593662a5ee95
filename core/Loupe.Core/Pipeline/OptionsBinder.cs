using System.Collections;
using System.ComponentModel.DataAnnotations;
using System.Globalization;
using System.Reflection;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Loupe.Core;

/// <summary>A layer name found in bound options, with where it came from.</summary>
public sealed record LayerReference(string Layer, string Option, Mark Mark, bool Spatial);

/// <summary>Options bound from YAML, plus what the validator still has to check.</summary>
public sealed record BoundOptions(object Value, IReadOnlyList<LayerReference> Layers);

/// <summary>How binding errors name what they are about: a component's options (<c>step 'cam': option 'layer'</c>,
/// <see cref="Path"/> null) or a section of the pipeline file itself (<c>'settings.batch_size'</c>, with the section's
/// <see cref="Where"/> label, e.g. <c>step 2</c>, for unknown and missing keys).</summary>
public sealed record BindVoice(string Where, string? Path = null)
{
    internal bool Host => Path is not null;
    /// <summary>The field <paramref name="name"/> as errors name it.</summary>
    public string Field(string name) => Host ? $"'{Dotted(name)}'" : $"{Where}: option '{name}'";
    string Dotted(string name) => Path is { Length: > 0 } ? $"{Path}.{name}" : name;
    internal string Unknown(string key, string[] names) => Host
        ? $"unknown key '{key}' in {Where}{Suggest.DidYouMean(key, names)}; allowed: {string.Join(", ", names)}"
        : $"unknown option '{key}' for {Where}{Suggest.DidYouMean(key, names)}; options: {(names.Length == 0 ? "(none)" : string.Join(", ", names))}";
    internal string Missing(string name) => Host ? $"{Where} is missing '{name}'" : $"{Where}: option '{name}' is required";
    internal string Twice(string key) => Host ? $"key '{key}' given twice in {Where}" : $"option '{key}' given twice for {Where}";
    internal string NotMapping => Host ? $"'{Path}' must be a mapping" : $"{Where}: expected a mapping of options";
    internal string Invalid(string name, string message, string got) => Host ? $"{Field(name)} {message}, got {got}" : $"{Field(name)} {message} (got {got})";
    /// <summary>The voice of an options record inside the field <paramref name="name"/>: always the options' voice.</summary>
    internal BindVoice Nested(string name) => new(Host ? Dotted(name) : Field(name));
}

/// <summary>Binds YAML <c>with:</c> nodes to typed option records: unknown keys, wrong types, ranges,
/// required values and missing files are reported at file:line:column.</summary>
public static class OptionsBinder
{
    /// <summary>Normalised key: case and '_'/'-' do not matter (<c>num_classes</c> = <c>NumClasses</c>).</summary>
    public static string Normalize(string name) => name.Replace("_", "").Replace("-", "").ToLowerInvariant();

    /// <summary>The YAML name of a property (snake_case).</summary>
    public static string YamlName(PropertyInfo p) => OptionRules.YamlName(p.Name);

    /// <summary>Public settable properties of an options type.</summary>
    public static PropertyInfo[] Properties(Type t) =>
        t.GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanWrite && p.GetIndexParameters().Length == 0).ToArray();

    /// <summary>Binds <paramref name="node"/> (may be null: all defaults) to <paramref name="type"/>.
    /// <paramref name="notRead"/>: for an option the component does not read, why (e.g. "applies to a and b, not to
    /// c"), else null; such an option given a value other than its default is an error
    /// (<see cref="ReadsOptionsAttribute"/>, <see cref="OptionReaders"/>), added to <paramref name="deferred"/> when
    /// given (the options are usable all the same: the host goes on to the checks that need the model and reports
    /// these with theirs), else to <paramref name="errors"/>.</summary>
    public static BoundOptions Bind(Type type, YamlNode? node, string file, string where, string baseDirectory, List<PipelineError> errors, Mark fallback,
        Func<PropertyInfo, string?>? notRead = null, List<PipelineError>? deferred = null) =>
        Bind(type, node, file, new BindVoice(where), baseDirectory, errors, fallback, notRead, deferred);

    /// <summary>As <see cref="Bind(Type, YamlNode?, string, string, string, List{PipelineError}, Mark, Func{PropertyInfo, string?}?, List{PipelineError}?)"/>,
    /// with errors in <paramref name="voice"/> (the pipeline's own sections name their fields as
    /// <c>'settings.batch_size'</c>).</summary>
    public static BoundOptions Bind(Type type, YamlNode? node, string file, BindVoice voice, string baseDirectory, List<PipelineError> errors, Mark fallback,
        Func<PropertyInfo, string?>? notRead = null, List<PipelineError>? deferred = null)
    {
        var layers = new List<LayerReference>();
        var value = BindObject(type, node, file, voice, baseDirectory, errors, layers, fallback, notRead, deferred);
        return new BoundOptions(value, layers);
    }

    /// <summary>The YAML keys of an options record, in declaration order.</summary>
    public static string[] Keys(Type type) => Properties(type).Select(YamlName).ToArray();

    static object BindObject(Type type, YamlNode? node, string file, BindVoice voice, string baseDir, List<PipelineError> errors, List<LayerReference> layers, Mark fallback,
        Func<PropertyInfo, string?>? notRead = null, List<PipelineError>? deferred = null)
    {
        object instance;
        try { instance = Activator.CreateInstance(type)!; }
        catch (Exception e) { throw new InvalidOperationException($"options type {type.Name} needs a public parameterless constructor", e); }
        var props = Properties(type);
        var seen = new HashSet<PropertyInfo>();
        var likelyTypos = new HashSet<string>();

        if (node is YamlScalarNode shorthand && !string.IsNullOrEmpty(shorthand.Value) &&
            props.FirstOrDefault(p => p.GetCustomAttribute<ShorthandAttribute>() != null) is { } sp)
        {
            Assign(instance, sp, shorthand, file, voice, baseDir, errors, layers);
            seen.Add(sp);
        }
        else if (node is YamlMappingNode map)
        {
            foreach (var (k, v) in map.Children)
            {
                var key = (k as YamlScalarNode)?.Value ?? "";
                var prop = props.FirstOrDefault(p => Normalize(p.Name) == Normalize(key))
                    ?? props.FirstOrDefault(p => p.GetCustomAttribute<AliasAttribute>()?.Names.Any(a => Normalize(a) == Normalize(key)) == true);
                if (prop is not null) prop = ConstantTarget(props, prop, v);
                if (prop is null)
                {
                    var names = props.Select(YamlName).ToArray();
                    if (Suggest.Closest(key, names) is { } near) likelyTypos.Add(near);
                    errors.Add(PipelineParser.At(file, k, voice.Unknown(key, names)));
                    continue;
                }
                if (!seen.Add(prop)) { errors.Add(PipelineParser.At(file, k, voice.Twice(key))); continue; }
                int before = errors.Count;
                Assign(instance, prop, v, file, voice, baseDir, errors, layers);
                if (errors.Count == before && notRead?.Invoke(prop) is { } why && OptionRules.IsSet(instance, prop.Name))
                    (deferred ?? errors).Add(PipelineParser.At(file, k, $"{voice.Field(key)} {why}"));
            }
        }
        else if (node is not null && !(node is YamlScalarNode { Value: null or "" or "~" or "null" }))
        {
            errors.Add(PipelineParser.At(file, node, voice.NotMapping));
        }

        // Required / range checks (DataAnnotations) and layer defaults.
        foreach (var p in props)
        {
            var val = p.GetValue(instance);
            var keyMark = FindKeyMark(node as YamlMappingNode, p) ?? node?.Start ?? fallback;
            // The pipeline's own fields are reported at their value (a --set override is located by it).
            var valueMark = voice.Host ? FindValueMark(node as YamlMappingNode, p) ?? keyMark : keyMark;
            if (p.GetCustomAttribute<RequiredAttribute>() != null && (val is null || val is string s && string.IsNullOrWhiteSpace(s)))
            {
                if (likelyTypos.Contains(YamlName(p))) continue; // already reported as a misspelt key
                errors.Add(new(file, (int)keyMark.Line, (int)keyMark.Column, voice.Missing(YamlName(p))));
                continue;
            }
            if (val is null) continue;
            foreach (var attr in p.GetCustomAttributes<ValidationAttribute>())
            {
                if (attr is RequiredAttribute) continue;
                if (attr is RangeAttribute && val is IEnumerable items and not string)
                {
                    // A [Range] on a list option bounds each item.
                    foreach (var item in items.Cast<object>().Where(i => !attr.IsValid(i)))
                        errors.Add(new(file, (int)valueMark.Line, (int)valueMark.Column, voice.Invalid(YamlName(p), Message(attr, p), $"{Show(item)} in {Show(val)}")));
                    continue;
                }
                if (!attr.IsValid(val))
                    errors.Add(new(file, (int)valueMark.Line, (int)valueMark.Column, voice.Invalid(YamlName(p), Message(attr, p), Show(val))));
            }
            if (!seen.Contains(p) && p.GetCustomAttribute<LayerNameAttribute>() is { } la && val is string defLayer && defLayer.Length > 0)
                layers.Add(new(defLayer, YamlName(p), keyMark, la.Spatial));
        }
        return instance;
    }

    static Mark? FindValueMark(YamlMappingNode? map, PropertyInfo p) =>
        map?.Children.FirstOrDefault(kv => kv.Key is YamlScalarNode k && Normalize(k.Value ?? "") == Normalize(p.Name)).Value?.Start;

    static string Message(ValidationAttribute attr, PropertyInfo p) => attr.FormatErrorMessage(YamlName(p)).Replace($"The field {YamlName(p)} ", "").TrimEnd('.');

    static Mark? FindKeyMark(YamlMappingNode? map, PropertyInfo p) =>
        map?.Children.Keys.OfType<YamlScalarNode>().FirstOrDefault(k => Normalize(k.Value ?? "") == Normalize(p.Name))?.Start;

    static string Show(object v) => v is IEnumerable e and not string ? "[" + string.Join(", ", e.Cast<object>()) + "]" : System.Convert.ToString(v, CultureInfo.InvariantCulture) ?? "";

    static void Assign(object instance, PropertyInfo prop, YamlNode node, string file, BindVoice voice, string baseDir, List<PipelineError> errors, List<LayerReference> layers)
    {
        var name = YamlName(prop);
        var value = Convert(prop.PropertyType, node, file, voice.Field(name), voice.Nested(name), baseDir, errors, layers, voice.Host);
        if (value is ConversionFailed) return;
        if (prop.GetCustomAttribute<FilePathAttribute>() is { } fp && value is string path && path.Length > 0)
        {
            if (path.Contains('\0'))
            {
                errors.Add(PipelineParser.At(file, node, $"{voice.Field(name)}: the path contains a NUL character"));
                return;
            }
            var full = Path.GetFullPath(Path.Combine(baseDir, path));
            if (fp.Directory ? !Directory.Exists(full) : !File.Exists(full))
                errors.Add(PipelineParser.At(file, node, $"{voice.Field(name)}: {(fp.Directory ? "folder" : "file")} not found: {full}"));
            value = full;
        }
        if (prop.GetCustomAttribute<LayerNameAttribute>() is { } la)
        {
            if (value is string l) layers.Add(new(l, name, node.Start, la.Spatial));
            else if (value is IEnumerable<string> ls) foreach (var x in ls) layers.Add(new(x, name, node.Start, la.Spatial));
        }
        prop.SetValue(instance, value);
    }

    sealed class ConversionFailed { public static readonly ConversionFailed Instance = new(); }

    static object? Convert(Type type, YamlNode node, string file, string what, BindVoice nested, string baseDir, List<PipelineError> errors, List<LayerReference> layers, bool host = false)
    {
        if (typeof(YamlNode).IsAssignableFrom(type)) return node; // kept as written: bound or checked later
        var underlying = Nullable.GetUnderlyingType(type);
        if (underlying != null)
        {
            if (node is YamlScalarNode { Value: "~" or "null" or "" } && node is YamlScalarNode { Style: not ScalarStyle.SingleQuoted and not ScalarStyle.DoubleQuoted }) return null;
            type = underlying;
        }
        if (type == typeof(TimeSpan))
        {
            // A duration (500ms, 30s, 2m, 1h, seconds) or none/0: TimeSpan.Zero.
            var dt = (node as YamlScalarNode)?.Value;
            if (dt is "none" or "0") return TimeSpan.Zero;
            if (Duration.Parse(dt) is { } t && t > TimeSpan.Zero) return t;
            errors.Add(PipelineParser.At(file, node, $"{what} must be a duration such as 30s, 500ms, 5m or 1h (or none), at most {Duration.Max.TotalDays:F0} days, got '{SafeFile.Printable(dt ?? node.ToString())}'"));
            return ConversionFailed.Instance;
        }
        if (type.IsArray || type.IsGenericType && type.GetGenericTypeDefinition() == typeof(List<>))
        {
            var elem = type.IsArray ? type.GetElementType()! : type.GetGenericArguments()[0];
            var items = node is YamlSequenceNode seq ? seq.Children.ToList() : [node];
            var list = (IList)Activator.CreateInstance(typeof(List<>).MakeGenericType(elem))!;
            foreach (var item in items)
            {
                var v = Convert(elem, item, file, what, nested, baseDir, errors, layers, host);
                if (v is ConversionFailed) return v;
                list.Add(v);
            }
            if (!type.IsArray) return list;
            var arr = Array.CreateInstance(elem, list.Count);
            list.CopyTo(arr, 0);
            return arr;
        }
        if (type == typeof(object)) return node is YamlScalarNode os ? os.Value : node.ToString();
        if (type == typeof(StepLink))
        {
            if (node is YamlScalarNode { Value: { Length: > 0 } linked }) return new StepLink { Id = linked };
            errors.Add(PipelineParser.At(file, node, $"{what} must be the id of another step"));
            return ConversionFailed.Instance;
        }
        if (type == typeof(StepReference))
        {
            // inner: { uses: id, with: {...} } — resolved and bound by the runner, which knows the registry.
            if (node is YamlScalarNode { Value: { Length: > 0 } id }) return new StepReference { Uses = id };
            if (node is not YamlMappingNode rm || PipelineParser.Child(rm, "uses") is not YamlScalarNode { Value: { Length: > 0 } uses })
            {
                errors.Add(PipelineParser.At(file, node, $"{what} must name a step: {{ uses: <id>, with: {{ ... }} }}"));
                return ConversionFailed.Instance;
            }
            foreach (var k in rm.Children.Keys.OfType<YamlScalarNode>().Where(k => k.Value is not ("uses" or "with")))
                errors.Add(PipelineParser.At(file, k, $"{what}: unknown key '{k.Value}'{Suggest.DidYouMean(k.Value ?? "", ["uses", "with"])}; allowed: uses, with"));
            return new StepReference { Uses = uses, With = PipelineParser.Child(rm, "with") };
        }
        if (node is YamlMappingNode)
        {
            if (type.IsClass && type != typeof(string))
                return BindObject(type, node, file, nested, baseDir, errors, layers, node.Start);
            // The pipeline's own scalars say so as the parser always has: "'name' must be a single value".
            errors.Add(PipelineParser.At(file, node, host ? $"{what} must be a single value" : $"{what} must be {Describe(type)}, got a mapping"));
            return ConversionFailed.Instance;
        }
        if (node is not YamlScalarNode s)
        {
            errors.Add(PipelineParser.At(file, node, host && (type == typeof(string) || !type.IsClass) ? $"{what} must be a single value" : $"{what} must be {Describe(type)}, got a list"));
            return ConversionFailed.Instance;
        }
        var text = s.Value ?? "";
        var inv = CultureInfo.InvariantCulture;
        bool ok; object? result;
        if (type == typeof(string)) { ok = true; result = text; }
        else if (type == typeof(bool)) { ok = TryBool(text, out var b); result = b; }
        else if (type == typeof(int)) { ok = int.TryParse(text, NumberStyles.Integer, inv, out var i); result = i; }
        else if (type == typeof(long)) { ok = long.TryParse(text, NumberStyles.Integer, inv, out var l); result = l; }
        else if (type == typeof(double)) { ok = double.TryParse(text, NumberStyles.Float, inv, out var d) && double.IsFinite(d); result = d; }
        else if (type == typeof(float)) { ok = float.TryParse(text, NumberStyles.Float, inv, out var f) && float.IsFinite(f); result = f; }
        else if (type.IsEnum)
        {
            var names = Enum.GetNames(type);
            var match = names.FirstOrDefault(n => Normalize(n) == Normalize(text));
            if (match is null && type.GetCustomAttribute<BooleanFormsAttribute>() is { } forms && TryBool(text, out var flag))
                match = flag ? forms.WhenTrue : forms.WhenFalse;
            ok = match != null; result = ok ? Enum.Parse(type, match!) : null;
            if (!ok)
            {
                var kebab = names.Select(Kebab).ToArray();
                errors.Add(PipelineParser.At(file, s, $"{what}: '{text}' is not one of {string.Join(", ", kebab)}{Suggest.DidYouMean(text, kebab)}"));
                return ConversionFailed.Instance;
            }
        }
        else if (type.IsClass && (type.GetProperties().Any(p => p.GetCustomAttribute<ShorthandAttribute>() != null)
                 || s is { Value: null or "" or "~" or "null", Style: not ScalarStyle.SingleQuoted and not ScalarStyle.DoubleQuoted }))
            return BindObject(type, node, file, nested, baseDir, errors, layers, node.Start);
        else if (type.IsClass)
        {
            errors.Add(PipelineParser.At(file, s, $"{what} must be {Describe(type)}, got '{text}'"));
            return ConversionFailed.Instance;
        }
        else throw new InvalidOperationException($"unsupported option type {type.Name} in {what}");
        if (!ok)
        {
            errors.Add(PipelineParser.At(file, s, $"{what} must be {Describe(type)}, got '{text}'"));
            return ConversionFailed.Instance;
        }
        return result;
    }

    /// <summary>For an <see cref="OrConstantAttribute"/> option given a number or a list: the property the constant binds to.</summary>
    static PropertyInfo ConstantTarget(PropertyInfo[] props, PropertyInfo prop, YamlNode value)
    {
        if (prop.GetCustomAttribute<OrConstantAttribute>() is not { } oc) return prop;
        bool numeric = value is YamlSequenceNode
            || value is YamlScalarNode { Value: { } text } && double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out _);
        return numeric ? props.FirstOrDefault(p => p.Name == oc.Property)
            ?? throw new InvalidOperationException($"{prop.DeclaringType?.Name}.{prop.Name}: [OrConstant] names no property '{oc.Property}'") : prop;
    }

    /// <summary>kebab-case form of a PascalCase name.</summary>
    public static string Kebab(string name) =>
        string.Concat(name.Select((c, i) => i > 0 && char.IsUpper(c) ? "-" + char.ToLowerInvariant(c) : char.ToLowerInvariant(c).ToString()));

    static bool TryBool(string text, out bool b)
    {
        switch (text.ToLowerInvariant())
        {
            case "true" or "yes" or "on": b = true; return true;
            case "false" or "no" or "off": b = false; return true;
            default: b = false; return false;
        }
    }

    /// <summary>Human name of an option type (for errors and <c>loupe describe</c>).</summary>
    public static string Describe(Type t)
    {
        var u = Nullable.GetUnderlyingType(t);
        if (u != null) return Describe(u) + " (optional)";
        if (t == typeof(string)) return "a string";
        if (t == typeof(bool)) return "true or false";
        if (t == typeof(int) || t == typeof(long)) return "an integer";
        if (t == typeof(double) || t == typeof(float)) return "a number";
        if (t.IsEnum) return (t.GetCustomAttribute<BooleanFormsAttribute>() is null ? "one of " : "true, false or one of ") + string.Join(", ", Enum.GetNames(t).Select(Kebab));
        if (t.IsArray) return "a list of " + Describe(t.GetElementType()!).Replace("a ", "").Replace("an ", "") + "s";
        if (t.IsGenericType && t.GetGenericTypeDefinition() == typeof(List<>)) return "a list of " + Describe(t.GetGenericArguments()[0]).Replace("a ", "").Replace("an ", "") + "s";
        return "a mapping";
    }
}
