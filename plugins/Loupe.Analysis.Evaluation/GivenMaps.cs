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
}

/// <summary><c>given-maps</c>: maps made elsewhere, read per input id from a folder, so that the metrics evaluate them
/// (Quantus's <c>a_batch</c>: evaluate the explanations you already have). The step's target says what they explain
/// (default top-1: give the one they were made for, e.g. <c>target: label</c>). The files are read as the data
/// sources read theirs: a name that leads outside the folder, a link, a FIFO, a file over the element limit or not
/// float32 is refused with the file named. The maps exist for the original inputs only: metrics that explain copies,
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
        if (options.Folder is null) yield return "give 'folder': the folder that holds the maps";
        if (!options.Pattern.Contains("{id}")) yield return $"option 'pattern' ('{options.Pattern}') must contain {{id}}: each input has its own file";
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(GivenMapsOptions options, AttributionInput input)
    {
        var ids = input.Ids ?? throw new LoupeException("given-maps: the maps exist for the original inputs only, not for copies of them that a metric made (noisy, shifted or perturbed inputs)");
        var (_, _, selection) = Explain.Scores(input.Context, input.Input, input.Selection, input.Slot);
        using var scope = NewDisposeScope();
        var maps = ids.Select(id => Read(options, id)).ToArray();
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
        var m = Npy.Read(path, MaxElements).ToTensor();
        if (m.dim() == 3 && m.shape[0] == 1) m = m[0];
        if (m.dim() is not (2 or 3) || m.numel() == 0)
            throw new LoupeException($"{path}: a map must be H×W, 1×H×W or C×H×W, not ({string.Join("×", m.shape)})");
        if (!m.isfinite().all().item<bool>()) throw new LoupeException($"{path}: the map holds NaN or infinite values");
        return m;
    }
}
