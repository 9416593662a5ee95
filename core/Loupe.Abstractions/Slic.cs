using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Abstractions;

/// <summary>SLIC superpixels (Achanta et al. 2012) as scikit-image computes them (<see cref="SkimageSlic"/>), on
/// tensors.</summary>
public static class Slic
{
    /// <summary>Segment label per pixel (H×W, int64, 0..K−1) of one image C×H×W, as scikit-image 0.19's
    /// <c>slic(image, n_segments, compactness, start_label=0)</c> with channels last (three channels are taken as sRGB
    /// and compared in Lab; any value range: the image is rescaled by its global minimum and maximum first).</summary>
    public static Tensor Segment(Tensor image, int segments, double compactness)
    {
        long c = image.shape[0], h = image.shape[1], w = image.shape[2];
        var hwc = image.detach().to(ScalarType.Float64).permute(1, 2, 0).ToArray<double>();
        var labels = SkimageSlic.Segment(hwc, (int)h, (int)w, (int)c, segments, compactness);
        return tensor(labels.Select(l => (long)l).ToArray(), [h, w]);
    }
}
