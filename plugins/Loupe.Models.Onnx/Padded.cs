using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>Rows of different sizes as one batch: how the onnx backends run a graph that takes one unbatched image
/// (torchvision's detectors) on a batch — each image's value of a graph output gains a batch dimension, another value
/// keeps its first dimension when that is 1 for every image (the graph's own batch of one, as a backbone's features)
/// and gains one otherwise; values whose sizes differ are zero-padded at their end.</summary>
internal static class Padded
{
    /// <summary>Whether the images' values of one graph value gain a batch dimension (see the class comment).</summary>
    public static bool AddsBatch(IReadOnlyList<Tensor> parts, bool graphOutput) =>
        graphOutput || parts.Any(p => p.dim() == 0 || p.shape[0] != 1);

    /// <summary>The images' values of one graph value as one batch (<paramref name="source"/>: the model file, for
    /// messages).</summary>
    public static Tensor Batch(IReadOnlyList<Tensor> parts, bool addsBatch, string source) =>
        Cat(addsBatch ? parts.Select(p => p.unsqueeze(0)).ToList() : parts, source);

    /// <summary>Image <paramref name="i"/>'s value back from a batch (a view: gradients reach the batch), cut to its own
    /// <paramref name="shape"/>.</summary>
    public static Tensor Row(Tensor batched, int i, long[] shape, bool addsBatch)
    {
        var r = addsBatch ? batched[i] : batched.narrow(0, i, 1);
        for (int d = 0; d < shape.Length; d++)
            if (r.shape[d] != shape[d]) r = r.narrow(d, 0, shape[d]);
        return r;
    }

    /// <summary>The parts (each 1×…, of one rank) concatenated along dim 0 after padding every other dim with zeros at
    /// its end to the parts' largest: a detector's per-image D×4 boxes become N×max(D)×4.</summary>
    public static Tensor Cat(IReadOnlyList<Tensor> parts, string source)
    {
        if (parts.Select(p => p.dim()).Distinct().Count() > 1)
            throw new LoupeException($"{source}: the images' outputs differ in rank ({string.Join(", ", parts.Select(p => "(" + string.Join("×", p.shape) + ")"))}); they cannot form one batch");
        int rank = (int)parts[0].dim();
        var largest = Enumerable.Range(0, rank).Select(d => parts.Max(p => p.shape[d])).ToArray();
        // Padding to the largest size of every dim can multiply sizes (1×N×1 beside 1×1×N): held to the budget.
        double padded = parts.Count * (double)Enumerable.Range(1, Math.Max(0, rank - 1)).Aggregate(1.0, (a, d) => a * largest[d]);
        if (padded * parts[0].element_size() > OnnxNode.MaxOutputBytes)
            throw new LoupeException($"{source}: the images' outputs ({string.Join(", ", parts.Take(4).Select(p => "(" + string.Join("×", p.shape) + ")"))}{(parts.Count > 4 ? ", …" : "")}) padded to one batch would be over the memory budget of {OnnxNode.MaxOutputBytes >> 20} MB");
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
