using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Loupe.Core;

/// <summary>A reference to a component: <c>uses</c> + <c>with</c>.</summary>
public sealed record ComponentRef(string Uses, YamlNode? With, Mark Mark);

/// <summary>The model section.</summary>
public sealed record ModelSpec(string Uses, YamlNode? With, Mark Mark, YamlNode? Input, string? Labels, Mark LabelsMark);

/// <summary>One step.</summary>
public sealed record StepSpec(string Id, string Uses, YamlNode? With, YamlNode? Target, Mark Mark, Mark UsesMark)
{
    /// <summary>Per-step batch size override.</summary>
    public int? BatchSize { get; init; }
}

/// <summary>A parsed (not yet bound) pipeline.</summary>
public sealed class PipelineSpec
{
    /// <summary>Pipeline file path (absolute).</summary>
    public required string File { get; init; }
    /// <summary>Folder relative paths resolve against.</summary>
    public string BaseDirectory => Path.GetDirectoryName(File)!;
    /// <summary>Root node after overrides (for the manifest).</summary>
    public required YamlMappingNode Root { get; init; }
    /// <summary>Pipeline name.</summary>
    public string Name { get; set; } = "pipeline";
    /// <summary>Run seed.</summary>
    public int Seed { get; set; }
    /// <summary>Batch size.</summary>
    public int BatchSize { get; set; } = 16;
    /// <summary>Intra-op threads (0 = library default).</summary>
    public int Threads { get; set; }
    /// <summary>Extra plugin folders (absolute).</summary>
    public List<string> PluginDirs { get; } = [];
    /// <summary>The model.</summary>
    public ModelSpec? Model { get; set; }
    /// <summary>The data source.</summary>
    public ComponentRef? Data { get; set; }
    /// <summary>Steps in order.</summary>
    public List<StepSpec> Steps { get; } = [];
    /// <summary>Output folder template.</summary>
    public string OutputDir { get; set; } = "runs/{name}-{timestamp}";
}
