using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using YamlDotNet.RepresentationModel;

namespace Loupe.Core;

// The pipeline file's own sections, declared once as option records. The parser binds each section with the same
// OptionsBinder the plugins' options use (in the host's voice, see BindVoice), takes its allowed keys from these
// properties, and PipelineSchema generates their JSON Schema from them: a key exists here or nowhere.
// A YamlNode property is kept as written: it holds a component's options (bound later, against the registry) or a
// value whose parts the parser checks itself (a target, expect lines).

/// <summary>The top level of a pipeline file. The parser walks these sections itself (each has its own shape checks);
/// this record gives their keys and schema descriptions.</summary>
public sealed class PipelineSection
{
    /// <summary>Format version (1).</summary>
    [Description("pipeline format version")] public string? Version { get; set; }
    /// <summary>Pipeline name.</summary>
    [Description("pipeline name (used by output.dir's {name})")] public string Name { get; set; } = "pipeline";
    /// <summary>Run seed.</summary>
    [Description("run seed; each step's seed derives from it and the step id")] public int Seed { get; set; }
    /// <summary>Extra plugin folders.</summary>
    [Description("extra plugin folders (or .dll files), relative to this file; { path, sha256 } pins the plugin's assembly hash")]
    public List<PluginSection>? Plugins { get; set; }
    /// <summary>The model.</summary>
    public ModelSection? Model { get; set; }
    /// <summary>The data source.</summary>
    public DataSection? Data { get; set; }
    /// <summary>The steps.</summary>
    public List<StepSection>? Steps { get; set; }
    /// <summary>Where outputs go.</summary>
    public OutputSection? Output { get; set; }
    /// <summary>Run-wide settings.</summary>
    public SettingsSection? Settings { get; set; }
}

/// <summary>One <c>plugins:</c> entry: a folder (shorthand) or <c>{ path, sha256 }</c>.</summary>
public sealed class PluginSection
{
    /// <summary>Plugin folder or .dll, relative to the pipeline file.</summary>
    [Shorthand, Required, Description("a plugin folder with one plugin, or its .dll")] public string? Path { get; set; }
    /// <summary>Expected SHA-256 of the plugin assembly.</summary>
    [Description("expected SHA-256 of the plugin assembly (loupe plugins --verify prints it)")] public string? Sha256 { get; set; }
}

/// <summary><c>model:</c>.</summary>
public sealed class ModelSection
{
    /// <summary>Model backend id.</summary>
    [Required] public string? Uses { get; set; }
    /// <summary>The backend's options (bound against the registry).</summary>
    public YamlNode? With { get; set; }
    /// <summary>Preprocessing overrides.</summary>
    [Description("overrides the model's default preprocessing")] public InputOptions? Input { get; set; }
    /// <summary>Class labels file.</summary>
    [Description("class labels file, one per line, relative to this file")] public string? Labels { get; set; }
}

/// <summary><c>data:</c>.</summary>
public sealed class DataSection
{
    /// <summary>Data source id.</summary>
    [Required] public string? Uses { get; set; }
    /// <summary>The source's options (bound against the registry).</summary>
    public YamlNode? With { get; set; }
}

/// <summary>One entry of <c>steps:</c>.</summary>
public sealed class StepSection
{
    /// <summary>Step id (default: its <c>uses</c>).</summary>
    [Description("step id (default: its 'uses'); outputs go to <out>/<id>/")] public string? Id { get; set; }
    /// <summary>Analysis id.</summary>
    [Required] public string? Uses { get; set; }
    /// <summary>The analysis' options (bound against the registry).</summary>
    public YamlNode? With { get; set; }
    /// <summary>What to explain: an id or a one-key mapping (resolved against the registry).</summary>
    public YamlNode? Target { get; set; }
    /// <summary>Per-step batch size.</summary>
    [AtLeast(1), Description("batch size of this step (overrides settings.batch_size)")] public int? BatchSize { get; set; }
    /// <summary>Thresholds on the step's metrics, one string or a list (each line parsed by <see cref="Expectation"/>).</summary>
    [Description("a threshold on a metric of this step, e.g. \"auc_mean < 0.2\"")] public YamlNode? Expect { get; set; }
    /// <summary>Step timeout (<see cref="TimeSpan.Zero"/>: none, over <c>settings.step_timeout</c>).</summary>
    [Description("this step's timeout (over settings.step_timeout)")] public TimeSpan? Timeout { get; set; }
    /// <summary>How this step's heatmaps are drawn.</summary>
    [Description("how this step's heatmaps are drawn (over settings.display)")] public OverlayStyle? Display { get; set; }
}

/// <summary><c>output.report</c> kinds.</summary>
public enum ReportKind
{
    /// <summary>No report.</summary>
    None,
    /// <summary><c>report.html</c> after the run.</summary>
    Html,
}

/// <summary><c>output:</c>.</summary>
public sealed class OutputSection
{
    /// <summary>Output folder template.</summary>
    [Description("output folder; {name} and {timestamp} are replaced")] public string Dir { get; set; } = "runs/{name}-{timestamp}";
    /// <summary>Report after the run.</summary>
    [Description("a report written after the run")] public ReportKind Report { get; set; } = ReportKind.None;
}

/// <summary><c>settings:</c>.</summary>
public sealed class SettingsSection
{
    /// <summary>Default batch size.</summary>
    [AtLeast(1), Description("default batch size")] public int BatchSize { get; set; } = 16;
    /// <summary>Intra-op threads.</summary>
    [Description("intra-op threads (0: the library default)")] public int Threads { get; set; }
    /// <summary>Memory budget in MiB.</summary>
    [AtLeast(1), Description("memory budget for batched copies per step, in MiB")] public int MemoryBudgetMb { get; set; } = (int)(Explain.DefaultMemoryBudgetBytes >> 20);
    /// <summary>Largest image (width × height).</summary>
    [AtLeast(1), Description("largest image accepted (width × height, checked from the header before decoding)")] public int MaxImagePixels { get; set; } = 64 * 1024 * 1024;
    /// <summary>Largest dataset (items).</summary>
    [AtLeast(1), Description("largest dataset accepted (items); a larger source is refused before any model runs")] public int? MaxItems { get; set; }
    /// <summary>Default step timeout.</summary>
    [Description("default timeout of every step")] public TimeSpan? StepTimeout { get; set; }
    /// <summary>How every step's heatmaps are drawn.</summary>
    [Description("how every step's heatmaps are drawn (colour map, outlier clipping, sign, opacity)")] public OverlayStyle? Display { get; set; }
    /// <summary>Classes recorded per input.</summary>
    [AtLeast(0), Description("classes recorded per input in the manifest's predictions (0: none)")] public int TopK { get; set; } = DisplayStyles.DefaultTopK;
}

/// <summary>A lower bound on a number, reported as "must be &gt; 0" (or "≥ N") and written as the schema's <c>minimum</c>.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class AtLeastAttribute(long minimum) : ValidationAttribute
{
    /// <summary>The smallest value accepted.</summary>
    public long Minimum { get; } = minimum;
    /// <inheritdoc/>
    public override bool IsValid(object? value) => value is null || Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture) >= Minimum;
    /// <inheritdoc/>
    public override string FormatErrorMessage(string name) => Minimum == 1 ? "must be > 0" : $"must be ≥ {Minimum}";
}
