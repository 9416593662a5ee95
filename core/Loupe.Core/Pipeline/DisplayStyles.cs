using Loupe.Abstractions;

namespace Loupe.Core;

/// <summary><c>settings.display</c> and each step's <c>display:</c> (an <see cref="OverlayStyle"/>: colour map, outlier
/// percentage, sign, opacity), bound by the parser with the other settings.</summary>
static class DisplayStyles
{
    /// <summary>Classes recorded per input when <c>settings.top_k</c> is not given.</summary>
    public const int DefaultTopK = 5;

    /// <summary>Per step (in pipeline order): the step's style over the settings' style; null when neither is given.</summary>
    public static OverlayStyle?[] Of(PipelineSpec spec) =>
        spec.Steps.Select(s => s.Display is null ? spec.Display : s.Display.Over(spec.Display)).ToArray();
}
