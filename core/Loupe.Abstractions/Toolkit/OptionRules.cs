using System.Collections;
using System.Reflection;

namespace Loupe.Abstractions.Toolkit;

/// <summary>Checks for options that only mean something together with another option's value (<c>blur_sigma</c> with
/// <c>baseline: blur</c>): a plugin's <c>Validate</c> refuses them when they are set without it, instead of ignoring
/// them. "Set" is "differs from its value in a new options record", so a record written out whole (the library
/// serialises typed options with every default) passes.</summary>
public static class OptionRules
{
    /// <summary>The YAML key of a property (snake_case: <c>BlurSigma</c> → <c>blur_sigma</c>).</summary>
    public static string YamlName(string property) =>
        string.Concat(property.Select((c, i) => i > 0 && char.IsUpper(c) ? "_" + char.ToLowerInvariant(c) : char.ToLowerInvariant(c).ToString()));

    /// <summary>Whether <paramref name="options"/>' property <paramref name="property"/> differs from its value in a
    /// new record of the same type (lists compared item by item).</summary>
    public static bool IsSet(object options, string property)
    {
        var type = options.GetType();
        var p = type.GetProperty(property, BindingFlags.Public | BindingFlags.Instance)
            ?? throw new ArgumentException($"{type.Name} has no option {property}", nameof(property));
        return !StructuralComparisons.StructuralEqualityComparer.Equals(p.GetValue(options), p.GetValue(Activator.CreateInstance(type)));
    }

    /// <summary>"option 'x' applies to <paramref name="when"/>" for each of <paramref name="properties"/> that is set
    /// while <paramref name="applies"/> is false (e.g. <c>OnlyWith(o, o.Baseline == Fill.Blur, "baseline: blur",
    /// nameof(o.BlurSigma))</c>).</summary>
    public static IEnumerable<string> OnlyWith(object options, bool applies, string when, params string[] properties) =>
        applies ? [] : properties.Where(p => IsSet(options, p)).Select(p => $"option '{YamlName(p)}' applies to {when}");
}
