using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Loupe.Models.Onnx;

/// <summary>ONNX operators that move or select elements: Flatten, Reshape, Split, Slice, Squeeze, Unsqueeze, Pad, Shape, Gather.</summary>
public static partial class Ops
{
    static Tensor Flatten(OnnxNode n, Tensor x)
    {
        long axis = Axis(n.Int("axis", 1), x.dim());
        var shape = x.shape;
        long rows = shape[..(int)axis].Aggregate(1L, (p, v) => p * v);
        long cols = shape[(int)axis..].Aggregate(1L, (p, v) => p * v);
        return x.reshape(rows, cols);
    }

    static Tensor Reshape(OnnxNode n, Tensor x, long[] shape)
    {
        bool allowZero = n.Int("allowzero", 0) != 0;
        var target = (long[])shape.Clone();
        for (int i = 0; i < target.Length; i++)
            if (target[i] == 0 && !allowZero) target[i] = x.shape[i];
        return x.reshape(target);
    }

    static Tensor[] Split(OnnxNode n, Tensor?[] x)
    {
        var t = x[0]!;
        long axis = Axis(n.Int("axis", 0), t.dim());
        long[]? sizes = n.Opset >= 13 ? (x.Length > 1 && x[1] is { } s ? Longs(s) : null) : n.Ints("split");
        int outputs = n.Outputs.Length;
        long dim = t.shape[axis];
        if ((sizes is null || sizes.Length == 0) && n.Opset >= 18 && n.Has("num_outputs"))
        {
            // Opset 18: num_outputs parts of ⌈dim / num_outputs⌉, the last one smaller when it does not divide.
            long parts = n.Int("num_outputs", 0);
            if (parts < 1 || parts != outputs) throw n.Error($"num_outputs {parts} does not match the node's {outputs} outputs");
            long each = (dim + parts - 1) / parts;
            sizes = Enumerable.Range(0, (int)parts).Select(i => Math.Clamp(dim - i * each, 0, each)).ToArray();
        }
        if (sizes is null || sizes.Length == 0)
        {
            if (dim % outputs != 0) throw n.Error($"cannot split {dim} into {outputs} equal parts");
            sizes = Enumerable.Repeat(dim / outputs, outputs).ToArray();
        }
        if (sizes.Length != outputs || sizes.Any(v => v < 0) || sizes.Sum() != dim)
            throw n.Error($"split sizes ({string.Join(", ", sizes)}) do not cut the axis of {dim} into the node's {outputs} outputs");
        return t.split(sizes, axis);
    }

    /// <summary>A Slice node's starts, ends, axes and steps as given (inputs from opset 10, attributes before).</summary>
    static (long[] Starts, long[] Ends, long[] Axes, long[] Steps) SliceArguments(OnnxNode n, Tensor?[] x)
    {
        if (n.Opset < 10)
        {
            var s = n.Ints("starts")!;
            return (s, n.Ints("ends")!, n.Ints("axes") ?? Enumerable.Range(0, s.Length).Select(i => (long)i).ToArray(), Fill(null, s.Length, 1));
        }
        var starts = Longs(x[1]!);
        return (starts, Longs(x[2]!),
            x.Length > 3 && x[3] is { } a ? Longs(a) : Enumerable.Range(0, starts.Length).Select(i => (long)i).ToArray(),
            x.Length > 4 && x[4] is { } st ? Longs(st) : Fill(null, starts.Length, 1));
    }

    /// <summary>When the Slice node <paramref name="n"/> on inputs <paramref name="x"/> takes one contiguous range
    /// [start, end) of one axis (step 1), that range with start and end clamped as Slice clamps them; otherwise null.</summary>
    internal static (long Axis, long Start, long End)? ContiguousSlice(OnnxNode n, Tensor?[] x)
    {
        var (starts, ends, axes, steps) = SliceArguments(n, x);
        if (starts.Length != 1 || ends.Length != 1 || axes.Length != 1 || steps.Length != 1 || steps[0] != 1) return null;
        var t = x[0]!;
        long axis = Axis(axes[0], t.dim());
        if (axis < 0 || axis >= t.dim()) return null;
        long dim = t.shape[axis], start = starts[0], end = ends[0];
        if (start < 0) start += dim;
        if (end < 0) end += dim;
        start = Math.Clamp(start, 0, dim);
        end = Math.Clamp(end, 0, dim);
        return (axis, start, Math.Max(start, end));
    }

    static Tensor Slice(OnnxNode n, Tensor?[] x)
    {
        var t = x[0]!;
        var (starts, ends, axes, steps) = SliceArguments(n, x);
        for (int i = 0; i < starts.Length; i++)
        {
            long axis = Axis(axes[i], t.dim()), dim = t.shape[axis], step = steps[i];
            if (step == 0) throw n.Error("slice step 0");
            long start = starts[i], end = ends[i];
            if (start < 0) start += dim;
            if (end < 0) end += dim;
            if (step > 0)
            {
                start = Math.Clamp(start, 0, dim); end = Math.Clamp(end, 0, dim);
                t = t.slice(axis, start, Math.Max(start, end), step);
            }
            else
            {
                start = Math.Clamp(start, 0, dim - 1); end = Math.Clamp(end, -1, dim - 1);
                var idx = new List<long>();
                for (long j = start; j > end; j += step) idx.Add(j);
                using var index = tensor(idx.ToArray(), device: t.device);
                t = t.index_select(axis, index);
            }
        }
        return t;
    }

    static long[]? AxesOf(OnnxNode n, Tensor?[] x) =>
        n.Opset >= 13 ? (x.Length > 1 && x[1] is { } a ? Longs(a) : null) : n.Ints("axes");

    static Tensor Squeeze(OnnxNode n, Tensor?[] x)
    {
        var t = x[0]!;
        var axes = AxesOf(n, x);
        if (axes is null) return t.squeeze();
        foreach (var a in axes.Select(a => Axis(a, t.dim())).OrderDescending()) t = t.squeeze(a);
        return t;
    }

    static Tensor Unsqueeze(OnnxNode n, Tensor?[] x)
    {
        var t = x[0]!;
        var axes = AxesOf(n, x) ?? throw n.Error("axes are required");
        long rank = t.dim() + axes.Length;
        foreach (var a in axes.Select(a => Axis(a, rank)).Order()) t = t.unsqueeze(a);
        return t;
    }

    static Tensor Pad(OnnxNode n, Tensor?[] x)
    {
        var t = x[0]!;
        long[] pads; double value;
        if (n.Opset < 11) { pads = n.Ints("pads") ?? []; value = n.Float("value", 0); }
        else
        {
            pads = Longs(x[1]!);
            value = x.Length > 2 && x[2] is { } v && v.numel() > 0 ? v.to(ScalarType.Float64).item<double>() : 0;
        }
        int r = (int)t.dim();
        if (n.Opset >= 18 && x.Length > 3 && x[3] is { } axesTensor)
        {
            // Opset 18: pads for the listed axes only (begins of each, then ends of each); the other axes keep their size.
            var axes = Longs(axesTensor).Select(a => Axis(a, r)).ToArray();
            if (axes.Any(a => a < 0 || a >= r) || axes.Distinct().Count() != axes.Length) throw n.Error($"axes ({string.Join(", ", Longs(axesTensor))}) are not distinct axes of a {r}-D input");
            if (pads.Length != 2 * axes.Length) throw n.Error($"pads has {pads.Length} values for {axes.Length} axes");
            var full = new long[2 * r];
            for (int i = 0; i < axes.Length; i++) { full[axes[i]] = pads[i]; full[axes[i] + r] = pads[i + axes.Length]; }
            pads = full;
        }
        if (pads.Length != 2 * r) throw n.Error($"pads has {pads.Length} values for a {r}-D input");
        if (pads.Any(p => Math.Abs(p) > 1L << 40)) throw n.Error($"pads ({string.Join(", ", pads)}) are beyond any image (sums of them would wrap around)");
        int first = Enumerable.Range(0, r).FirstOrDefault(i => pads[i] != 0 || pads[i + r] != 0, r);
        if (first == r) return t.alias();
        if (t.shape.Select((d, i) => d + pads[i] + pads[i + r]).Any(d => d < 0)) throw n.Error("negative pads remove more than the input holds");
        var mode = n.String("mode", "constant");
        // Pads come from the file: bound before anything allocates (edge, reflect and wrap gather axis by axis, holding
        // the last axis' result and the next: two tensors up to the output's size).
        n.CheckOutput(t.shape.Select((d, i) => d + pads[i] + pads[i + r]), copies: mode == "constant" ? 1 : 2);
        if (mode != "constant")
        {
            // edge, reflect and wrap (opset 19), axis by axis as a gather of the source index of each output place (any
            // axis, any pad length; negative pads crop): differentiable, and not limited to the last dims as F.pad's modes.
            for (int i = first; i < r; i++)
            {
                if (pads[i] == 0 && pads[i + r] == 0) continue;
                long dim = t.shape[i];
                if (dim == 0) throw n.Error($"{mode} padding of the empty axis {i}");
                using var j = arange(-pads[i], dim + pads[i + r], dtype: ScalarType.Int64);
                using var index = mode switch
                {
                    "wrap" => j.remainder(dim),
                    "edge" => j.clamp(0, dim - 1),
                    _ => dim == 1 ? zeros_like(j) : Reflect(j, dim),
                };
                var next = t.index_select(i, index);
                if (!ReferenceEquals(t, x[0])) t.Dispose();   // the previous axis' result (index_select's backward keeps only the index)
                t = next;
            }
            return t;
        }
        // Negative pads crop first, as views: F.pad would pad, then crop, holding the uncropped result (found by
        // tools/Loupe.Fuzz: a channel axis padded by 599,999 and the width cropped by half took twice the budget).
        for (int i = first; i < r; i++)
            if (pads[i] < 0 || pads[i + r] < 0)
            {
                long start = Math.Max(0, -pads[i]);
                t = t.narrow(i, start, t.shape[i] - start - Math.Max(0, -pads[i + r]));
            }
        var list = new List<long>();
        for (int i = r - 1; i >= first; i--) { list.Add(Math.Max(0, pads[i])); list.Add(Math.Max(0, pads[i + r])); }
        return list.All(p => p == 0) ? t.alias() : F.pad(t, list.ToArray(), PaddingModes.Constant, value);
    }

    /// <summary>Reflection of positions <paramref name="j"/> into [0, dim) without repeating the border (numpy's
    /// 'reflect', ONNX's), periodic beyond one reflection.</summary>
    static Tensor Reflect(Tensor j, long dim)
    {
        long period = 2 * (dim - 1);
        var m = j.abs().remainder(period);
        return where(m.ge(dim), period - m, m);
    }

    static Tensor Shape(OnnxNode n, Tensor x)
    {
        var shape = x.shape;
        long r = shape.Length;
        long start = n.Int("start", 0), end = n.Int("end", r);
        if (start < 0) start += r;
        if (end < 0) end += r;
        start = Math.Clamp(start, 0, r); end = Math.Clamp(end, start, r);
        return tensor(shape[(int)start..(int)end]);
    }

    static Tensor Gather(OnnxNode n, Tensor data, Tensor indices)
    {
        long axis = Axis(n.Int("axis", 0), data.dim());
        long dim = data.shape[axis];
        var idx = indices.to(ScalarType.Int64);
        idx = where(idx < 0, idx + dim, idx);
        var flat = idx.reshape(-1);
        if (flat.device != data.device) flat = flat.to(data.device);
        var picked = data.index_select(axis, flat);
        var shape = data.shape[..(int)axis].Concat(indices.shape).Concat(data.shape[((int)axis + 1)..]).ToArray();
        return picked.reshape(shape);
    }
}
