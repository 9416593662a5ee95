using Loupe.Abstractions;
using YamlDotNet.RepresentationModel;

namespace Loupe.Core;

/// <summary>Binds <c>settings.display</c> and each step's <c>display:</c> (an <see cref="OverlayStyle"/>: colour map,
/// outlier percentage, sign, opacity) with the same checks and messages as any options.</summary>
static class DisplayStyles
{
    /// <summary>Classes recorded per input when <c>settings.top_k</c> is not given.</summary>
    public const int DefaultTopK = 5;

    /// <summary>Per step (in pipeline order): the step's style over the settings' style; null when neither is given.</summary>
    public static OverlayStyle?[] Bind(PipelineSpec spec, List<PipelineError> errors)
    {
        var root = spec.Root;
        OverlayStyle? settings = null;
        if (PipelineParser.Child(root, "settings") is YamlMappingNode s && PipelineParser.Child(s, "display") is { } sd)
            settings = One(sd, "settings.display");
        var result = new OverlayStyle?[spec.Steps.Count];
        var steps = (PipelineParser.Child(root, "steps") as YamlSequenceNode)?.Children.OfType<YamlMappingNode>().ToList() ?? [];
        for (int i = 0; i < result.Length; i++)
        {
            var own = i < steps.Count && PipelineParser.Child(steps[i], "display") is { } d ? One(d, $"step '{spec.Steps[i].Id}' display") : null;
            result[i] = own is null ? settings : own.Over(settings);
        }
        return result;

        OverlayStyle One(YamlNode node, string where) =>
            (OverlayStyle)OptionsBinder.Bind(typeof(OverlayStyle), node, spec.File, where, spec.BaseDirectory, errors, node.Start).Value;
    }

    /// <summary><c>settings.top_k</c>: classes recorded per input (0: none; default <see cref="DefaultTopK"/>).</summary>
    public static int TopK(PipelineSpec spec, List<PipelineError> errors)
    {
        if (PipelineParser.Child(spec.Root, "settings") is not YamlMappingNode s || PipelineParser.Child(s, "top_k") is not { } node) return DefaultTopK;
        if (node is YamlScalarNode { Value: { } v } && int.TryParse(v, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var k) && k >= 0) return k;
        errors.Add(PipelineParser.At(spec.File, node, $"settings.top_k must be a whole number ≥ 0 (0: no predictions), got '{(node as YamlScalarNode)?.Value ?? node.ToString()}'"));
        return DefaultTopK;
    }
}
