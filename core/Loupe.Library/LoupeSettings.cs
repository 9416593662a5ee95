using Loupe.Abstractions;
using Loupe.Core;

namespace Loupe;

/// <summary>How <see cref="LoupeModel.Load"/> loads a model; every value has the default a pipeline file has.</summary>
public sealed record LoupeSettings
{
    /// <summary>Folders of plugin assemblies. Default: <c>plugins/</c> beside the application (where
    /// <c>build/Loupe.Host.targets</c> copies the built-in plugins).</summary>
    public IReadOnlyList<string> PluginDirectories { get; init; } = [PluginHost.DefaultPluginDirectory];
    /// <summary>Plugins registered in-process (e.g. a technique defined in the application itself).</summary>
    public IReadOnlyList<IPluginRegistrar> Registrars { get; init; } = [];
    /// <summary>Folder relative paths (weights, labels) resolve against. Default: the current directory.</summary>
    public string? BaseDirectory { get; init; }
    /// <summary>Class names, one per line (the pipeline's <c>model.labels</c>).</summary>
    public string? Labels { get; init; }
    /// <summary>Preprocessing overrides (the pipeline's <c>model.input</c>): <c>size</c>, <c>channels</c>, <c>mean</c>, <c>std</c>.</summary>
    public object? Input { get; init; }
    /// <summary>Options of the <c>image-folder</c> source that reads images (e.g. its resize mode); <c>path</c> is set by Loupe.</summary>
    public object? ImageOptions { get; init; }
    /// <summary>Run seed (techniques derive their own from it and their id, as in a pipeline).</summary>
    public int Seed { get; init; }
    /// <summary>Memory a technique may use for batched copies (<c>settings.memory_budget_mb</c>).</summary>
    public int? MemoryBudgetMb { get; init; }
    /// <summary>Batch size (<c>settings.batch_size</c>).</summary>
    public int? BatchSize { get; init; }
    /// <summary>libtorch threads (<c>settings.threads</c>); 0 leaves libtorch's default.</summary>
    public int Threads { get; init; }
}

/// <summary>A pipeline or an in-process call was invalid: every error found, each naming the field.</summary>
public sealed class LoupeValidationException(IReadOnlyList<PipelineError> errors)
    : LoupeException(string.Join(Environment.NewLine, errors.Select(e => e.ToString())))
{
    /// <summary>The errors, as a pipeline file reports them.</summary>
    public IReadOnlyList<PipelineError> Errors { get; } = errors;
}
