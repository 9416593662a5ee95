namespace Loupe.Core;

/// <summary>Where plugins come from: a folder (or one plugin <c>.dll</c>), optionally pinned to the SHA-256 of its plugin assembly.</summary>
public sealed record PluginSource(string Path, string? Sha256 = null)
{
    /// <summary>Line of the pipeline entry (0: not from a pipeline).</summary>
    public int Line { get; init; }
    /// <summary>Column of the pipeline entry.</summary>
    public int Column { get; init; }
}
