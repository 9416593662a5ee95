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
