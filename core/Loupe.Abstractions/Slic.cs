using static TorchSharp.torch;

namespace Loupe.Abstractions;

/// <summary>SLIC superpixels with tensor ops (Achanta et al. 2012): k-means on (colour × 100, position × m/S) from a
/// regular grid of seeds, 10 iterations; every pixel is assigned to its nearest centre among all centres.</summary>
public static class Slic
{
    /// <summary>Segment label per pixel (H×W, int64, 0..K−1, relabelled densely) of one image C×H×W in [0,1].</summary>
    public static Tensor Segment(Tensor image, int segments, double compactness, int iterations = 10)
    {
        using var scope = NewDisposeScope();
        long c = image.shape[0], h = image.shape[1], w = image.shape[2];
        double step = Math.Sqrt(h * w / (double)segments);
        var ys = arange(h, dtype: ScalarType.Float32).view(-1, 1).expand(h, w);
        var xs = arange(w, dtype: ScalarType.Float32).view(1, -1).expand(h, w);
        float spatial = (float)(compactness / step);
        var features = cat([image.reshape(c, -1).t() * 100f, stack([ys.reshape(-1), xs.reshape(-1)], 1) * spatial], 1);   // HW×(C+2)
        var gy = Math.Max(1, (int)Math.Round(h / step)); var gx = Math.Max(1, (int)Math.Round(w / step));
        var cy = ((arange(gy, dtype: ScalarType.Float32) + 0.5f) * (h / (float)gy)).floor().to(ScalarType.Int64);
        var cx = ((arange(gx, dtype: ScalarType.Float32) + 0.5f) * (w / (float)gx)).floor().to(ScalarType.Int64);
        var seeds = (cy.view(-1, 1) * w + cx.view(1, -1)).reshape(-1);
        var centres = features.index_select(0, seeds);
        Tensor labels = zeros(h * w, dtype: ScalarType.Int64);
        for (int it = 0; it < iterations; it++)
        {
            labels = cdist(features, centres).argmin(1);
            var counts = zeros(centres.shape[0]).index_add_(0, labels, ones(h * w), 1);
            var sums = zeros_like(centres).index_add_(0, labels, features, 1);
            centres = where((counts > 0).unsqueeze(1), sums / counts.clamp_min(1).unsqueeze(1), centres);
        }
        var (_, dense, _) = unique(labels, return_inverse: true);
        return scope.MoveToOuter(dense!.view(h, w));
    }
}
