using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

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

    /// <summary>A constant baseline shaped like <paramref name="x"/> (N×C×H×W): one value for every channel or one per
    /// channel, in the model's input space (normalised, as Captum's scalar and per-channel baselines). A wrong count is
    /// an error naming <paramref name="option"/>.</summary>
    public static Tensor ConstantBaseline(Tensor x, float[] values, string option)
    {
        long c = x.shape[1];
        if (values.Length != 1 && values.Length != c)
            throw new LoupeException($"option '{option}': give one value or one per channel ({c}), got {values.Length}");
        using var scope = NewDisposeScope();
        var v = values.Length == 1 ? full([1, c, 1, 1], values[0]) : tensor(values).view(1, c, 1, 1);
        return scope.MoveToOuter(v.expand_as(x).contiguous());
    }
}
