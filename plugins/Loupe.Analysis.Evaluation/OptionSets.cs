using Loupe.Abstractions;

namespace Loupe.Analysis.Evaluation;

// Named sets of the options a metric family reads (ReadsOptionsAttribute): the host refuses the others, and
// `loupe describe` lists only these.

/// <summary>What every metric of a shared record reads: <c>of</c>, <c>expect</c> and, where maps are rescaled,
/// <c>normalise_over</c>.</summary>
sealed class ReadsMetricAttribute() : ReadsOptionsAttribute(nameof(MetricOptions.Of), nameof(MetricOptions.Expect));

/// <summary>The scope of <c>normalise</c> (<see cref="NormalisedMetricOptions.NormaliseOver"/>).</summary>
sealed class ReadsNormaliseOverAttribute() : ReadsOptionsAttribute(nameof(NormalisedMetricOptions.NormaliseOver));

/// <summary>What replaces a perturbed feature (<c>baseline</c> and its constant, baseline images, the uniform and
/// noise fills' parameters).</summary>
sealed class ReadsBaselineAttribute() : ReadsOptionsAttribute(nameof(PerturbOptions.Baseline), nameof(PerturbOptions.BaselineImages),
    nameof(PerturbOptions.UniformLow), nameof(PerturbOptions.UniformHigh), nameof(PerturbOptions.PerturbMean), nameof(PerturbOptions.PerturbStd),
    nameof(PerturbOptions.LowerBound), nameof(PerturbOptions.UpperBound));
