using Loupe.Abstractions;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Evaluation;

/// <summary><c>mst-c</c> (Mesgari et al. 2026, "Structural Compactness as a Complementary Criterion for Explanation
/// Quality"; Quantus <c>MSTC</c>): how compact and cohesive a map's salient points are. The salient points are the pixels
/// with |a| at or above the map's <c>threshold</c>-th percentile (numpy's linear interpolation); spread
/// q_spread = 1/√(area of their convex hull) (the image diagonal when the hull is degenerate), cohesion
/// q_cohesion = |V| / L_T with L_T the length of the minimum spanning tree (forest, when the graph is disconnected) of
/// their symmetric k-nearest-neighbour graph (Euclidean, k = min(<c>k</c>, |V| − 1), grown until connected with
/// <c>auto_increase_k</c>); score = q_spread·q_cohesion, × diagonal × 100 with <c>scale_score</c>. An all-zero map scores
/// 0, a map with fewer than two salient points NaN. Higher is better. One channel-summed value per pixel, as Quantus
/// needs channel-aggregated maps; the score is scale-invariant, so <c>normalise</c> does not change it.</summary>
[ReadsOptions(nameof(ComplexityOptions.Threshold), nameof(ComplexityOptions.K), nameof(ComplexityOptions.AutoIncreaseK), nameof(ComplexityOptions.ScaleScore))]
public sealed class MstCompactness : ComplexityMetric
{
    /// <inheritdoc/>
    public override string Id => "mst-c";
    /// <inheritdoc/>
    public override bool HigherIsBetter => true;

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(ComplexityOptions options, AnalysisValidationContext context) =>
        options.Features == FeatureUnit.Values ? ["option 'features: values' does not apply to mst-c: it scores one channel-aggregated value per pixel (Quantus's MSTC needs such maps)"] : [];

    /// <inheritdoc/>
    protected override Tensor Of(Tensor a, ComplexityOptions o, MetricBatch b)
    {
        int h = (int)b.X.shape[2], w = (int)b.X.shape[3];
        var rows = a.to(ScalarType.Float64).cpu().contiguous().ToArray<double>();
        var scores = new double[a.shape[0]];
        for (int i = 0; i < scores.Length; i++)
            scores[i] = Score(rows.AsSpan(i * h * w, h * w), h, w, o.Threshold, o.K, o.AutoIncreaseK, o.ScaleScore);
        return tensor(scores, ScalarType.Float64);
    }

    /// <summary>MST-C of one H×W map (row-major <paramref name="map"/>).</summary>
    public static double Score(ReadOnlySpan<double> map, int h, int w, double threshold, int k, bool autoIncreaseK, bool scale)
    {
        double diagonal = Math.Sqrt((double)h * h + (double)w * w);
        var finite = new List<double>(map.Length);
        foreach (var v in map) if (double.IsFinite(v)) finite.Add(Math.Abs(v));
        if (finite.Count == 0) return double.NaN;
        if (finite.Max() == 0) return 0;
        finite.Sort();
        double cutoff = Percentile(finite, threshold);
        var ys = new List<int>(); var xs = new List<int>();
        for (int j = 0; j < map.Length; j++)
            if (double.IsFinite(map[j]) && Math.Abs(map[j]) >= cutoff) { ys.Add(j / w); xs.Add(j % w); }
        int n = ys.Count;
        if (n < 2) return double.NaN;
        double sqrtArea = diagonal;
        if (n >= 3 && HullArea(ys, xs) is var area and > 1e-12) sqrtArea = Math.Sqrt(area);
        int kNow = Math.Min(k, n - 1);
        var (length, components) = SpanningLength(ys, xs, h, w, kNow);
        while (autoIncreaseK && components != 1 && kNow < n - 1)
            (length, components) = SpanningLength(ys, xs, h, w, ++kNow);
        if (!double.IsFinite(length) || length <= 0) return double.NaN;
        double score = 1 / sqrtArea * (n / length);
        return scale ? score * diagonal * 100 : score;
    }

    /// <summary>numpy.percentile's default (linear) of sorted values.</summary>
    static double Percentile(List<double> sorted, double q)
    {
        double pos = (sorted.Count - 1) * q / 100;
        int lo = (int)Math.Floor(pos), hi = Math.Min(lo + 1, sorted.Count - 1);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
    }

    /// <summary>Area of the convex hull of the points (Andrew's monotone chain; 0 when they are collinear).</summary>
    static double HullArea(List<int> ys, List<int> xs)
    {
        var pts = Enumerable.Range(0, ys.Count).Select(i => (X: (long)xs[i], Y: (long)ys[i])).Distinct().OrderBy(p => p.X).ThenBy(p => p.Y).ToArray();
        if (pts.Length < 3) return 0;
        static long Cross((long X, long Y) o, (long X, long Y) a, (long X, long Y) b) => (a.X - o.X) * (b.Y - o.Y) - (a.Y - o.Y) * (b.X - o.X);
        var hull = new (long X, long Y)[2 * pts.Length];
        int m = 0;
        for (int i = 0; i < pts.Length; i++)
        {
            while (m >= 2 && Cross(hull[m - 2], hull[m - 1], pts[i]) <= 0) m--;
            hull[m++] = pts[i];
        }
        for (int i = pts.Length - 2, lower = m + 1; i >= 0; i--)
        {
            while (m >= lower && Cross(hull[m - 2], hull[m - 1], pts[i]) <= 0) m--;
            hull[m++] = pts[i];
        }
        long twice = 0;
        for (int i = 0; i < m - 1; i++) twice += hull[i].X * hull[i + 1].Y - hull[i + 1].X * hull[i].Y;
        return Math.Abs(twice) / 2.0;
    }

    /// <summary>Total length of the minimum spanning forest of the symmetric k-nearest-neighbour graph of the points
    /// (an edge where either end chose the other), and its number of components. Neighbours are found on the pixel grid,
    /// nearest first (ties in the points' row-major order), by offsets of growing distance; points with fewer than k
    /// others within the searched disc are completed by brute force.</summary>
    static (double Length, int Components) SpanningLength(List<int> ys, List<int> xs, int h, int w, int k)
    {
        int n = ys.Count;
        var at = new int[h * w];
        Array.Fill(at, -1);
        for (int i = 0; i < n; i++) at[ys[i] * w + xs[i]] = i;
        int radius = Math.Min(Math.Max(h, w), (int)Math.Ceiling(Math.Sqrt(8.0 * k)) + 2);
        var offsets = Offsets(radius);
        var edges = new List<(double D, int A, int B)>(n * k);
        var chosen = new List<int>(k);
        for (int i = 0; i < n; i++)
        {
            chosen.Clear();
            foreach (var (dy, dx, _) in offsets)
            {
                int y = ys[i] + dy, x = xs[i] + dx;
                if (y < 0 || y >= h || x < 0 || x >= w) continue;
                int j = at[y * w + x];
                if (j < 0) continue;
                chosen.Add(j);
                if (chosen.Count == k) break;
            }
            if (chosen.Count < k)   // far neighbours: every point, by distance then index
            {
                chosen = Enumerable.Range(0, n).Where(j => j != i)
                    .OrderBy(j => (long)(ys[j] - ys[i]) * (ys[j] - ys[i]) + (long)(xs[j] - xs[i]) * (xs[j] - xs[i])).ThenBy(j => j).Take(k).ToList();
            }
            foreach (var j in chosen)
                edges.Add((Math.Sqrt((double)(ys[j] - ys[i]) * (ys[j] - ys[i]) + (double)(xs[j] - xs[i]) * (xs[j] - xs[i])), Math.Min(i, j), Math.Max(i, j)));
        }
        // Kruskal over the union of both directions (a pair chosen twice is one edge of the same length).
        edges.Sort((a, b) => a.D.CompareTo(b.D));
        var parent = Enumerable.Range(0, n).ToArray();
        int Find(int v) { while (parent[v] != v) v = parent[v] = parent[parent[v]]; return v; }
        double total = 0;
        int components = n;
        foreach (var (d, a, b) in edges)
        {
            int ra = Find(a), rb = Find(b);
            if (ra == rb) continue;
            parent[ra] = rb;
            total += d;
            components--;
        }
        return (total, components);
    }

    /// <summary>Grid offsets within <paramref name="radius"/> other than (0, 0), by distance, then row, then column (the
    /// row-major order of the neighbours they reach).</summary>
    static (int Dy, int Dx, long D2)[] Offsets(int radius)
    {
        var list = new List<(int, int, long)>();
        for (int dy = -radius; dy <= radius; dy++)
            for (int dx = -radius; dx <= radius; dx++)
                if ((dy, dx) != (0, 0) && dy * dy + dx * dx <= radius * radius) list.Add((dy, dx, (long)dy * dy + dx * dx));
        return list.OrderBy(o => o.Item3).ThenBy(o => o.Item1).ThenBy(o => o.Item2).ToArray();
    }
}
