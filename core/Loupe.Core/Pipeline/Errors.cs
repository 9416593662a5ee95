using Loupe.Abstractions;

namespace Loupe.Core;

/// <summary>One problem in a pipeline file, located at file:line:column.</summary>
public sealed record PipelineError(string File, int Line, int Column, string Message)
{
    /// <inheritdoc/>
    public override string ToString() => Line > 0 ? $"{File}:{Line}:{Column}: error: {Message}" : $"{File}: error: {Message}";

    /// <summary>The errors in reading order: files in the order they were first named, within a file the errors with
    /// no line first, then by line and column; errors at the same place keep the order they were found in. Validation
    /// finds them phase by phase (the file's shape, each step's options, then what needs the model), which would
    /// otherwise list line 28 before line 16.</summary>
    public static IReadOnlyList<PipelineError> InFileOrder(IEnumerable<PipelineError> errors)
    {
        var list = errors.ToList();
        var files = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var e in list) files.TryAdd(e.File, files.Count);
        return [.. list.OrderBy(e => files[e.File]).ThenBy(e => e.Line).ThenBy(e => e.Column)];   // OrderBy is stable
    }
}

/// <summary>Thrown when a pipeline cannot run; carries every error found, in file order
/// (<see cref="PipelineError.InFileOrder"/>).</summary>
public sealed class PipelineException(IReadOnlyList<PipelineError> errors)
    : LoupeException(string.Join(Environment.NewLine, PipelineError.InFileOrder(errors).Select(e => e.ToString())))
{
    /// <summary>All errors, in file order.</summary>
    public IReadOnlyList<PipelineError> Errors { get; } = PipelineError.InFileOrder(errors);
}
