using Loupe.Core;

namespace Loupe;

/// <summary>How <see cref="Pipelines"/> runs a pipeline (the CLI's <c>run</c> flags).</summary>
public sealed record PipelineOptions
{
    /// <summary><c>--out</c>: the run folder (must not exist or be empty); default: the pipeline's <c>output.dir</c>.</summary>
    public string? OutDir { get; init; }
    /// <summary><c>--set key=value</c> overrides.</summary>
    public IReadOnlyList<string> Overrides { get; init; } = [];
    /// <summary>Plugin folders; default: <c>plugins/</c> beside the application.</summary>
    public IReadOnlyList<string> PluginDirectories { get; init; } = [PluginHost.DefaultPluginDirectory];
    /// <summary>In-process plugins.</summary>
    public IReadOnlyList<Abstractions.IPluginRegistrar> Registrars { get; init; } = [];
    /// <summary>Receives progress, step and warning events.</summary>
    public IRunObserver? Observer { get; init; }
}

/// <summary>Whole pipelines, from a file or from YAML built in code: exactly what <c>loupe run</c> does (run folder,
/// manifest, report), returning the exit code the CLI would, the folder and the manifest.</summary>
public static class Pipelines
{
    /// <summary>Runs a pipeline file.</summary>
    public static RunResult Run(string pipelineFile, PipelineOptions? options = null, CancellationToken cancellation = default) =>
        PipelineRunner.Run(Request(pipelineFile, null, options), cancellation);

    /// <summary>Runs pipeline YAML text; relative paths in it resolve against <paramref name="baseDirectory"/>.</summary>
    public static RunResult RunYaml(string yaml, string baseDirectory, PipelineOptions? options = null, CancellationToken cancellation = default) =>
        PipelineRunner.Run(Request(Path.Combine(Path.GetFullPath(baseDirectory), LoupeModel.VirtualFileName), yaml, options), cancellation);

    static RunRequest Request(string file, string? text, PipelineOptions? o)
    {
        o ??= new PipelineOptions();
        return new RunRequest(file)
        {
            PipelineText = text, OutDir = o.OutDir, Overrides = o.Overrides, PluginDirectories = o.PluginDirectories,
            Registrars = o.Registrars, Observer = o.Observer,
        };
    }
}
