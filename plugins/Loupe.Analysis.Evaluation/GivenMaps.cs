using System.ComponentModel;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Options of <c>given-maps</c>.</summary>
public sealed record GivenMapsOptions
{
    /// <summary>Folder of the maps.</summary>
    [FilePath(Directory = true), Description("folder of the maps, one .npy per input id (H×W, 1×H×W or C×H×W, at any resolution: metrics resize them to the input's), e.g. maps saved from Captum or pytorch-grad-cam, or a Loupe run's step folder")]
    public string? Folder { get; init; }
    /// <summary>File name pattern.</summary>
    [Description("an input's file in the folder, {id} standing for the input id: {id}.npy (the default), or {id}.saliency.npy for the raw maps of a Loupe run's saliency step")]
    public string Pattern { get; init; } = "{id}.npy";
    /// <summary>One file of every map.</summary>
    [FilePath, Description("instead of 'folder': one .npy of every input's map, row i for the data source's input i (N×H×W, N×1×H×W or N×C×H×W; Quantus's a_batch as np.save writes it), for sources whose ids are row numbers (npy, idx)")]
    public string? File { get; init; }
}

/// <summary><c>given-maps</c>: maps made elsewhere, read per input id from a folder or by row from one file, so that the
/// metrics evaluate them (Quantus's <c>a_batch</c>: evaluate the explanations you already have). The step's target says what they explain
/// (default top-1: give the one they were made for, e.g. <c>target: label</c>). The files are read as the data
/// sources read theirs: a name that leads outside the folder, a link, a FIFO, a file over the element limit or not
/// numeric is refused with the file named. The maps exist for the original inputs only: metrics that explain copies,
/// another class or a randomised model (<see cref="IFixedMaps"/>) refuse this step at validation.</summary>
public sealed class GivenMaps : AttributionAnalysis<GivenMapsOptions>, IFixedMaps
{
    /// <summary>Most values one map file may hold (a 4-channel 4096² map).</summary>
    public const long MaxElements = 1L << 26;

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward) { HandlesSideInputs = true };   // one forward of the batch, for the target
    /// <inheritdoc/>
    public override string ArtifactName => "given-maps";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(GivenMapsOptions options, AnalysisValidationContext context)
    {
        if (options.Folder is null && options.File is null) yield return "give 'folder' (one map per file) or 'file' (every map, a row each)";
        if (options.Folder is not null && options.File is not null) yield return "give 'folder' (one map per file) or 'file' (every map, a row each), not both";
        if (!options.Pattern.Contains("{id}")) yield return $"option 'pattern' ('{options.Pattern}') must contain {{id}}: each input has its own file";
        if (options.File is null) yield break;
        Npy.Rows? rows = null;
        string? error = null;
        try { rows = Npy.Rows.Open(options.File, MaxElements); }
        catch (LoupeException e) { error = e.Message; }
        if (error is not null) yield return $"option 'file': {error}";
        else if (rows!.Header.Shape.Length is not (3 or 4)) yield return $"option 'file': {options.File} holds ({string.Join("×", rows.Header.Shape)}); expected one map per input: N×H×W, N×1×H×W or N×C×H×W";
        else if (context.InputCount is { } n && rows.Count < n) yield return $"option 'file': {options.File} holds {rows.Count} maps for {n} inputs";
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(GivenMapsOptions options, AttributionInput input)
    {
        var ids = input.Ids ?? throw new LoupeException("given-maps: the maps exist for the original inputs only, not for copies of them that a metric made (noisy, shifted or perturbed inputs)");
        var (_, _, selection) = Explain.Scores(input.Context, input.Input, input.Selection, input.Slot);
        using var scope = NewDisposeScope();
        var maps = options.File is { } file ? FromFile(file, ids) : ids.Select(id => Read(options, id)).ToArray();
        for (int i = 1; i < maps.Length; i++)
            if (!maps[i].shape.SequenceEqual(maps[0].shape))
                throw new LoupeException($"given-maps: the map of input '{ids[i]}' is ({string.Join("×", maps[i].shape)}), that of '{ids[0]}' ({string.Join("×", maps[0].shape)}); one batch's maps must have one shape");
        return new AttributionResult(scope.MoveToOuter(stack(maps)), selection);
    }

    static Tensor Read(GivenMapsOptions o, string id)
    {
        string what = $"given-maps: input '{SafeFile.Printable(id)}'";
        var path = SafeFile.Inside(o.Folder!, o.Pattern.Replace("{id}", id), what);
        if (!File.Exists(path)) throw new LoupeException($"given-maps: folder '{o.Folder}' has no map for input '{SafeFile.Printable(id)}' ({Path.GetFileName(path)})");
        SafeFile.RequireRegular(path, what);
        return Checked(Npy.Read(path, MaxElements).ToTensor(), path);
    }

    /// <summary>The maps of <paramref name="ids"/> from the rows of one file: input id k (a row number, as the npy and
    /// idx sources number their inputs) is row k.</summary>
    static Tensor[] FromFile(string file, string[] ids)
    {
        var rows = ids.Select(id => id.Length is > 0 and <= 12 && id.All(char.IsAsciiDigit) ? long.Parse(id, System.Globalization.CultureInfo.InvariantCulture)
            : throw new LoupeException($"given-maps: option 'file' reads the map of input k from row k, and input '{SafeFile.Printable(id)}' is not a row number (the npy and idx sources number their inputs); give a 'folder' of <id>.npy files")).ToArray();
        var array = Npy.Rows.Open(file, MaxElements).ReadRows(rows).ToTensor();
        return [.. Enumerable.Range(0, ids.Length).Select(i => Checked(array[i], $"{file} (row {rows[i]})"))];
    }

    static Tensor Checked(Tensor m, string what)
    {
        if (m.dim() == 3 && m.shape[0] == 1) m = m[0];
        if (m.dim() is not (2 or 3) || m.numel() == 0)
            throw new LoupeException($"{what}: a map must be H×W, 1×H×W or C×H×W, not ({string.Join("×", m.shape)})");
        if (!m.isfinite().all().item<bool>()) throw new LoupeException($"{what}: the map holds NaN or infinite values");
        return m;
    }
}
