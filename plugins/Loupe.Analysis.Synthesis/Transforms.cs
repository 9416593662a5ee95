using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Analysis.Synthesis;

/// <summary>Image transforms applied to the batch before the model at each step (Lucid's transformation robustness).
/// All are tensor ops and differentiable; randomness comes from the caller's generator.</summary>
public static class Transforms
{
    /// <summary>Shifts by (dy, dx) pixels with wrap-around (torch.roll): out[y, x] = in[y − dy, x − dx].</summary>
    public static Tensor Jitter(Tensor x, long dy, long dx) => dy == 0 && dx == 0 ? x : x.roll([dy, dx], [2, 3]);

    /// <summary>Pads each side by <paramref name="pad"/> pixels with a constant (Lucid: 0.5) or by reflection.</summary>
    public static Tensor Pad(Tensor x, int pad, double? value)
    {
        if (pad <= 0) return x;
        return value is double v
            ? nn.functional.pad(x, [pad, pad, pad, pad], PaddingModes.Constant, v)
            : nn.functional.pad(x, [pad, pad, pad, pad], PaddingModes.Reflect);
    }

    /// <summary>Zooms by <paramref name="scale"/> about the centre (output the same size; &gt; 1 magnifies) and rotates by
    /// <paramref name="degrees"/> (counter-clockwise in image coordinates), bilinear, borders filled by replication.
    /// affine_grid/grid_sample with align_corners = false, so the identity reproduces the input exactly.</summary>
    public static Tensor Affine(Tensor x, double scale, double degrees)
    {
        if (scale == 1 && degrees % 360 == 0) return x;
        double r = degrees * Math.PI / 180, c = Math.Cos(r) / scale, s = Math.Sin(r) / scale;
        long n = x.shape[0];
        var theta = tensor(new float[] { (float)c, (float)-s, 0, (float)s, (float)c, 0 }).view(1, 2, 3).expand(n, 2, 3).to(x.dtype);
        var grid = nn.functional.affine_grid(theta, [n, x.shape[1], x.shape[2], x.shape[3]], align_corners: false);
        return nn.functional.grid_sample(x, grid, GridSampleMode.Bilinear, GridSamplePaddingMode.Border, align_corners: false);
    }

    /// <summary>Gaussian blur (separable, radius ⌈3σ⌉, reflect padding) of N×C×H×W.</summary>
    public static Tensor GaussianBlur(Tensor x, double sigma)
    {
        if (sigma <= 0) return x;
        int r = Math.Max(1, (int)Math.Ceiling(3 * sigma));
        r = (int)Math.Min(r, Math.Min(x.shape[2], x.shape[3]) - 1);
        if (r < 1) return x;
        var k = Enumerable.Range(-r, 2 * r + 1).Select(i => (float)Math.Exp(-i * i / (2 * sigma * sigma))).ToArray();
        float sum = k.Sum();
        var kt = tensor(k.Select(v => v / sum).ToArray()).to(x.dtype);
        long c = x.shape[1];
        var kx = kt.view(1, 1, 1, -1).expand(c, 1, 1, 2 * r + 1).contiguous();
        var ky = kt.view(1, 1, -1, 1).expand(c, 1, 2 * r + 1, 1).contiguous();
        var p = nn.functional.pad(x, [r, r, r, r], PaddingModes.Reflect);
        var h = nn.functional.conv2d(p, kx, groups: c);
        return nn.functional.conv2d(h, ky, groups: c);
    }

    /// <summary>Lucent's <c>jitter(d)</c>: the (H − d) × (W − d) crop at a random offset in [0, d) per axis (drawn row
    /// offset first); the image shrinks by d.</summary>
    public static Tensor Crop(Tensor x, int d, Generator gen)
    {
        if (d <= 0) return x;
        long dy = UniformInt(gen, 0, d - 1), dx = UniformInt(gen, 0, d - 1);
        long h = Math.Max(1, x.shape[2] - d), w = Math.Max(1, x.shape[3] - d);
        return x.narrow(2, Math.Min(dy, x.shape[2] - h), h).narrow(3, Math.Min(dx, x.shape[3] - w), w);
    }

    /// <summary>Lucent's <c>random_scale</c> for one factor: bilinear resize (align_corners = true) to ⌈s·H⌉ × ⌈s·W⌉,
    /// then, when that is smaller, zero padding of ⌈(H − ⌈s·H⌉)/2⌉ on both sides of each axis (as Lucent pads).</summary>
    public static Tensor ScaleResize(Tensor x, double scale)
    {
        if (scale == 1) return x;
        long h = x.shape[2], w = x.shape[3], sh = (long)Math.Ceiling(scale * h), sw = (long)Math.Ceiling(scale * w);
        var up = nn.functional.interpolate(x, [sh, sw], mode: InterpolationMode.Bilinear, align_corners: true);
        long py = Math.Max(0, (long)Math.Ceiling((h - sh) / 2.0)), px = Math.Max(0, (long)Math.Ceiling((w - sw) / 2.0));
        return px == 0 && py == 0 ? up : nn.functional.pad(up, [px, px, py, py], PaddingModes.Constant, 0);
    }

    /// <summary>Rotation by <paramref name="degrees"/> counter-clockwise about the centre, bilinear, zeros outside,
    /// align_corners = true, the rotation taken in pixel space (kornia's <c>rotate</c>, which Lucent's
    /// <c>random_rotate</c> calls).</summary>
    public static Tensor RotateZeros(Tensor x, double degrees)
    {
        if (degrees % 360 == 0) return x;
        double r = degrees * Math.PI / 180, c = Math.Cos(r), s = Math.Sin(r);
        long n = x.shape[0], h = x.shape[2], w = x.shape[3];
        // The source of each output pixel, in coordinates normalised per axis: N·R·N⁻¹ with N = diag(2/(W−1), 2/(H−1)).
        double ay = h > 1 && w > 1 ? (h - 1.0) / (w - 1.0) : 1;
        var theta = tensor(new float[] { (float)c, (float)(-s * ay), 0, (float)(s / ay), (float)c, 0 }).view(1, 2, 3).expand(n, 2, 3).to(x.dtype);
        var grid = nn.functional.affine_grid(theta, [n, x.shape[1], h, w], align_corners: true);
        return nn.functional.grid_sample(x, grid, GridSampleMode.Bilinear, GridSamplePaddingMode.Zeros, align_corners: true);
    }

    /// <summary>Uniform integer in [lo, hi] from the generator.</summary>
    public static long UniformInt(Generator gen, long lo, long hi) => hi <= lo ? lo : randint(lo, hi + 1, [1], generator: gen).item<long>();

    /// <summary>A uniformly chosen element.</summary>
    public static double Choose(Generator gen, double[] values) => values.Length == 0 ? 0 : values[UniformInt(gen, 0, values.Length - 1)];
}
