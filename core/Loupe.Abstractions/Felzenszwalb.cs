using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Abstractions;

/// <summary>Felzenszwalb &amp; Huttenlocher's graph-based segments as scikit-image computes them
/// (<see cref="SkimageFelzenszwalb"/>), on tensors.</summary>
public static class Felzenszwalb
{
    /// <summary>Segment label per pixel (H×W, int64, 0..K−1) of one image C×H×W, as scikit-image 0.19's
    /// <c>felzenszwalb(image, scale, sigma, min_size)</c> with channels last (the values as given).</summary>
    public static Tensor Segment(Tensor image, double scale = 1, double sigma = 0.8, int minSize = 20)
    {
        long c = image.shape[0], h = image.shape[1], w = image.shape[2];
        var hwc = image.detach().to(ScalarType.Float64).permute(1, 2, 0).ToArray<double>();
        var labels = SkimageFelzenszwalb.Segment(hwc, (int)h, (int)w, (int)c, scale, sigma, minSize);
        return tensor(labels.Select(l => (long)l).ToArray(), [h, w]);
    }
}
