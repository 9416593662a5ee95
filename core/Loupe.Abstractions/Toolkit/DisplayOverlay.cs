using System.Globalization;
using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

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

    // MATLAB's jet, v = i / 255: red, green and blue are clamp(1.5 − |4v − k|) for k = 3, 2, 1 (OpenCV's COLORMAP_JET
    // samples the same ramps: within one level of it at every index).
    static readonly Lazy<byte[]> JetLut = new(() => Enumerable.Range(0, 256).SelectMany(i =>
        new[] { 3.0, 2.0, 1.0 }.Select(k => (byte)Math.Round(255 * Math.Clamp(1.5 - Math.Abs(4 * i / 255.0 - k), 0, 1)))).ToArray());

    /// <summary>The 256-entry lookup table (RGB interleaved) of a colour map.</summary>
    public static byte[] Lut(Colormap map) => map switch
    {
        Colormap.Diverging => DivergingLut.Value,
        Colormap.Grey => GreyLut.Value,
        Colormap.Jet => JetLut.Value,
        _ => ViridisLut.Value,
    };

    /// <summary>Captum's <c>_cumulative_sum_threshold</c>: the smallest sorted value at which the cumulative sum of the
    /// sorted <paramref name="values"/> (non-negative) reaches <paramref name="percentile"/> % of their total.</summary>
    /// <remarks>That value is the smallest v of the values with Σ_{x ≤ v} x ≥ goal, found without sorting by a
    /// quickselect on sums (three-way partitions around a pivot, keeping the side that holds the goal): O(n) expected
    /// instead of a sort, which cost 3.4 ms per 224² map — 6 % of a batch-1 saliency call, paid twice (overlay and
    /// caption range).</remarks>
    public static float CumulativeSumThreshold(ReadOnlySpan<float> values, double percentile)
    {
        if (values.Length == 0) return 0;
        var a = values.ToArray();
        double total = 0;
        foreach (var v in a) total += v;
        double goal = total * 0.01 * percentile, below = 0;
        int lo = 0, hi = a.Length;   // candidates a[lo..hi); every value left of lo is smaller and summed in `below`
        float max = float.NegativeInfinity;
        foreach (var v in a) max = Math.Max(max, v);
        while (hi > lo)
        {
            float p = MedianOfThree(a[lo], a[lo + (hi - lo) / 2], a[hi - 1]);
            // Three-way partition of a[lo..hi): [lo, lt) < p, [lt, gt) == p, [gt, hi) > p.
            int lt = lo, i = lo, gt = hi;
            double less = 0;
            while (i < gt)
            {
                float v = a[i];
                if (v < p) { less += v; (a[lt], a[i]) = (a[i], a[lt]); lt++; i++; }
                else if (v > p) { gt--; (a[gt], a[i]) = (a[i], a[gt]); }
                else i++;
            }
            if (below + less >= goal) { hi = lt; continue; }
            if (below + less + (double)p * (gt - lt) >= goal) return p;
            below += less + (double)p * (gt - lt);
            lo = gt;
        }
        return max;   // the goal is never reached (rounding): the largest value, as the sorted scan's fall-through
    }

    static float MedianOfThree(float a, float b, float c) => Math.Max(Math.Min(a, b), Math.Min(Math.Max(a, b), c));

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
