using Loupe.Abstractions;

namespace Loupe.Core;

/// <summary>One problem in a pipeline file, located at file:line:column.</summary>
public sealed record PipelineError(string File, int Line, int Column, string Message)
{
    /// <inheritdoc/>
    public override string ToString() => Line > 0 ? $"{File}:{Line}:{Column}: error: {Message}" : $"{File}: error: {Message}";
}

/// <summary>Thrown when a pipeline cannot run; carries every error found.</summary>
public sealed class PipelineException(IReadOnlyList<PipelineError> errors)
    : LoupeException(string.Join(Environment.NewLine, errors.Select(e => e.ToString())))
{
    /// <summary>All errors.</summary>
    public IReadOnlyList<PipelineError> Errors { get; } = errors;
}

