using static TorchSharp.torch;

namespace Loupe.Analysis.Synthesis;

/// <summary>A compositional pattern-producing network per image (Lucent's <c>param.cppn</c>, after Lucid's CPPN
/// notebook; Mordvintsev et al. 2018, "Differentiable Image Parameterizations"): the image is a function of the pixel
/// coordinates, x = linspace(−√3, √3, H) down the rows and y = linspace(−√3, √3, W) along the columns, through
/// <see cref="Layers"/> 1×1 convolutions (2 → hidden, then 2·hidden → hidden, the last 2·hidden → C), each followed by
/// the composite activation [atan(z)/0.67, atan(z)²/0.6] (which doubles the channels) and the last by a sigmoid; with
/// <see cref="Normalize"/>, an instance norm (no affine, ε = 1e-5, biased variance) after every convolution. The
/// parameters of N images are one N × <see cref="Count"/> tensor, image by image: for each layer its weight (out × in,
/// row-major), then its bias (out). Lucent's initialisation: weights N(0, 1/in), biases 0, the last layer's weights 0
/// (every image starts grey, 0.5).</summary>
public sealed class Cppn
{
    /// <summary>Hidden channels.</summary>
    public int Hidden { get; }
    /// <summary>Convolutions.</summary>
    public int Layers { get; }
    /// <summary>Instance norm after every convolution.</summary>
    public bool Normalize { get; }
    /// <summary>Output channels.</summary>
    public long Channels { get; }
    /// <summary>Parameters per image.</summary>
    public long Count { get; }

    readonly (long Out, long In)[] _shapes;

    /// <summary>A CPPN of <paramref name="layers"/> convolutions (at least 2) with <paramref name="hidden"/> channels,
    /// producing <paramref name="channels"/>-channel images.</summary>
    public Cppn(int hidden, int layers, bool normalize, long channels)
    {
        Hidden = hidden; Layers = layers; Normalize = normalize; Channels = channels;
        _shapes = Enumerable.Range(0, layers).Select(l => ((long)(l == layers - 1 ? channels : hidden), l == 0 ? 2L : 2L * hidden)).ToArray();
        Count = _shapes.Sum(s => s.Out * s.In + s.Out);
    }

    /// <summary>Lucent's initialisation of <paramref name="n"/> images' parameters (N × <see cref="Count"/>), drawn from
    /// <paramref name="gen"/> image by image, layer by layer.</summary>
    public Tensor Initial(long n, Generator gen)
    {
        using var scope = NewDisposeScope();
        var rows = new List<Tensor>();
        for (long i = 0; i < n; i++)
        {
            var parts = new List<Tensor>();
            for (int l = 0; l < Layers; l++)
            {
                var (o, k) = _shapes[l];
                parts.Add(l == Layers - 1 ? zeros(o * k) : randn([o * k], generator: gen) * (float)Math.Sqrt(1.0 / k));
                parts.Add(zeros(o));
            }
            rows.Add(cat(parts, 0));
        }
        return scope.MoveToOuter(stack(rows, 0));
    }

    /// <summary>The images (N × C × H × W, in (0, 1)) of the parameters <paramref name="p"/> (N × <see cref="Count"/>).</summary>
    public Tensor Image(Tensor p, long h, long w)
    {
        using var scope = NewDisposeScope();
        long n = p.shape[0], at = 0;
        float r = (float)Math.Sqrt(3);
        var rows = linspace(-r, r, h).view(h, 1).expand(h, w);
        var cols = linspace(-r, r, w).view(1, w).expand(h, w);
        var x = stack([rows, cols], 0).unsqueeze(0).expand(n, 2, h, w);
        for (int l = 0; l < Layers; l++)
        {
            var (o, k) = _shapes[l];
            var weight = p.narrow(1, at, o * k).view(n, o, k); at += o * k;
            var bias = p.narrow(1, at, o).view(n, o, 1, 1); at += o;
            x = einsum("noi,nihw->nohw", weight, x) + bias;
            if (Normalize)
            {
                var mean = x.mean([2, 3], keepdim: true);
                var variance = (x - mean).pow(2).mean([2, 3], keepdim: true);
                x = (x - mean) / (variance + 1e-5f).sqrt();
            }
            if (l < Layers - 1)
            {
                var a = atan(x);
                x = cat([a / 0.67f, a * a / 0.6f], 1);
            }
        }
        return scope.MoveToOuter(sigmoid(x));
    }
}
