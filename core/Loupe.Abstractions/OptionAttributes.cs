namespace Loupe.Abstractions;

/// <summary>The option names a model layer; the validator checks it exists (with a "did you mean").</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class LayerNameAttribute : Attribute
{
    /// <summary>When true, the layer must produce a 4-D (N×C×H×W) activation.</summary>
    public bool Spatial { get; init; }
}

/// <summary>The option is a file path: resolved against the pipeline file's folder and checked to exist.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class FilePathAttribute : Attribute
{
    /// <summary>True for a directory rather than a file.</summary>
    public bool Directory { get; init; }
}

/// <summary>Marks the option a scalar shorthand binds to (e.g. <c>target: { class: 3 }</c> binds 3 to it).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class ShorthandAttribute : Attribute;

/// <summary>The option (an enum of named choices) also takes a number or a list of numbers, which bind to the property
/// <see cref="Property"/> instead (e.g. <c>fill: 0.5</c> or <c>fill: [0.1, 0.2, 0.3]</c> → <c>FillValue</c>), so one
/// documented key spells both the named and the constant form.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class OrConstantAttribute(string property) : Attribute
{
    /// <summary>The property a numeric value binds to.</summary>
    public string Property => property;
}

/// <summary>Other keys that bind to this option (e.g. <c>fill</c> for an option named <c>baseline</c>).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class AliasAttribute(params string[] names) : Attribute
{
    /// <summary>The other keys, snake_case.</summary>
    public string[] Names => names;
}

/// <summary>The enum (an option's named choices) also takes <c>true</c> and <c>false</c>, which bind to the members
/// <see cref="WhenTrue"/> and <see cref="WhenFalse"/> (e.g. <c>normalise: true</c> for the metric's default
/// normalisation, <c>normalise: negative</c> for a named one), so a switch can grow named forms without breaking the
/// pipelines that wrote it as a boolean.</summary>
[AttributeUsage(AttributeTargets.Enum)]
public sealed class BooleanFormsAttribute(string whenTrue, string whenFalse) : Attribute
{
    /// <summary>The member <c>true</c> binds to.</summary>
    public string WhenTrue => whenTrue;
    /// <summary>The member <c>false</c> binds to.</summary>
    public string WhenFalse => whenFalse;
}

/// <summary>On a component that shares its options record with others (a family of metrics with one record) and reads
/// only some of its options: the options it reads, by property name (<c>nameof</c>). The attributes on the class and
/// on its base classes add up, so a family's base names what every member reads and each member adds its own;
/// plugins may derive named sets from it (e.g. every option of a baseline). A component without one reads every
/// option. The host refuses a step that gives an option the component does not read a value other than its default,
/// naming the components of the same record that read it, and <c>loupe describe</c>, the library's
/// <c>Technique.Options</c> and the pipeline schema list only the options it reads. An option's
/// <see cref="OrConstantAttribute"/> property comes with it.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = true, Inherited = true)]
public class ReadsOptionsAttribute(params string[] properties) : Attribute
{
    /// <summary>The options read, by property name of the options record.</summary>
    public IReadOnlyList<string> Properties => properties;

    /// <summary>The properties of <paramref name="optionsType"/> that <paramref name="component"/> reads: every one
    /// when it (and its bases) carry no <see cref="ReadsOptionsAttribute"/>, else the union of their lists with the
    /// <see cref="OrConstantAttribute"/> properties of those named. A name that is no property of the record is a
    /// plugin error (<see cref="InvalidOperationException"/>, naming both types).</summary>
    public static IReadOnlySet<string> Of(Type component, Type optionsType)
    {
        var properties = optionsType.GetProperties(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance)
            .Where(p => p.CanWrite && p.GetIndexParameters().Length == 0).ToDictionary(p => p.Name);
        var lists = component.GetCustomAttributes(typeof(ReadsOptionsAttribute), inherit: true).Cast<ReadsOptionsAttribute>().ToList();
        if (lists.Count == 0) return properties.Keys.ToHashSet();
        var read = new HashSet<string>();
        foreach (var name in lists.SelectMany(l => l.Properties))
        {
            if (!properties.TryGetValue(name, out var p))
                throw new InvalidOperationException($"{component.FullName} reads option '{name}', which {optionsType.FullName} does not have");
            read.Add(name);
            if (System.Reflection.CustomAttributeExtensions.GetCustomAttribute<OrConstantAttribute>(p) is { } constant) read.Add(constant.Property);
        }
        return read;
    }
}
