using Loupe.Abstractions.Toolkit;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>How a correlation metric compares its two series (Quantus's similarity_func).</summary>
public enum Similarity
{
    /// <summary>Pearson's r.</summary>
    Pearson,
    /// <summary>Spearman's ρ (average ranks for ties).</summary>
    Spearman,
    /// <summary>Kendall's τ-b.</summary>
    Kendall,
}

/// <summary>The published formulas of the Quantus-style metrics on flattened maps: <c>a</c> is N×D (one value per
/// feature), <c>s</c> an N×D bool mask, model outputs are N×T curves. Float64 throughout; NaN where a formula is
/// undefined (e.g. an empty mask), as Quantus does. Pure functions: the metric classes only gather their inputs.</summary>
public static class QualityFormulas
{
    /// <summary>Sparseness (Chalasani et al. 2020): the Gini index of a (+1e-7, Quantus), sorted ascending:
    /// Σ_k (2k − D − 1) a_(k) / (D Σ a). One-hot maps give (D − 1)/D, uniform maps 0. Higher is sparser. a is taken as
    /// given, as Quantus takes it: |·| is the metric's <c>abs</c> (its default), and a signed map gives Quantus's
    /// numbers for one (not a Gini index: the sum may be near 0).</summary>
    public static Tensor Gini(Tensor a)
    {
        using var scope = NewDisposeScope();
        long d = a.shape[1];
        var v = a.to(ScalarType.Float64) + 1e-7;
        var sorted = v.sort(1).Values;
        var k = arange(1, d + 1, dtype: ScalarType.Float64).unsqueeze(0);
        var g = ((2 * k - d - 1) * sorted).sum(1) / (d * sorted.sum(1));
        return scope.MoveToOuter(g);
    }

    /// <summary>Complexity (Bhatt et al. 2020): entropy (natural log) of the fractional contributions p = a / Σ|a|:
    /// −Σ p ln(p + 1e-12) (Quantus's guard). Lower is simpler. a is taken as given, as Quantus takes it: |·| is the
    /// metric's <c>abs</c> (its default); a signed map's negative contributions give NaN, as in Quantus.</summary>
    public static Tensor Entropy(Tensor a)
    {
        using var scope = NewDisposeScope();
        var v = a.to(ScalarType.Float64);
        var p = v / v.abs().sum(1, keepdim: true);
        return scope.MoveToOuter(-(p * (p + 1e-12).log()).sum(1));
    }

    /// <summary>Effective complexity (Nguyen &amp; Rodríguez Martínez 2020): the number of features with a &gt; eps, as
    /// Quantus counts them (a is |map| under the metric's default abs; a signed map counts its positive values only).</summary>
    public static Tensor EffectiveComplexity(Tensor a, double eps)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter((a > eps).sum(1).to(ScalarType.Float64));
    }

    /// <summary>NaN where the mask is empty.</summary>
    static Tensor NanWhereEmpty(Tensor v, Tensor s) => where(s.any(1), v, full_like(v, double.NaN));

    /// <summary>Attribution localisation (Kohlbrenner et al. 2020): Σ_{s} a⁺ / Σ a⁺ (a⁺ = max(a, 0), 1e-9 guard);
    /// weighted: × |s| / D. NaN for an empty mask.</summary>
    public static Tensor AttributionLocalisation(Tensor a, Tensor s, bool weighted, bool positiveOnly = true)
    {
        using var scope = NewDisposeScope();
        var p = positiveOnly ? a.to(ScalarType.Float64).clamp_min(0) : a.to(ScalarType.Float64);
        var sf = s.to(ScalarType.Float64);
        var r = (p * sf).sum(1) / (p.sum(1) + 1e-9);
        // A signed map can put more than all of its mass inside the mask: Quantus leaves such inputs out (NaN).
        if (!positiveOnly) r = where(r > 1, full_like(r, double.NaN), r);
        if (weighted) r = r * sf.sum(1) / a.shape[1];
        return scope.MoveToOuter(NanWhereEmpty(r, s));
    }

    /// <summary>Rank of each feature, 0 = largest value (a stable descending sort: ties keep feature order).</summary>
    static Tensor Order(Tensor a) => a.to(ScalarType.Float64).sort(1, descending: true, stable: true).Indices;

    /// <summary>Top-k intersection (Theiner et al. 2021): the fraction of the k highest-valued features inside the mask
    /// (× D/|mask| with <paramref name="conceptInfluence"/>).</summary>
    public static Tensor TopKIntersection(Tensor a, Tensor s, long k, bool conceptInfluence = false)
    {
        using var scope = NewDisposeScope();
        var top = Order(a).narrow(1, 0, k);
        var r = s.gather(1, top).to(ScalarType.Float64).mean([1]);
        // Concept influence (Quantus): the share divided by the mask's share of the image.
        if (conceptInfluence) r = r * a.shape[1] / s.to(ScalarType.Float64).sum(1);
        return scope.MoveToOuter(NanWhereEmpty(r, s));
    }

    /// <summary>Relevance rank accuracy (Arras et al. 2022): with K = |s|, the fraction of the K highest-valued features
    /// that lie in the mask.</summary>
    public static Tensor RelevanceRankAccuracy(Tensor a, Tensor s)
    {
        using var scope = NewDisposeScope();
        long d = a.shape[1];
        var k = s.sum(1, keepdim: true);                                               // N×1
        var inTop = arange(d).unsqueeze(0) < k;                                        // the first K ranks
        var hits = (s.gather(1, Order(a)) & inTop).sum(1).to(ScalarType.Float64);
        return scope.MoveToOuter(NanWhereEmpty(hits / k.squeeze(1).clamp_min(1).to(ScalarType.Float64), s));
    }

    /// <summary>Relevance mass accuracy (Arras et al. 2022): Σ_{s} a / Σ a (signed, as given).</summary>
    public static Tensor RelevanceMassAccuracy(Tensor a, Tensor s)
    {
        using var scope = NewDisposeScope();
        var v = a.to(ScalarType.Float64);
        return scope.MoveToOuter(NanWhereEmpty((v * s.to(ScalarType.Float64)).sum(1) / v.sum(1), s));
    }

    /// <summary>ROC AUC of the map as a detector of mask pixels (Fawcett 2006): the probability that a mask feature
    /// outranks a background one, ties counting ½ (Mann–Whitney with average ranks; equals sklearn's roc_curve + auc).
    /// NaN when the mask is empty or covers everything.</summary>
    public static double[] RocAuc(Tensor a, Tensor s)
    {
        long n = a.shape[0];
        var res = new double[n];
        for (int i = 0; i < n; i++)
        {
            var v = a[i].to(ScalarType.Float32).contiguous().ToArray<float>();
            var m = s[i].contiguous().ToArray<bool>();
            var ranks = Maps.Ranks(v);
            double pos = m.Count(b => b), neg = m.Length - pos, sum = 0;
            for (int j = 0; j < m.Length; j++) if (m[j]) sum += ranks[j] + 1;
            res[i] = pos == 0 || neg == 0 ? double.NaN : (sum - pos * (pos + 1) / 2) / (pos * neg);
        }
        return res;
    }

    /// <summary>Pearson correlation of two N×T tensors, row by row (NaN where a row is constant).</summary>
    public static Tensor PearsonRows(Tensor x, Tensor y)
    {
        using var scope = NewDisposeScope();
        var a = x.to(ScalarType.Float64); var b = y.to(ScalarType.Float64);
        a = a - a.mean([1], keepdim: true); b = b - b.mean([1], keepdim: true);
        var den = ((a * a).sum(1) * (b * b).sum(1)).sqrt();
        var r = (a * b).sum(1) / den;
        return scope.MoveToOuter(where(den > 0, r, full_like(r, double.NaN)));
    }

    /// <summary>The correlation <paramref name="kind"/> of two N×T tensors, row by row (NaN for a constant row).</summary>
    public static Tensor CorrelationRows(Similarity kind, Tensor x, Tensor y) => kind switch
    {
        Similarity.Spearman => SpearmanRows(x, y),
        Similarity.Kendall => KendallRows(x, y),
        _ => PearsonRows(x, y),
    };

    /// <summary>Kendall's τ-b of two N×T tensors, row by row (scipy's kendalltau default; <see cref="MapSimilarities.KendallTau"/>).</summary>
    public static Tensor KendallRows(Tensor x, Tensor y)
    {
        using var scope = NewDisposeScope();
        long n = x.shape[0], t = x.shape[1];
        var a = x.to(ScalarType.Float64).contiguous().ToArray<double>();
        var b = y.to(ScalarType.Float64).contiguous().ToArray<double>();
        var tau = new double[n];
        Parallel.For(0, (int)n, row => tau[row] = MapSimilarities.KendallTau(a.AsSpan((int)(row * t), (int)t).ToArray(), b.AsSpan((int)(row * t), (int)t).ToArray()));
        return scope.MoveToOuter(tensor(tau));
    }

    /// <summary>Spearman correlation of two N×T tensors, row by row (average ranks for ties).</summary>
    public static Tensor SpearmanRows(Tensor x, Tensor y)
    {
        using var scope = NewDisposeScope();
        Tensor Ranked(Tensor t)
        {
            long n = t.shape[0], w = t.shape[1];
            var rows = Enumerable.Range(0, (int)n).SelectMany(i => Maps.Ranks(t[i].to(ScalarType.Float64).contiguous().ToArray<double>())).ToArray();
            return tensor(rows, [n, w]);
        }
        return scope.MoveToOuter(PearsonRows(Ranked(x), Ranked(y)));
    }

    /// <summary>Area under a curve sampled at equal steps (trapezoid), divided by the number of intervals so that it
    /// lies in the curve's range (Quantus's <c>calculate_auc</c> uses dx = 1: the same value × (T − 1)).</summary>
    public static Tensor MeanTrapezoid(Tensor curves)
    {
        using var scope = NewDisposeScope();
        var c = curves.to(ScalarType.Float64);
        long t = c.shape[1];
        var area = t < 2 ? c.select(1, 0) : (c.narrow(1, 1, t - 1) + c.narrow(1, 0, t - 1)).sum(1) / (2.0 * (t - 1));
        return scope.MoveToOuter(area);
    }

    /// <summary>Area under a curve sampled at unit steps (trapezoid, dx = 1; 0 for a single point): numpy's
    /// <c>trapz(curve, dx=1)</c>, Quantus's <c>calculate_auc</c>.</summary>
    public static Tensor Trapezoid(Tensor curves)
    {
        using var scope = NewDisposeScope();
        var c = curves.to(ScalarType.Float64);
        long t = c.shape[1];
        var area = t < 2 ? zeros(c.shape[0], dtype: ScalarType.Float64) : (c.narrow(1, 1, t - 1) + c.narrow(1, 0, t - 1)).sum(1) / 2.0;
        return scope.MoveToOuter(area);
    }

    /// <summary>AOPC (Samek et al. 2017): the mean over the L + 1 points of the perturbation curve of f(x) − f(x_k)
    /// (the curve's first point is the unperturbed input).</summary>
    public static Tensor Aopc(Tensor curves)
    {
        using var scope = NewDisposeScope();
        var c = curves.to(ScalarType.Float64);
        return scope.MoveToOuter((c.narrow(1, 0, 1) - c).mean([1]));
    }

    /// <summary>Quantus's region-perturbation score (get_auc_score): the trapezoid, dx = 1, of the drops
    /// f(x) − f(x_k), k = 1..L, from curves whose first column is f(x); 0 for L ≤ 1 (numpy's trapz of one value).</summary>
    public static Tensor DropTrapezoid(Tensor curves)
    {
        using var scope = NewDisposeScope();
        var c = curves.to(ScalarType.Float64);
        return scope.MoveToOuter(Trapezoid(c.narrow(1, 0, 1) - c.narrow(1, 1, c.shape[1] - 1)));
    }

    /// <summary>Monotonicity (Arya et al. 2019): 1 when the curve never decreases, else 0.</summary>
    public static Tensor NonDecreasing(Tensor curves)
    {
        using var scope = NewDisposeScope();
        var c = curves.to(ScalarType.Float64);
        long t = c.shape[1];
        return scope.MoveToOuter((c.narrow(1, 1, t - 1) - c.narrow(1, 0, t - 1) >= 0).all(1).to(ScalarType.Float64));
    }

    /// <summary>Each value's position in its row sorted in decreasing order, ties in index order (a stable descending
    /// sort; NaN first, as torch sorts it), N×U int64 from N×U float64. On the CPU's storage, rows on libtorch's threads
    /// (one is still spinning after the pass that made the map), each by a least-significant-digit radix sort of
    /// order-preserving integer keys: stable by construction and linear (a 224×224 map: 50,176 values in ~1 ms, where
    /// Array.Sort and the fix-up of its unstable ties took ~5 ms and two large-object allocations per row).</summary>
    static Tensor Ranks(Tensor units)
    {
        using var scope = NewDisposeScope();
        int n = (int)units.shape[0], u = (int)units.shape[1];
        var values = units.to(ScalarType.Float64).cpu().contiguous();
        var result = empty([n, u], ScalarType.Int64);
        TensorThreads.For(n, i =>
        {
            var buffers = _rankBuffers ??= new RankBuffers();
            buffers.Ensure(u);
            var row = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, double>(values.bytes).Slice(i * u, u);
            var keys = buffers.Keys.AsSpan(0, u);
            var order = buffers.Order.AsSpan(0, u);
            for (int j = 0; j < u; j++) (keys[j], order[j]) = (DescendingKey(row[j]), j);
            order = RadixSort(keys, order, buffers.SpareKeys.AsSpan(0, u), buffers.SpareOrder.AsSpan(0, u));
            var rank = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(result.bytes).Slice(i * u, u);
            for (int j = 0; j < u; j++) rank[order[j]] = j;
        });
        return scope.MoveToOuter(result.to(units.device));
    }

    /// <summary>An unsigned key whose ascending order is <paramref name="value"/>'s descending order: NaN lowest (first,
    /// as torch's descending sort puts it), −0 equal to +0 (a tie, kept in index order); the sign-flip of IEEE bits
    /// makes the order of non-NaN doubles that of their keys.</summary>
    static ulong DescendingKey(double value)
    {
        if (double.IsNaN(value)) return 0;
        ulong bits = BitConverter.DoubleToUInt64Bits(value == 0 ? 0.0 : -value);
        return (bits >> 63) != 0 ? ~bits : bits | (1UL << 63);
    }

    /// <summary>Sorts <paramref name="keys"/> ascending, stably, carrying <paramref name="order"/>; eight passes of one
    /// byte each (a pass whose byte is the same in every key is skipped). Returns the span holding the sorted items
    /// (the input or the spare, whichever the last pass wrote).</summary>
    static Span<int> RadixSort(Span<ulong> keys, Span<int> order, Span<ulong> spareKeys, Span<int> spareOrder)
    {
        Span<int> start = stackalloc int[256];
        for (int shift = 0; shift < 64; shift += 8)
        {
            start.Clear();
            foreach (ulong key in keys) start[(int)(key >> shift) & 255]++;
            if (start[(int)(keys[0] >> shift) & 255] == keys.Length) continue;
            for (int b = 0, sum = 0; b < 256; b++) (start[b], sum) = (sum, sum + start[b]);
            for (int j = 0; j < keys.Length; j++)
            {
                int at = start[(int)(keys[j] >> shift) & 255]++;
                spareKeys[at] = keys[j];
                spareOrder[at] = order[j];
            }
            var k = keys;
            keys = spareKeys;
            spareKeys = k;
            var o = order;
            order = spareOrder;
            spareOrder = o;
        }
        return order;
    }

    [ThreadStatic] static RankBuffers? _rankBuffers;

    /// <summary>One thread's sort buffers, grown to the longest row seen (a 224×224 map: 1.2 MB).</summary>
    sealed class RankBuffers
    {
        public ulong[] Keys = [], SpareKeys = [];
        public int[] Order = [], SpareOrder = [];

        public void Ensure(int u)
        {
            if (Keys.Length >= u) return;
            (Keys, SpareKeys, Order, SpareOrder) = (new ulong[u], new ulong[u], new int[u], new int[u]);
        }
    }

    /// <summary>Quantus 0.5's regions for <c>region-perturbation</c> and <c>selectivity</c> (0.6 took fixed blocks,
    /// <see cref="Steps"/>): a <paramref name="patch"/> ×
    /// <paramref name="patch"/> window with its top-left corner at every pixel of the H×W map (windows that run past the
    /// bottom or right edge keep their in-image part), ranked by the sum of <paramref name="a"/> (N×D) inside it (zero
    /// past the edges), ascending with ties in pixel order; walked from the end (<paramref name="descending"/>, MoRF:
    /// Quantus's <c>argsort(sums)[::-1]</c>) or from the start (LeRF). A window is taken when it overlaps none taken
    /// before (windows compared whole, past the edges too, as Quantus's padded mask compares them), until
    /// <paramref name="limit"/> are taken. Returns each pixel's step, N×D int64: the index of its window, or
    /// <see cref="long.MaxValue"/> for pixels in no taken window (never perturbed); and each row's number of windows.</summary>
    public static Tensor SlidingSteps(Tensor a, bool descending, int patch, long h, long w, long limit, out long[] counts)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(patch, 1);
        int n = (int)a.shape[0], rows = (int)h, cols = (int)w, d = rows * cols;
        if (a.shape[1] != d) throw new ArgumentException($"a has {a.shape[1]} features per row, not {h}×{w}", nameof(a));
        var values = a.to(ScalarType.Float64).cpu().contiguous().ToArray<double>();
        var steps = new long[(long)n * d];
        var taken = new long[n];
        TensorThreads.For(n, i =>
        {
            var v = values.AsSpan(i * d, d);
            // Window sums: along rows, then the row sums down the columns (direct sums, no cancellation).
            var across = new double[d];
            var sums = new double[d];
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++)
                {
                    double t = 0;
                    for (int j = c, end = Math.Min(c + patch, cols); j < end; j++) t += v[r * cols + j];
                    across[r * cols + c] = t;
                }
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++)
                {
                    double t = 0;
                    for (int k = r, end = Math.Min(r + patch, rows); k < end; k++) t += across[k * cols + c];
                    sums[r * cols + c] = t;
                }
            // Ascending, ties in pixel order (each run of equal sums sorted by pixel after the primitive sort); NaN sums
            // (a NaN in the map) sort with +∞, at the end, where numpy puts NaN.
            var order = new int[d];
            for (int k = 0; k < d; k++)
            {
                order[k] = k;
                if (double.IsNaN(sums[k])) sums[k] = double.PositiveInfinity;
            }
            Array.Sort(sums, order);
            for (int s0 = 0, e; s0 < d; s0 = e)
            {
                for (e = s0 + 1; e < d && sums[e] == sums[s0]; e++) { }
                if (e - s0 > 1) Array.Sort(order, s0, e - s0);
            }
            var step = steps.AsSpan(i * d, d);
            step.Fill(long.MaxValue);
            var blocked = new bool[d];   // corners whose window would overlap a taken one
            long count = 0;
            for (int t = 0; t < d && count < limit; t++)
            {
                int at = descending ? order[d - 1 - t] : order[t];
                if (blocked[at]) continue;
                int r0 = at / cols, c0 = at % cols;
                for (int r = r0; r < Math.Min(r0 + patch, rows); r++)
                    step.Slice(r * cols + c0, Math.Min(c0 + patch, cols) - c0).Fill(count);
                for (int r = Math.Max(0, r0 - patch + 1); r < Math.Min(rows, r0 + patch); r++)
                    blocked.AsSpan(r * cols + Math.Max(0, c0 - patch + 1), Math.Min(cols, c0 + patch) - Math.Max(0, c0 - patch + 1)).Fill(true);
                count++;
            }
            taken[i] = count;
        });
        counts = taken;
        return tensor(steps, [n, d]);
    }

    /// <summary>The step at which each feature is perturbed, N×D int64, and the number of steps: features ordered by
    /// value (<paramref name="descending"/>: most relevant first; stable on ties), <paramref name="featuresInStep"/>
    /// consecutive ones per step (Quantus's <c>features_in_step</c>); with <paramref name="patch"/> &gt; 1 the units are
    /// Quantus 0.6's blocks instead (<c>region-perturbation</c>, <c>selectivity</c>): the H×W map is padded with zeros
    /// to multiples of the patch, split evenly between the two sides (the smaller half first, <c>get_padding_size</c>),
    /// cut into patch × patch blocks (row-major), and the blocks are ranked by their summed value, stably
    /// (<c>argsort(-sums)</c>, or <c>argsort(sums)</c> for LeRF; a block's pixels in the padding are not in the image).</summary>
    public static Tensor Steps(Tensor a, bool descending, int featuresInStep, int patch, long h, long w, out long steps)
    {
        using var scope = NewDisposeScope();
        long n = a.shape[0];
        var v = descending ? a.to(ScalarType.Float64) : -a.to(ScalarType.Float64);
        long padH = (patch - h % patch) % patch, padW = (patch - w % patch) % patch;
        long top = padH / 2, left = padW / 2, gh = (h + padH) / patch, gw = (w + padW) / patch;
        var units = patch > 1
            ? nn.functional.pad(v.view(n, 1, h, w), [left, padW - left, top, padH - top]).view(n, gh, patch, gw, patch).sum([2, 4]).view(n, gh * gw)
            : v;
        long u = units.shape[1];
        var rank = Ranks(units);
        var step = featuresInStep == 1 ? rank : rank.div(featuresInStep, rounding_mode: RoundingMode.floor);
        steps = (u + featuresInStep - 1) / featuresInStep;
        if (patch > 1)
            step = step.view(n, gh, gw).repeat_interleave(patch, 1).repeat_interleave(patch, 2).narrow(1, top, h).narrow(2, left, w).reshape(n, h * w);
        return scope.MoveToOuter(step.contiguous());
    }
}
