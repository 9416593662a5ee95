using System.ComponentModel;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>The baseline of one side input (Captum's per-input baselines): a constant or a .npy of the input's shape.</summary>
public sealed record SideBaseline
{
    /// <summary>Side input name.</summary>
    [Description("the side input's name (a model input other than the image)")]
    public string Input { get; init; } = "";
    /// <summary>Constant baseline.</summary>
    [Description("a constant baseline for every element of the side input")]
    public float? Value { get; init; }
    /// <summary>Baseline file.</summary>
    [FilePath, Description("a .npy baseline of the side input's shape (or 1×shape)")]
    public string? File { get; init; }

    /// <summary>Largest baseline file read (elements).</summary>
    public const long MaxElements = 1L << 24;

    /// <summary>Validation errors: unknown inputs (with a did-you-mean), both or neither of value/file, duplicates,
    /// files that are not the input's shape.</summary>
    public static IEnumerable<string> Check(SideBaseline[]? baselines, IModel model)
    {
        if (baselines is not { Length: > 0 }) yield break;
        var names = SideInputs.Names(model);
        if (names.Count == 0)
        {
            yield return "option 'side_baselines': the model has no side inputs";
            yield break;
        }
        foreach (var b in baselines)
        {
            if (!names.Contains(b.Input))
                yield return $"option 'side_baselines': '{b.Input}' is not a side input of the model{Suggest.DidYouMean(b.Input, names)}; side inputs: {string.Join(", ", names)}";
            else if ((b.Value is null) == (b.File is null))
                yield return $"option 'side_baselines': input '{b.Input}': give exactly one of 'value' or 'file'";
            else if (b.File is { } f)
            {
                string? error = null;
                try { using var _ = Load(f, Shape(model, b.Input)); }
                catch (LoupeException e) { error = e.Message; }
                if (error is not null) yield return $"option 'side_baselines': input '{b.Input}': {error}";
            }
        }
        foreach (var g in baselines.GroupBy(b => b.Input).Where(g => g.Count() > 1))
            yield return $"option 'side_baselines': input '{g.Key}' is listed {g.Count()} times";
    }

    /// <summary>The baseline of side input <paramref name="name"/> for the rows of <paramref name="values"/> (N×shape):
    /// the listed constant or file, else zeros.</summary>
    public static Tensor Of(SideBaseline[]? baselines, string name, Tensor values)
    {
        var b = baselines?.FirstOrDefault(x => x.Input == name);
        if (b?.Value is { } v) return full_like(values, v);
        if (b?.File is { } f)
        {
            using var t = Load(f, values.shape.Skip(1).ToArray());
            return t.to(values.device).expand_as(values).contiguous();
        }
        return zeros_like(values);
    }

    static long[] Shape(IModel model, string name) =>
        SideInputs.Of(model)!.Inputs.First(i => i.Name == name).Shape;

    /// <summary>A 1×shape tensor from a .npy of <paramref name="shape"/> or 1×shape (size-capped, regular files only).</summary>
    static Tensor Load(string file, long[] shape)
    {
        SafeFile.RequireRegular(file, file);
        var a = Npy.Read(file, MaxElements);
        var s = a.Shape.Length == shape.Length + 1 && a.Shape[0] == 1 ? a.Shape.Skip(1).ToArray() : a.Shape;
        if (!s.SequenceEqual(shape))
            throw new LoupeException($"{file}: baseline shape ({string.Join("×", a.Shape)}) is not the side input's shape ({string.Join("×", shape)})");
        return tensor(a.Data, [1, .. shape]);
    }
}
