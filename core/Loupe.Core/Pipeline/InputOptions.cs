using Loupe.Abstractions;

namespace Loupe.Core;

/// <summary>YAML <c>model.input</c>: overrides the model's default preprocessing.</summary>
public sealed record InputOptions
{
    /// <summary>[height, width] (one value: square).</summary>
    public int[]? Size { get; init; }
    /// <summary>Channel count (1 or 3).</summary>
    public int? Channels { get; init; }
    /// <summary>Per-channel mean (applied after ÷255).</summary>
    public float[]? Mean { get; init; }
    /// <summary>Per-channel std.</summary>
    public float[]? Std { get; init; }

    /// <summary>The spec with these overrides applied.</summary>
    public InputSpec Apply(InputSpec s) => new(
        Channels ?? s.Channels,
        Size is { Length: > 0 } ? Size[0] : s.Height,
        Size is { Length: > 1 } ? Size[1] : Size is { Length: 1 } ? Size[0] : s.Width,
        Mean ?? s.Mean, Std ?? s.Std);
}
