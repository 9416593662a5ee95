using System.ComponentModel;
using System.Globalization;

namespace Loupe.Abstractions;

/// <summary>Colour tables for heatmaps.</summary>
public enum Colormap
{
    /// <summary>Viridis: perceptually uniform, colour-blind friendly (unsigned maps).</summary>
    Viridis,
    /// <summary>Blue → white → red (ColorBrewer RdBu, reversed): signed maps, white at zero.</summary>
    Diverging,
    /// <summary>Black → white.</summary>
    Grey,
    /// <summary>Jet (MATLAB's; OpenCV's COLORMAP_JET, which pytorch-grad-cam's <c>show_cam_on_image</c> draws, within one
    /// level): dark blue → cyan → yellow → dark red. Not perceptually uniform: for comparing with that library's pictures.</summary>
    Jet,
}

/// <summary>Which part of a signed attribution map is shown (Captum's <c>visualize_image_attr</c> <c>sign</c>).</summary>
public enum AttributionSign
{
    /// <summary>|map|.</summary>
    Absolute,
    /// <summary>max(map, 0).</summary>
    Positive,
    /// <summary>|min(map, 0)|.</summary>
    Negative,
    /// <summary>The signed map, scaled to [−1, 1] (a diverging colour map by default).</summary>
    All,
}

/// <summary>How a step's heatmaps are drawn (<c>display:</c> of a step, or <c>settings.display</c> for all steps). Unset
/// fields fall back to the settings, then to the technique's default. The raw <c>.npy</c> maps are never affected.</summary>
public sealed record OverlayStyle
{
    /// <summary>Colour map (default viridis; diverging when <see cref="Sign"/> is <c>all</c>).</summary>
    [Description("colour map: viridis, diverging (signed maps), grey, or jet (pytorch-grad-cam's show_cam_on_image colours: OpenCV's COLORMAP_JET)")]
    public Colormap? Colormap { get; set; }

    /// <summary>Captum's <c>outlier_perc</c>: the map is divided by the value at which the cumulative sum of its sorted
    /// |values| reaches (100 − outlier_perc) % of the total, then clipped (1: clip at the 99th cumulative percentile).</summary>
    [Description("percent of outliers clipped (Captum's outlier_perc): the scale is the value where the sorted |values|' cumulative sum reaches 100 − outlier_perc % of the total")]
    [System.ComponentModel.DataAnnotations.Range(0.0, 100.0)]
    public double? OutlierPerc { get; set; }

    /// <summary>Which sign to show (Captum's <c>sign</c>).</summary>
    [Description("which part of the map to show: absolute, positive, negative or all (signed)")]
    public AttributionSign? Sign { get; set; }

    /// <summary>Heatmap opacity over the image, 0..1 (default 0.55).</summary>
    [Description("heatmap opacity over the image, 0..1 (default 0.55)")]
    [System.ComponentModel.DataAnnotations.Range(0.0, 1.0)]
    public double? Opacity { get; set; }

    /// <summary>The default of gradient maps (saliency, gradient × input, integrated gradients, ...): |attribution|
    /// scaled as Captum's <c>visualize_image_attr</c> with outlier_perc 1 (the 99th cumulative percentile).</summary>
    public static OverlayStyle Gradient => new() { Sign = AttributionSign.Absolute, OutlierPerc = 1 };

    /// <summary>This style with unset fields taken from <paramref name="fallback"/>.</summary>
    public OverlayStyle Over(OverlayStyle? fallback) => fallback is null ? this : new()
    {
        Colormap = Colormap ?? fallback.Colormap, OutlierPerc = OutlierPerc ?? fallback.OutlierPerc,
        Sign = Sign ?? fallback.Sign, Opacity = Opacity ?? fallback.Opacity,
    };

    /// <summary>True when maps are scaled as Captum does (a sign or an outlier percentage is set); false: each map is
    /// min-max scaled (pytorch-grad-cam's <c>scale_cam_image</c>).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public bool CaptumScaling => Sign is not null || OutlierPerc is not null;

    /// <summary>The colour map in effect.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public Colormap EffectiveColormap => Colormap ?? (Sign == AttributionSign.All ? Abstractions.Colormap.Diverging : Abstractions.Colormap.Viridis);

    /// <summary>What the colour measures, for a colour bar.</summary>
    public string Describe()
    {
        if (!CaptumScaling) return "each map min–max scaled";
        var what = (Sign ?? AttributionSign.Absolute) switch
        {
            AttributionSign.Positive => "positive part", AttributionSign.Negative => "|negative part|",
            AttributionSign.All => "signed", _ => "|attribution|",
        };
        var p = OutlierPerc ?? 0;
        return p > 0 ? $"{what} / {(100 - p).ToString("0.##", CultureInfo.InvariantCulture)}% cum. threshold" : $"{what} / max";
    }
}
