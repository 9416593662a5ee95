using TorchSharp;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Synthesis;

/// <summary>How the optimised image is represented.</summary>
public enum ParameterizationKind
{
    /// <summary>One parameter per pixel and channel.</summary>
    Pixels,
    /// <summary>Fourier coefficients scaled by 1/frequency (Lucid's <c>fft_image</c>, decay power 1).</summary>
    Fft,
    /// <summary>The weights of a compositional pattern-producing network of the pixel coordinates (Lucent's
    /// <c>param.cppn</c>; <see cref="Cppn"/>): the colour decorrelation and range mapping do not apply.</summary>
    Cppn,
}

/// <summary>How the unbounded parameter becomes a pixel in [0,1].</summary>
public enum RangeMapping
{
    /// <summary>I = sigmoid(t) (Lucid's default).</summary>
    Sigmoid,
    /// <summary>I = clamp(0.5 + t, 0, 1).</summary>
    Clamp,
    /// <summary>I = 0.5 + t, unbounded (for tests and closed-form checks).</summary>
    None,
}

/// <summary>The image parameterisation: parameter tensor P → spatial pre-image t (pixels: t = P; fft: t = irfft2(scale·P)/4)
/// → colour decorrelation (t ← Cᵀ-mixed channels, Lucid's ImageNet colour correlation matrix; identity for grey)
/// → range mapping (sigmoid, clamp or none) → image in [0,1] pixel space. Dispose it: its frequency scale and colour
/// matrix live outside any dispose scope.</summary>
public sealed class Parameterization : IDisposable
{
    /// <summary>Lucid's square root of the ImageNet colour correlation (from its SVD).</summary>
    public static readonly float[,] ColorCorrelationSvdSqrt =
    {
        { 0.26f, 0.09f, 0.02f },
        { 0.27f, 0.00f, -0.05f },
        { 0.27f, -0.09f, 0.03f },
    };

    /// <summary>Lucid's 1/4 scale on the Fourier image ("magic" = 4).</summary>
    public const float FftMagic = 4f;

    readonly Tensor? _scale;        // 1×1×H×(W/2+1)×1 for fft
    readonly Tensor? _colour;       // C×C mixing matrix (applied as out[c] = Σ_k M[c,k] t[k])

    /// <summary>Batch, channels, height, width.</summary>
    public long N { get; }
    /// <summary>Channels.</summary>
    public long C { get; }
    /// <summary>Height.</summary>
    public long H { get; }
    /// <summary>Width.</summary>
    public long W { get; }
    /// <summary>Kind.</summary>
    public ParameterizationKind Kind { get; }
    /// <summary>Range mapping.</summary>
    public RangeMapping Range { get; }
    /// <summary>Whether colours are decorrelated (3 channels only).</summary>
    public bool Decorrelate { get; }

    /// <summary>The network of <see cref="ParameterizationKind.Cppn"/>, else null.</summary>
    public Cppn? Network { get; }

    /// <summary>Creates a parameterisation for images N×C×H×W (<paramref name="cppn"/>: hidden channels, layers and
    /// instance norm of a CPPN, for <see cref="ParameterizationKind.Cppn"/>; Lucent's 24, 8, false by default).</summary>
    public Parameterization(ParameterizationKind kind, long n, long c, long h, long w, bool decorrelate, RangeMapping range, (int Hidden, int Layers, bool Normalize)? cppn = null)
    {
        Kind = kind; N = n; C = c; H = h; W = w; Range = range; Decorrelate = decorrelate && c == 3 && kind != ParameterizationKind.Cppn;
        if (kind == ParameterizationKind.Cppn) Network = new Cppn(cppn?.Hidden ?? 24, cppn?.Layers ?? 8, cppn?.Normalize ?? false, c);
        if (kind == ParameterizationKind.Fft)
        {
            var f = Frequencies(h, w);
            _scale = (1.0f / f.clamp_min(1.0f / Math.Max(h, w))).view(1, 1, h, -1, 1).DetachFromDisposeScope();
        }
        if (Decorrelate)
        {
            var m = tensor(ColorCorrelationSvdSqrt);
            var maxNorm = m.pow(2).sum([0]).sqrt().max();             // max column norm (Lucid: np.max(np.linalg.norm(M, axis=0)))
            _colour = (m / maxNorm).DetachFromDisposeScope();
        }
    }

    /// <summary>√(fx² + fy²) for the rfft2 layout (H × (W/2+1)), as numpy's fftfreq.</summary>
    public static Tensor Frequencies(long h, long w)
    {
        var fy = FftFreq(h).view(h, 1);
        var fx = FftFreq(w)[..(int)(w / 2 + 1)].abs().view(1, -1);
        return (fx * fx + fy * fy).sqrt();
    }

    static Tensor FftFreq(long n)
    {
        var k = arange(n, dtype: ScalarType.Float32);
        return where(k < (n + 1) / 2, k, k - n) / n;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _scale?.Dispose();
        _colour?.Dispose();
    }

    /// <summary>Shape of the parameter tensor.</summary>
    public long[] ParameterShape => Kind switch
    {
        ParameterizationKind.Pixels => [N, C, H, W],
        ParameterizationKind.Cppn => [N, Network!.Count],
        _ => [N, C, H, W / 2 + 1, 2],
    };

    /// <summary>Initial parameters: N(0, sd²) from the generator (Lucid: sd = 0.01); a CPPN's own initialisation
    /// (<see cref="Cppn.Initial"/>), whatever <paramref name="sd"/>.</summary>
    public Tensor Initial(Generator gen, double sd = 0.01) =>
        Network is { } net ? net.Initial(N, gen) : randn(ParameterShape, generator: gen) * (float)sd;

    /// <summary>Parameters → spatial pre-image t (before colour and range).</summary>
    public Tensor Spatial(Tensor p)
    {
        if (Kind == ParameterizationKind.Pixels) return p;
        var spec = p * _scale!;
        var complexSpec = complex(spec[TensorIndex.Ellipsis, 0], spec[TensorIndex.Ellipsis, 1]);
        return fft.irfft2(complexSpec, s: [H, W], norm: FFTNormType.Ortho) / FftMagic;
    }

    /// <summary>Inverse of <see cref="Spatial"/> (t → parameters); exact for pixels, and for fft up to the Hermitian symmetry of the spectrum.</summary>
    public Tensor SpatialInverse(Tensor t)
    {
        if (Kind == ParameterizationKind.Pixels) return t;
        var spec = fft.rfft2(t * FftMagic, s: [H, W], norm: FFTNormType.Ortho);
        return stack([spec.real, spec.imag], -1) / _scale!;
    }

    /// <summary>Channel mixing (decorrelated → RGB).</summary>
    public Tensor Colour(Tensor t) => _colour is null ? t : einsum("ck,nkhw->nchw", _colour, t);

    /// <summary>Inverse channel mixing.</summary>
    public Tensor ColourInverse(Tensor rgb) => _colour is null ? rgb : einsum("ck,nkhw->nchw", linalg.inv(_colour), rgb);

    /// <summary>Maps to [0,1] (or unbounded for <see cref="RangeMapping.None"/>).</summary>
    public Tensor ToRange(Tensor t) => Range switch
    {
        RangeMapping.Sigmoid => sigmoid(t),
        RangeMapping.Clamp => (t + 0.5f).clamp(0, 1),
        _ => t + 0.5f,
    };

    /// <summary>Inverse of <see cref="ToRange"/> (pixels clamped to (ε, 1−ε) for the sigmoid).</summary>
    public Tensor FromRange(Tensor img) => Range switch
    {
        RangeMapping.Sigmoid => logit(img.clamp(1e-4, 1 - 1e-4)),
        _ => img - 0.5f,
    };

    /// <summary>Parameters → image (N×C×H×W, in [0,1] unless the range is none).</summary>
    public Tensor Image(Tensor p) => Network is { } net ? net.Image(p, H, W) : ToRange(Colour(Spatial(p)));

    /// <summary>Image → parameters (inverse of <see cref="Image"/>).</summary>
    public Tensor Encode(Tensor img) => SpatialInverse(ColourInverse(FromRange(img)));

    /// <summary>Blurs the image the parameters describe by a Gaussian of σ pixels, in place on the parameters: for fft, exactly
    /// (circular blur = spectrum × exp(−2π²σ²f²)); for pixels, a reflect-padded convolution of the parameters (commutes with the
    /// colour mixing, approximates the blur through the sigmoid).</summary>
    public void Blur(Tensor p, double sigma)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        if (Kind == ParameterizationKind.Fft)
        {
            var f = Frequencies(H, W).view(1, 1, H, -1, 1);
            p.mul_(exp(-2 * Math.PI * Math.PI * sigma * sigma * f * f));
        }
        else p.copy_(Transforms.GaussianBlur(p, sigma));
    }
}
