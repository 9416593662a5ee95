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
