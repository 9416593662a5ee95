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
    [Description("colour map: viridis, diverging (signed maps) or grey")]
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

public static partial class Display
{
    // ColorBrewer RdBu (11 classes), reversed so that negative is blue and positive red; white-ish in the middle.
    static readonly int[] DivergingAnchors =
        [0x053061, 0x2166ac, 0x4393c3, 0x92c5de, 0xd1e5f0, 0xf7f7f7, 0xfddbc7, 0xf4a582, 0xd6604d, 0xb2182b, 0x67001f];

    static readonly Lazy<byte[]> DivergingLut = new(() =>
    {
        var lut = new byte[256 * 3];
        int n = DivergingAnchors.Length - 1;
        for (int i = 0; i < 256; i++)
        {
            double t = i / 255.0 * n;
            int a = Math.Min((int)t, n - 1);
            double f = t - a;
            for (int c = 0; c < 3; c++)
            {
                int sh = 16 - 8 * c;
                lut[i * 3 + c] = (byte)Math.Round((DivergingAnchors[a] >> sh & 0xff) * (1 - f) + (DivergingAnchors[a + 1] >> sh & 0xff) * f);
            }
        }
        return lut;
    });

    static readonly Lazy<byte[]> GreyLut = new(() => Enumerable.Range(0, 256).SelectMany(i => new[] { (byte)i, (byte)i, (byte)i }).ToArray());

    /// <summary>The 256-entry lookup table (RGB interleaved) of a colour map.</summary>
    public static byte[] Lut(Colormap map) => map switch
    {
        Colormap.Diverging => DivergingLut.Value,
        Colormap.Grey => GreyLut.Value,
        _ => ViridisLut.Value,
    };

    /// <summary>Captum's <c>_cumulative_sum_threshold</c>: the smallest sorted value at which the cumulative sum of the
    /// sorted <paramref name="values"/> (non-negative) reaches <paramref name="percentile"/> % of their total.</summary>
    public static float CumulativeSumThreshold(ReadOnlySpan<float> values, double percentile)
    {
        if (values.Length == 0) return 0;
        var sorted = values.ToArray();
        Array.Sort(sorted);
        double total = 0;
        foreach (var v in sorted) total += v;
        double goal = total * 0.01 * percentile, sum = 0;
        foreach (var v in sorted)
        {
            sum += v;
            if (sum >= goal) return v;
        }
        return sorted[^1];
    }

    /// <summary>Captum's <c>_normalize_attr</c> for one 2-D map: keeps the part of the map <paramref name="sign"/> names,
    /// divides by the cumulative-sum threshold at 100 − <paramref name="outlierPerc"/> and clips to [−1, 1] (a zero
    /// threshold leaves the map unscaled and clipped). Returns the scaled values (in [0, 1] for absolute, positive and
    /// negative — negative as magnitudes — and [−1, 1] for all) and the threshold.</summary>
    public static (float[] Scaled, float Threshold) NormalizeAttribution(ReadOnlySpan<float> map, AttributionSign sign, double outlierPerc)
    {
        var v = new float[map.Length];
        for (int i = 0; i < v.Length; i++)
            v[i] = sign switch
            {
                AttributionSign.Absolute or AttributionSign.All => MathF.Abs(map[i]),
                AttributionSign.Positive => map[i] > 0 ? map[i] : 0,
                _ => map[i] < 0 ? -map[i] : 0,
            };
        var threshold = CumulativeSumThreshold(v, 100 - outlierPerc);
        float scale = threshold > 0 ? threshold : 1; // Captum warns and returns the map unscaled when it is ~0
        var scaled = new float[map.Length];
        for (int i = 0; i < v.Length; i++)
            scaled[i] = sign == AttributionSign.All ? Math.Clamp(map[i] / scale, -1, 1) : Math.Clamp(v[i] / scale, 0, 1);
        return (scaled, threshold);
    }

    /// <summary>Formats a value for a label: 3 significant digits, invariant culture (<c>0.0231</c>, <c>12.3</c>,
    /// <c>1.2e-05</c>).</summary>
    public static string Number(double v)
    {
        if (v == 0 || !double.IsFinite(v)) return v == 0 ? "0" : v.ToString(CultureInfo.InvariantCulture);
        var a = Math.Abs(v);
        if (a < 1e-2 || a >= 1e5) return v.ToString("0.##e+0", CultureInfo.InvariantCulture);
        int dec = Math.Max(0, 2 - (int)Math.Floor(Math.Log10(a)));
        return Math.Round(v, dec, MidpointRounding.AwayFromZero).ToString(dec == 0 ? "0" : "0." + new string('#', dec), CultureInfo.InvariantCulture);
    }
}
