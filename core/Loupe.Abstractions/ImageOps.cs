using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Abstractions;

/// <summary>Image operations several techniques share (baselines, perturbations, metrics).</summary>
public static class ImageOps
{
    /// <summary>Separable Gaussian blur of N×C×H×W (σ ≥ 0.5, radius ⌈3σ⌉; reflect padding, replicate when the image is
    /// smaller than the kernel).</summary>
    public static Tensor GaussianBlur(Tensor x, double sigma)
    {
        using var scope = NewDisposeScope();
        sigma = Math.Max(0.5, sigma);
        int radius = (int)Math.Ceiling(3 * sigma);
        var k1 = arange(-radius, radius + 1, dtype: ScalarType.Float32);
        k1 = exp(-(k1 * k1) / (float)(2 * sigma * sigma));
        k1 = k1 / k1.sum();
        long c = x.shape[1];
        var kh = k1.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous();
        var kw = k1.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous();
        var mode = radius < x.shape[2] && radius < x.shape[3] ? PaddingModes.Reflect : PaddingModes.Replicate;
        var padded = nn.functional.pad(x, [radius, radius, radius, radius], mode);
        return scope.MoveToOuter(nn.functional.conv2d(nn.functional.conv2d(padded, kh, groups: c), kw, groups: c));
    }
}
