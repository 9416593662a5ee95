using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>How a metric rescales each map before scoring it (Quantus's <c>normalise</c> with its
/// <c>normalise_func</c>). <c>true</c> binds to <see cref="Default"/>, <c>false</c> to <see cref="None"/>. Loupe
/// normalises each map over all its values; Quantus over the batch it is given (the same with batch size 1).</summary>
[BooleanForms(nameof(Default), nameof(None))]
public enum Normalisation
{
    /// <summary>The map as given (Quantus <c>normalise=False</c>).</summary>
    None,
    /// <summary>The metric's Quantus <c>normalise_func</c> default (<c>normalise: true</c>): <see cref="SecondMoment"/>
    /// for relative-*-stability, <see cref="Max"/> for the others.</summary>
    Default,
    /// <summary>a / max|a| (Quantus <c>normalise_by_max</c>).</summary>
    Max,
    /// <summary>Positive values over the map's max, negative ones over |min|, into [−1, 1] (Quantus
    /// <c>normalise_by_negative</c>).</summary>
    Negative,
    /// <summary>a / √(mean a²) (Quantus <c>normalise_by_average_second_moment_estimate</c>, Binder et al. 2022).</summary>
    SecondMoment,
}

/// <summary>Which maps a normalisation rescales together (<c>normalise_over</c>).</summary>
public enum NormaliseScope
{
    /// <summary>Each map by its own max (or second moment): a score does not depend on the other inputs.</summary>
    Map,
    /// <summary>The maps of one batch of the run together, as Quantus normalises every batch it is given (one max
    /// |a| over all of them); perturbed maps over the batch's maps of the same perturbation.</summary>
    Batch,
}

/// <summary>The normalisations on flattened maps (N×F, one map per row, float64). A map that is all zeros stays as it
/// is, as Quantus leaves it.</summary>
public static class Normalisations
{
    /// <summary>The named functions, for option descriptions.</summary>
    public const string Functions = "max (normalise_by_max), negative (normalise_by_negative: positives over the max, negatives over |min|), second-moment (normalise_by_average_second_moment_estimate: over √(mean a²))";

    /// <summary>The function a metric applies: <see cref="Normalisation.Default"/> resolves to
    /// <paramref name="function"/>, the metric's Quantus <c>normalise_func</c>.</summary>
    public static Normalisation Resolve(this Normalisation given, Normalisation function = Normalisation.Max) =>
        given == Normalisation.Default ? function : given;

    /// <summary>The option as given, or the metric's Quantus <c>normalise</c> default (<paramref name="byDefault"/>),
    /// resolved against its <c>normalise_func</c> (<paramref name="function"/>).</summary>
    public static Normalisation Resolve(this Normalisation? given, bool byDefault, Normalisation function = Normalisation.Max) =>
        (given ?? (byDefault ? Normalisation.Default : Normalisation.None)).Resolve(function);

    /// <summary>Applies <paramref name="kind"/> (already resolved) to each row of <paramref name="a"/>.</summary>
    public static Tensor Rows(Tensor a, Normalisation kind) => kind switch
    {
        Normalisation.None => a,
        Normalisation.Max or Normalisation.Default => ByMax(a),
        Normalisation.Negative => ByNegative(a),
        Normalisation.SecondMoment => BySecondMoment(a),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>Applies <paramref name="kind"/> to groups of <paramref name="together"/> consecutive rows of
    /// <paramref name="a"/> (R×F, R a multiple of it), each group as one map (1: each row on its own).</summary>
    public static Tensor Rows(Tensor a, Normalisation kind, long together) =>
        together <= 1 || kind == Normalisation.None ? Rows(a, kind) : Rows(a.reshape(-1, together * a.shape[1]), kind).view_as(a);

    /// <summary>Quantus's <c>normalise_by_max</c>: a / max|a| per row.</summary>
    public static Tensor ByMax(Tensor a)
    {
        using var scope = NewDisposeScope();
        var m = a.abs().amax([1], keepdim: true);
        return scope.MoveToOuter(a / where(m > 0, m, ones_like(m)));
    }

    /// <summary>Quantus's <c>normalise_by_negative</c>: a / max where a &gt; 0, a / |min| where a &lt; 0, 0 at 0.</summary>
    public static Tensor ByNegative(Tensor a)
    {
        using var scope = NewDisposeScope();
        var max = a.amax([1], keepdim: true);
        var min = a.amin([1], keepdim: true);
        var positive = a / where(max > 0, max, ones_like(max));
        var negative = a / where(min < 0, -min, ones_like(min));
        return scope.MoveToOuter(where(a > 0, positive, where(a < 0, negative, zeros_like(a))));
    }

    /// <summary>Quantus's <c>normalise_by_average_second_moment_estimate</c>: a / √(Σa² / F) per row.</summary>
    public static Tensor BySecondMoment(Tensor a)
    {
        using var scope = NewDisposeScope();
        var root = a.square().mean([1], keepdim: true).sqrt();
        return scope.MoveToOuter(a / where(root > 0, root, ones_like(root)));
    }
}
