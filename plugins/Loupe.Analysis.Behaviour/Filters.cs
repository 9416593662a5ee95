using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Behaviour;

/// <summary>How filter tiles are scaled to [0,1] for display.</summary>
public enum FilterScaling
{
    /// <summary>Each filter min-max scaled on its own (ZFNet figures).</summary>
    PerFilter,
    /// <summary>One scale for the whole layer (relative magnitudes stay visible).</summary>
    Global,
}

/// <summary>Options of <c>filters</c>.</summary>
public sealed record FiltersOptions
{
    /// <summary>Convolution layer.</summary>
    [Required, LayerName, Description("convolution layer whose weights W (out×in×kh×kw) are shown, e.g. conv1")]
    public string Layer { get; init; } = "";
    /// <summary>Scaling.</summary>
    [Description("per-filter (default) or global min-max scaling")]
    public FilterScaling Scaling { get; init; } = FilterScaling.PerFilter;
    /// <summary>Most filters in the grid.</summary>
    [Range(1, 4096), Description("at most this many output filters in the grid")]
    public int MaxFilters { get; init; } = 64;
    /// <summary>Most input channels per filter (deeper layers).</summary>
    [Range(1, 4096), Description("deeper layers: at most this many input-channel tiles per filter")]
    public int MaxInputChannels { get; init; } = 16;
    /// <summary>Tile size in display pixels.</summary>
    [Range(4, 512), Description("display size of one tile, in pixels")]
    public int TileSize { get; init; } = 32;
}

/// <summary>Filter visualisation (Zeiler &amp; Fergus 2014): a first layer (3 input channels) as RGB tiles, deeper
/// layers as one grey tile per (filter, input channel). Raw weights are saved as <c>.npy</c>.</summary>
public sealed class Filters : Analysis<FiltersOptions>, IDeclaresMetrics
{
    /// <inheritdoc/>
    public IReadOnlyList<string> MetricNames => ["filters", "weight_norm_mean"];

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Parameters, UsesTarget: false, UsesData: false);

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(FiltersOptions options, AnalysisValidationContext context)
    {
        var w = ModelParameters.Read(context.Model, options.Layer + ".weight");
        if (w is null) yield return $"layer '{options.Layer}' has no weight; filters needs a convolution layer";
        else if (w.dim() != 4) yield return $"layer '{options.Layer}' has a {w.dim()}-D weight ({string.Join("×", w.shape)}); filters needs a convolution layer (4-D weight)";
    }

    /// <inheritdoc/>
    public override void Run(FiltersOptions options, IAnalysisContext ctx)
    {
        using var scope = NewDisposeScope();
        var w = ModelParameters.Read(ctx.Model, options.Layer + ".weight")!.detach().to(ScalarType.Float32).cpu();
        ctx.Output.Raw("weights", null, NdArray.FromTensor(w));
        long outC = w.shape[0], inC = w.shape[1];
        int shown = (int)Math.Min(outC, options.MaxFilters);
        var global = Display.MinMax(w);
        var tiles = new List<RgbImage>();
        int columns;
        if (inC == 3)
        {
            for (int f = 0; f < shown; f++)
                tiles.Add(Tile(options.Scaling == FilterScaling.Global ? global[f] : Display.MinMax(w[f]), options.TileSize));
            columns = (int)Math.Ceiling(Math.Sqrt(shown));
        }
        else
        {
            int ins = (int)Math.Min(inC, options.MaxInputChannels);
            for (int f = 0; f < shown; f++)
            {
                var scaled = options.Scaling == FilterScaling.Global ? global[f] : Display.MinMax(w[f]);
                for (int c = 0; c < ins; c++) tiles.Add(Tile(scaled[c].unsqueeze(0), options.TileSize));
            }
            columns = ins == 1 ? (int)Math.Ceiling(Math.Sqrt(shown)) : ins;
        }
        var how = options.Scaling == FilterScaling.Global ? "one scale for all" : "each filter scaled on its own";
        var layout = inC == 3 ? "RGB" : Math.Min(inC, options.MaxInputChannels) == 1 ? "one input channel" : $"rows: filters, columns: first {Math.Min(inC, options.MaxInputChannels)} input channels";
        ctx.Output.Display("filters", null, Figure.Titled(Display.Grid(tiles, columns), $"{options.Layer}: {shown} of {outC} filters ({layout}; {how})"));
        ctx.Output.Metric("filters", outC);
        ctx.Output.Metric("weight_norm_mean", w.flatten(1).norm(1).mean().item<float>());
    }

    static RgbImage Tile(Tensor chw, int size)
    {
        var img = Display.Image(chw);
        return Display.Scale(img, Math.Max(1, size / Math.Max(1, img.Width)));
    }
}
