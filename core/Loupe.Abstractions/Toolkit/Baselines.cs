using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

/// <summary>What replaces removed pixels (in normalised input space, as Captum's baselines).</summary>
public enum Fill
{
    /// <summary>Zero in normalised space (the dataset mean colour; Captum's default baseline).</summary>
    Zero,
    /// <summary>The image's per-channel mean.</summary>
    Mean,
    /// <summary>A Gaussian-blurred copy of the image.</summary>
    Blur,
    /// <summary>Black pixels (0 before normalisation).</summary>
    Black,
}

/// <summary>Baseline images (the x′ of path methods, the fill of perturbation methods and of deletion/insertion
/// curves), in normalised input space.</summary>
public static class Baselines
{
    /// <summary>Description of the constant-fill options.</summary>
    public const string ConstantDescription = "a constant instead: one value or one per channel, in normalised input space (as Captum's scalar / per-channel baselines), e.g. 0.5 or [0.1, 0.2, 0.3]; overrides ";

    /// <summary>Checks a constant fill against the input's channel count.</summary>
    public static IEnumerable<string> CheckConstant(float[]? values, string option, InputSpec spec)
    {
        if (values is not null && values.Length != 1 && values.Length != spec.Channels)
            yield return $"option '{option}': give one value or one per channel ({spec.Channels}), got {values.Length}";
    }

    /// <summary>A baseline image per input of <paramref name="x"/> (N×C×H×W, normalised): <paramref name="constant"/>
    /// (one value or one per channel, see <see cref="ImageOps.ConstantBaseline"/>, named <paramref name="option"/> in
    /// errors) when given, else <paramref name="fill"/>; <paramref name="blurSigma"/> is the σ of <see cref="Fill.Blur"/>.</summary>
    public static Tensor Of(Tensor x, Fill fill, double blurSigma, InputSpec spec, float[]? constant = null, string option = "fill_value")
    {
        if (constant is not null) return ImageOps.ConstantBaseline(x, constant, option);
        using var scope = NewDisposeScope();
        var r = fill switch
        {
            Fill.Zero => zeros_like(x),
            Fill.Mean => x.mean([2, 3], keepdim: true).expand_as(x).contiguous(),
            Fill.Black => spec.Normalize(zeros_like(x)),
            _ => ImageOps.GaussianBlur(x, blurSigma),
        };
        return scope.MoveToOuter(r);
    }
}
