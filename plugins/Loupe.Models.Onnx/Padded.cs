using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>Rows of different sizes as one batch.</summary>
internal static class Padded
{
    /// <summary>The parts (each 1×…, of one rank) concatenated along dim 0 after padding every other dim with zeros at
    /// its end to the parts' largest: a detector's per-image D×4 boxes become N×max(D)×4.</summary>
    public static Tensor Cat(IReadOnlyList<Tensor> parts)
    {
        if (parts.Select(p => p.dim()).Distinct().Count() > 1)
            throw new LoupeException($"the images' outputs differ in rank ({string.Join(", ", parts.Select(p => "(" + string.Join("×", p.shape) + ")"))}); they cannot form one batch");
        int rank = (int)parts[0].dim();
        var largest = Enumerable.Range(0, rank).Select(d => parts.Max(p => p.shape[d])).ToArray();
        var rows = parts.Select(p =>
        {
            if (Enumerable.Range(1, rank - 1).All(d => p.shape[d] == largest[d])) return p;
            // nn.functional.pad takes (before, after) pairs from the last dim backwards.
            var pads = Enumerable.Range(1, rank - 1).Reverse().SelectMany(d => new[] { 0L, largest[d] - p.shape[d] }).ToArray();
            return nn.functional.pad(p, pads);
        }).ToArray();
        return cat(rows, 0);
    }
}
