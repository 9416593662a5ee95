using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Map helpers shared by the metrics.</summary>
public static class Maps
{
    /// <summary>One value per pixel, N×H×W at the input's resolution: a per-channel map (N×C×H×W) is reduced by
    /// Σ_c |·|; an N×H×W map keeps its sign. Maps at another resolution are resized bilinearly.</summary>
    public static Tensor Reduce(Tensor map, long h, long w)
    {
        using var scope = NewDisposeScope();
        var m = map.dim() switch
        {
            4 => map.abs().sum(1),
            3 => map,
            2 => map.unsqueeze(0),
            _ => throw new LoupeException($"the linked step's maps have shape ({string.Join("×", map.shape)}); expected N×H×W or N×C×H×W"),
        };
        m = m.detach().to(ScalarType.Float32);
        if (m.shape[1] != h || m.shape[2] != w)
            m = nn.functional.interpolate(m.unsqueeze(1), [h, w], mode: InterpolationMode.Bilinear, align_corners: false).squeeze(1);
        return scope.MoveToOuter(m.contiguous());
    }

    /// <summary>The probability of the selected classes (N): on a classifier's N×K output their softmax probability, or
    /// the target's own score when that is a probability already (a class target in softmax or sigmoid mode: a
    /// multi-label head's σ(z_c)); on a one-output (binary) head σ of the target's score (σ(±z), the selected side's
    /// probability). The target's score when the target is not a class or the output is not one score per class (a
    /// segmentation map: a class's logits summed over its region, as pytorch-grad-cam's metrics score such targets).
    /// </summary>
    public static Tensor Probability(IAnalysisContext ctx, Tensor input, TargetSelection selection)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (output, capture, ti, sel) = Explain.Forward(ctx.Model, ctx.Target, input, [], forGradients: false, selection);
        using (capture)
        {
            bool classifier = sel.Classes is not null && output.dim() == 2 && !sel.ScoresProbability;
            var s = !classifier ? ctx.Target.Scores(ti, sel)
                : output.shape[1] == 1 ? ctx.Target.Scores(ti, sel).sigmoid()
                : nn.functional.softmax(output, 1).gather(1, tensor(sel.Classes!, dtype: ScalarType.Int64).unsqueeze(1)).squeeze(1);
            return scope.MoveToOuter(s.detach());
        }
    }

    /// <summary>The top-1 class of each row of a classifier's output (N×K). Any other output (a segmentation map,
    /// detections) has no one predicted class to compare: a clear error naming the metric, and what to set instead
    /// (<paramref name="instead"/>) where the metric can do without.</summary>
    public static Tensor TopClass(Tensor output, string metric, string? instead = null) =>
        output.dim() == 2 ? output.argmax(1) : throw new LoupeException($"{metric}: {NoPredictedClass(output.shape, instead)}");

    /// <summary>Why a model whose output (one input's shape, <paramref name="shape"/>, batch first) is not N×K has no
    /// predicted class, and <paramref name="instead"/> where there is something to set (null or empty: nothing).</summary>
    public static string NoPredictedClass(long[] shape, string? instead) =>
        $"the model's output is N×{string.Join("×", shape.Skip(1))}, not one score per class (N×K), so the predicted class this metric compares is not defined{(string.IsNullOrEmpty(instead) ? "" : $"; {instead}")}";

    /// <summary>Object masks from display pixels in [0,1] (N×C×H×W): pixel (max over channels) &gt; threshold. N×H×W bool.</summary>
    public static Tensor ObjectMask(Tensor pixels, double threshold)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(pixels.amax([1]) > threshold);
    }

    /// <summary>Average ranks (ties share their mean rank), for Spearman's ρ. Finite values are sorted as one array of
    /// 64-bit words (the value's order-preserving bits above its index; −0 as +0), ~2× faster than sorting values with
    /// their indices beside (a 224×224 map per randomised layer in sanity-randomisation and MPRT).</summary>
    public static double[] Ranks(float[] v)
    {
        if (!v.All(float.IsFinite)) return Ranks(Array.ConvertAll(v, x => (double)x));
        var keys = new ulong[v.Length];
        for (int i = 0; i < v.Length; i++)
        {
            uint bits = BitConverter.SingleToUInt32Bits(v[i] == 0 ? 0f : v[i]);
            bits = (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;   // ascending as unsigned integers
            keys[i] = (ulong)bits << 32 | (uint)i;
        }
        Array.Sort(keys);
        var r = new double[v.Length];
        for (int i = 0; i < keys.Length;)
        {
            int j = i;
            while (j + 1 < keys.Length && keys[j + 1] >> 32 == keys[i] >> 32) j++;
            double avg = (i + j) / 2.0;
            for (int k = i; k <= j; k++) r[(int)(uint)keys[k]] = avg;
            i = j + 1;
        }
        return r;
    }

    /// <summary>Average ranks (ties share their mean rank) of float64 values.</summary>
    public static double[] Ranks(double[] v)
    {
        var idx = Enumerable.Range(0, v.Length).ToArray();
        Array.Sort(v.ToArray(), idx);
        var r = new double[v.Length];
        for (int i = 0; i < idx.Length;)
        {
            int j = i;
            while (j + 1 < idx.Length && v[idx[j + 1]] == v[idx[i]]) j++;
            double avg = (i + j) / 2.0;
            for (int k = i; k <= j; k++) r[idx[k]] = avg;
            i = j + 1;
        }
        return r;
    }

    /// <summary>Pearson correlation (NaN when one side is constant).</summary>
    public static double Pearson(double[] a, double[] b)
    {
        double ma = a.Average(), mb = b.Average(), sab = 0, saa = 0, sbb = 0;
        for (int i = 0; i < a.Length; i++) { sab += (a[i] - ma) * (b[i] - mb); saa += (a[i] - ma) * (a[i] - ma); sbb += (b[i] - mb) * (b[i] - mb); }
        return saa <= 0 || sbb <= 0 ? double.NaN : sab / Math.Sqrt(saa * sbb);
    }

    /// <summary>Spearman's rank correlation with average ranks for ties.
    /// A constant map shares no rank information with a varying one: ρ = 0 (e.g. Grad-CAM maps that become all zero
    /// under randomisation); two constant maps: ρ = 1 — or, with <paramref name="constantIsNaN"/>, NaN for either, as
    /// scipy's <c>spearmanr</c> (and so Quantus) gives. NaN when a map has non-finite values.</summary>
    public static double Spearman(float[] a, float[] b, bool constantIsNaN = false) => Spearman(a, null, b, constantIsNaN);

    /// <summary><see cref="Spearman(float[], float[], bool)"/> with <paramref name="a"/>'s ranks given when known (a
    /// reference map compared with many).</summary>
    public static double Spearman(float[] a, double[]? ranksOfA, float[] b, bool constantIsNaN = false)
    {
        if (a.Any(v => !float.IsFinite(v)) || b.Any(v => !float.IsFinite(v))) return double.NaN;
        bool ca = a.All(v => v == a[0]), cb = b.All(v => v == b[0]);
        if (ca || cb) return constantIsNaN ? double.NaN : ca && cb ? 1 : 0;
        return Pearson(ranksOfA ?? Ranks(a), Ranks(b));
    }

    /// <summary>Mean SSIM of two H×W maps, each min-max normalised to [0,1] (data range 1), 7×7 uniform window,
    /// K1 = 0.01, K2 = 0.03, population (co)variances, valid windows only (skimage's defaults except the sample covariance).</summary>
    public static double Ssim(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        Tensor Norm(Tensor t) { var mn = t.min(); var mx = t.max(); var d = (mx - mn).clamp_min(1e-12f); return ((t - mn) / d).view(1, 1, t.shape[0], t.shape[1]); }
        var x = Norm(a.to(ScalarType.Float64)); var y = Norm(b.to(ScalarType.Float64));
        long win = Math.Min(7, Math.Min(a.shape[0], a.shape[1]));
        // The five window means in one separable pass (a column of win, then a row of win: 2·win additions a pixel,
        // not win², as scipy's uniform_filter, which skimage's SSIM uses, filters too).
        var pooled = nn.functional.avg_pool2d(nn.functional.avg_pool2d(cat([x, y, x * x, y * y, x * y], 1), [win, 1], [1, 1]), [1, win], [1, 1]);
        var mx_ = pooled.narrow(1, 0, 1); var my = pooled.narrow(1, 1, 1);
        var vx = pooled.narrow(1, 2, 1) - mx_ * mx_; var vy = pooled.narrow(1, 3, 1) - my * my; var cxy = pooled.narrow(1, 4, 1) - mx_ * my;
        const double c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;
        var s = (2 * mx_ * my + c1) * (2 * cxy + c2) / ((mx_ * mx_ + my * my + c1) * (vx + vy + c2));
        return s.mean().item<double>();
    }
}
