using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Loupe.Core;

/// <summary>A reference to a component: <c>uses</c> + <c>with</c>.</summary>
public sealed record ComponentRef(string Uses, YamlNode? With, Mark Mark);

/// <summary>The model section.</summary>
public sealed record ModelSpec(string Uses, YamlNode? With, Mark Mark, InputOptions? Input, string? Labels, Mark LabelsMark);

/// <summary>One step.</summary>
public sealed record StepSpec(string Id, string Uses, YamlNode? With, YamlNode? Target, Mark Mark, Mark UsesMark)
{
    /// <summary>Per-step batch size override.</summary>
    public int? BatchSize { get; init; }
    /// <summary><c>timeout:</c> of this step (zero: none), overriding <c>settings.step_timeout</c>.</summary>
    public TimeSpan? Timeout { get; init; }
    /// <summary><c>expect:</c> thresholds on the step's metrics, checked after its outputs are written.</summary>
    public IReadOnlyList<Expectation> Expect { get; init; } = [];
    /// <summary><c>display:</c> of this step (over <c>settings.display</c>); null when not given.</summary>
    public OverlayStyle? Display { get; init; }
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
    /// <summary>Memory budget for batched copies per step, in bytes.</summary>
    public long MemoryBudgetBytes { get; set; } = Explain.DefaultMemoryBudgetBytes;
    /// <summary>Largest image (width × height) a data source may decode; checked from the header, before decoding.</summary>
    public long MaxImagePixels { get; set; } = 64L * 1024 * 1024;
    /// <summary>Largest dataset (items) a run accepts; null = no limit (sources stream, so size costs time, not memory).</summary>
    public long? MaxItems { get; set; }
    /// <summary>Intra-op threads (0 = library default).</summary>
    public int Threads { get; set; }
    /// <summary>Default step timeout (<c>settings.step_timeout</c>); null: none.</summary>
    public TimeSpan? StepTimeout { get; set; }
    /// <summary><c>settings.display</c>: how every step's heatmaps are drawn; null when not given.</summary>
    public OverlayStyle? Display { get; set; }
    /// <summary><c>settings.top_k</c>: classes recorded per input (0: none).</summary>
    public int TopK { get; set; } = DisplayStyles.DefaultTopK;
    /// <summary>Extra plugin folders (absolute), with their pinned hashes.</summary>
    public List<PluginSource> Plugins { get; } = [];
    /// <summary>Extra plugin folders (absolute).</summary>
    public IEnumerable<string> PluginDirs => Plugins.Select(p => p.Path);
    /// <summary>The model.</summary>
    public ModelSpec? Model { get; set; }
    /// <summary>The data source.</summary>
    public ComponentRef? Data { get; set; }
    /// <summary>Steps in order.</summary>
    public List<StepSpec> Steps { get; } = [];
    /// <summary>Output folder template.</summary>
    public string OutputDir { get; set; } = "runs/{name}-{timestamp}";
    /// <summary><c>output.report</c>: <c>none</c> (default) or <c>html</c> (<c>report.html</c> after the run).</summary>
    public string Report { get; set; } = "none";
}

/// <summary>One step-level <c>expect:</c> line (<see cref="ExpectLine"/>, the grammar a metric step's <c>expect</c> option
/// shares) and where it stands in the pipeline file.</summary>
public sealed record Expectation(ExpectLine Line, Mark Mark)
{
    /// <summary>The line as written (trimmed).</summary>
    public string Text => Line.Text;

    /// <summary>Parses one expectation; the error names the position where it goes wrong.</summary>
    public static Expectation? Parse(string text, Mark mark, out string? error)
    {
        var line = ExpectLine.Parse(text, out var what, out int position);
        error = line is null ? $"{what} at position {position}" : null;
        return line is null ? null : new Expectation(line, mark);
    }

    /// <summary>Null when the expectation names one of <paramref name="declared"/> (as <see cref="Check"/> resolves
    /// names); otherwise the validation error, with a did-you-mean.</summary>
    public string? Unknown(IReadOnlyList<string> declared) => Line.Key(declared.Contains) is not null ? null
        : $"expect '{Text}': the step writes no metric '{Line.Metric}'{Line.DidYouMean(declared)}; its metrics: {string.Join(", ", declared)}";

    /// <summary>Checks the expectation against a step's metrics; null when it holds, else the failure message.</summary>
    public string? Check(IReadOnlyDictionary<string, double> metrics)
    {
        var key = Line.Key(metrics.ContainsKey);
        if (key is null)
            return $"expect '{Text}': the step produced no metric '{Line.Metric}'; its metrics: {(metrics.Count == 0 ? "(none)" : string.Join(", ", metrics.Keys.Order()))}";
        var v = metrics[key];
        return Line.Holds(v) ? null : $"expect '{Text}' failed: {key} = {v.ToString("G6", System.Globalization.CultureInfo.InvariantCulture)}";
    }
}
