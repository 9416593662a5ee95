using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Cam;

/// <summary>pytorch-grad-cam's <c>ratio_channels_to_ablate</c> for Ablation-CAM (its AblationLayer's experimental
/// channel choice and AblationCAM's score assembly), written from the library's documented behaviour.</summary>
public static class AblationChannels
{
    /// <summary>The channels of one image's layer activation <paramref name="a"/> (K×h×w) to ablate, in ablation order:
    /// Eigen-CAM's projection of the centred positions × channels matrix on its first right singular vector, |·|, scaled
    /// to [0, 1] (a constant projection leaves no position in the mask, as NaN &gt; 0.01 is false) and thresholded at 0.01
    /// gives a mask; each channel scores Σ mask·ã / Σ ã with ã = |a_k| − min |a_k| divided by its max (NaN for a
    /// constant channel, which sorts above every number); with q = ⌊K·ratio⌋, the q highest-scoring channels from the
    /// highest down, then the q lowest from the lowest up (ties in the stable order of the channels).</summary>
    public static long[] Select(Tensor a, double ratio)
    {
        using var scope = NewDisposeScope();
        long k = a.shape[0];
        var act = a.detach().to(ScalarType.Float32).reshape(k, -1).cpu();
        act = where(act.isnan(), zeros_like(act), act);                          // get_2d_projection zeroes NaNs
        var positions = act.t().to(ScalarType.Float64);                         // hw×K
        var centred = positions - positions.mean([0], keepdim: true);
        var (_, _, vh) = linalg.svd(centred, fullMatrices: false);
        var projection = centred.MatMul(vh[0].unsqueeze(1)).squeeze(1).abs();  // hw
        projection = (projection - projection.min()) / (projection.max() - projection.min());
        var mask = (projection > 0.01).to(ScalarType.Float32);                  // NaN (constant projection) > 0.01: false
        var magnitude = act.abs();
        var shifted = magnitude - magnitude.amin([1], keepdim: true);
        var normalised = shifted / shifted.amax([1], keepdim: true);           // 0/0 = NaN for a constant channel
        var score = ((normalised * mask).sum([1]) / normalised.sum([1])).ToArray<float>();
        // numpy's argsort: ascending, NaN after every number.
        var ascending = Enumerable.Range(0, (int)k).OrderBy(j => float.IsNaN(score[j]) ? 1 : 0).ThenBy(j => float.IsNaN(score[j]) ? 0f : score[j]).ToArray();
        int q = (int)Math.Floor(k * ratio);
        return ascending.Reverse().Take(q).Concat(ascending.Take(q)).Select(j => (long)j).ToArray();
    }

    /// <summary>The target score with each of the <paramref name="channels"/> channels ablated, from the scores of the
    /// ablated copies (<paramref name="scores"/>[t]: channel <paramref name="order"/>[t] ablated); a channel not ablated
    /// keeps <paramref name="baseScore"/> (weight 0). A channel ablated twice takes its first score; with
    /// <paramref name="pytorchGradCam"/>, as that library's AblationCAM assembles them (the entries sorted by channel and
    /// walked once per channel, the walk stopping at the second entry of a channel ablated twice), every later channel
    /// keeps the base score.</summary>
    public static double[] Assemble(long[] order, double[] scores, double baseScore, int channels, bool pytorchGradCam)
    {
        var result = Enumerable.Repeat(baseScore, channels).ToArray();
        if (!pytorchGradCam)
        {
            for (int t = order.Length - 1; t >= 0; t--) result[order[t]] = scores[t];   // the first entry of a channel wins
            return result;
        }
        var sorted = Enumerable.Range(0, order.Length).OrderBy(t => order[t]).ToArray();   // stable: the first entry first
        int index = 0;
        for (int ch = 0; ch < channels; ch++)
            if (index < sorted.Length && order[sorted[index]] == ch) result[ch] = scores[sorted[index++]];
        return result;
    }
}
