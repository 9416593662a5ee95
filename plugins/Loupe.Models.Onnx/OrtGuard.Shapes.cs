using Onnx;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

// The shape arithmetic of OrtGuard's inference: broadcasting, elementwise constants, windowed
// operators, gathers and slices.
public static partial class OrtGuard
{
    static bool IntCast(OnnxNode n) => n.OpType == "Cast" && n.Int("to", 1) is not (1 or 10 or 11 or 16);

    static long Axis(long a, long rank, bool clamp) => clamp ? Math.Clamp(a < 0 ? a + rank : a, 0, rank) : a < 0 ? a + rank : a;

    static long Product(IEnumerable<long> s) => s.Aggregate(1L, (p, d) => d > 0 && p > long.MaxValue / d ? long.MaxValue : p * d);

    static long Floor(double v) => v >= long.MaxValue ? long.MaxValue : (long)Math.Floor(v);

    /// <summary>Numpy broadcasting (throws on incompatible shapes: the pass then leaves the value unknown).</summary>
    static long[] Broadcast(long[] a, long[] b)
    {
        int r = Math.Max(a.Length, b.Length);
        var o = new long[r];
        for (int i = 0; i < r; i++)
        {
            long x = i < r - a.Length ? 1 : a[i - (r - a.Length)], y = i < r - b.Length ? 1 : b[i - (r - b.Length)];
            o[i] = x == y || y == 1 ? x : x == 1 ? y : throw new ArgumentException("incompatible shapes");
        }
        return o;
    }

    /// <summary>Elementwise arithmetic, comparisons and Where on small known values (shape computations), or null.</summary>
    static double[]? Arithmetic(string op, V?[] x, long[] shape)
    {
        if (x.Length is < 2 or > 3 || x.Length == 3 && op != "Where" || x.Any(v => v!.Data is null) || Product(shape) > MaxTracked) return null;
        bool ints = x.Skip(op == "Where" ? 1 : 0).All(v => v!.Int);
        int count = (int)Product(shape);
        double At(V v, int i) => v.Data!.Length == 1 ? v.Data[0] : v.Data.Length == count ? v.Data[i] : double.NaN;
        var result = new double[count];
        for (int i = 0; i < count; i++)
        {
            double p = At(x[0]!, i), q = At(x[1]!, i), w = x.Length == 3 ? At(x[2]!, i) : 0;
            if (double.IsNaN(p) || double.IsNaN(q) || double.IsNaN(w)) return null;
            result[i] = op switch
            {
                "Add" => p + q, "Sub" => p - q, "Mul" => p * q, "Max" => Math.Max(p, q), "Min" => Math.Min(p, q),
                "Div" => q == 0 ? double.NaN : ints ? Math.Truncate(p / q) : p / q,
                "Mod" when ints && q != 0 => (p % q + q) % q, // fmod = 0: the sign of the divisor, as Python's %
                "Equal" => p == q ? 1 : 0, "Less" => p < q ? 1 : 0, "Greater" => p > q ? 1 : 0,
                "LessOrEqual" => p <= q ? 1 : 0, "GreaterOrEqual" => p >= q ? 1 : 0,
                "And" => p != 0 && q != 0 ? 1 : 0, "Or" => p != 0 || q != 0 ? 1 : 0,
                "Where" => p != 0 ? q : w,
                _ => double.NaN,
            };
            if (double.IsNaN(result[i])) return null;
        }
        return result;
    }

    /// <summary>Conv, ConvTranspose and pooling output shapes (kernel from the attribute or the weight).</summary>
    static V? Windowed(OnnxNode n, long[]? s, long[]? w)
    {
        if (s is not { Length: > 2 }) return null;
        int sp = s.Length - 2;
        bool conv = n.OpType is "Conv" or "ConvTranspose", transposed = n.OpType == "ConvTranspose";
        if (conv && w is not { } || conv && w!.Length != s.Length) return null;
        var kernel = n.Ints("kernel_shape") ?? (conv ? w![2..] : null);
        if (kernel is null || kernel.Length != sp) return null;
        long[] strides = n.Ints("strides") ?? Enumerable.Repeat(1L, sp).ToArray(), dil = n.Ints("dilations") ?? Enumerable.Repeat(1L, sp).ToArray();
        long[] pads = n.Ints("pads") ?? new long[2 * sp];
        if (strides.Length != sp || dil.Length != sp || pads.Length != 2 * sp || strides.Any(v => v <= 0)) return null;
        var autoPad = n.String("auto_pad", "NOTSET");
        bool ceil = n.Int("ceil_mode", 0) != 0;
        var shape = new long[s.Length];
        shape[0] = s[0];
        shape[1] = !conv ? s[1] : transposed ? w![1] * n.Int("group", 1) : w![0];
        var outputShape = n.Ints("output_shape");
        var outPad = n.Ints("output_padding") ?? new long[sp];
        for (int i = 0; i < sp; i++)
        {
            long input = s[i + 2], k = (kernel[i] - 1) * dil[i] + 1;
            if (transposed)
                shape[i + 2] = outputShape is { } os && os.Length == sp ? os[i]
                    : autoPad is "SAME_UPPER" or "SAME_LOWER" ? input * strides[i]
                    : strides[i] * (input - 1) + (i < outPad.Length ? outPad[i] : 0) + k - pads[i] - pads[i + sp];
            else if (autoPad is "SAME_UPPER" or "SAME_LOWER") shape[i + 2] = (input + strides[i] - 1) / strides[i];
            else
            {
                long span = input + (autoPad == "VALID" ? 0 : pads[i] + pads[i + sp]) - k;
                shape[i + 2] = (ceil ? (span + strides[i] - 1) / strides[i] : span / strides[i]) + 1;
            }
        }
        return new V(shape);
    }

    /// <summary>Elements of an output of shape <paramref name="outShape"/> read from <paramref name="data"/> (shape
    /// <paramref name="inShape"/>): output axis k at position o reads input axis <c>axes[k]</c> (default k) at
    /// <c>index(o, k)</c>.</summary>
    static double[] Gather(long[] inShape, long[] outShape, double[] data, Func<long, int, long> index, long[]? axes = null)
    {
        var inStrides = new long[inShape.Length];
        for (int k = inShape.Length - 1, st = 1; k >= 0; st *= (int)inShape[k], k--) inStrides[k] = st;
        int count = (int)Product(outShape);
        var result = new double[count];
        var at = new long[outShape.Length];
        for (int i = 0; i < count; i++)
        {
            long offset = 0;
            for (int k = 0; k < outShape.Length; k++) offset += index(at[k], k) * inStrides[axes is null ? k : axes[k]];
            result[i] = data[offset];
            for (int k = outShape.Length - 1; k >= 0 && ++at[k] == outShape[k]; k--) at[k] = 0;
        }
        return result;
    }

    static V? Slice(OnnxNode n, V?[] x)
    {
        if (x[0] is not { } a) return null;
        var s = a.Shape;
        long[]? L(int i) => i < x.Length ? x[i]?.Data?.Select(v => v >= long.MaxValue ? long.MaxValue : v <= long.MinValue ? long.MinValue : (long)v).ToArray() : null;
        long[]? starts, ends, axes, steps = null;
        if (n.Opset < 10) (starts, ends, axes) = (n.Ints("starts"), n.Ints("ends"), n.Ints("axes"));
        else
        {
            (starts, ends) = (L(1), L(2));
            axes = x.Length > 3 && n.Inputs[3].Length > 0 ? L(3) ?? [-999] : null;
            steps = x.Length > 4 && n.Inputs[4].Length > 0 ? L(4) ?? [0] : null;
            if (axes is [-999] || steps is [0]) return null;
        }
        if (starts is null || ends is null || starts.Length != ends.Length) return null;
        axes ??= Enumerable.Range(0, starts.Length).Select(i => (long)i).ToArray();
        steps ??= Enumerable.Repeat(1L, starts.Length).ToArray();
        var shape = s.ToArray();
        var ranges = s.Select(d => (Start: 0L, Step: 1L, Count: d)).ToArray();
        for (int i = 0; i < starts.Length; i++)
        {
            long ax = Axis(axes[i], s.Length, false), dim = s[ax], step = steps[i];
            if (step == 0) return null;
            long st = starts[i] < 0 ? starts[i] + dim : starts[i], en = ends[i] < 0 ? ends[i] + dim : ends[i];
            (st, en) = step > 0 ? (Math.Clamp(st, 0, dim), Math.Clamp(en, 0, dim)) : (Math.Clamp(st, 0, dim - 1), Math.Clamp(en, -1, dim - 1));
            long count = step > 0 ? Math.Max((en - st + step - 1) / step, 0) : Math.Max((st - en - step - 1) / -step, 0);
            shape[ax] = count;
            ranges[ax] = (st, step, count);
        }
        var data = a.Data is { } d ? Gather(s, shape, d, (o, k) => ranges[k].Start + o * ranges[k].Step) : null;
        return new V(shape, data, a.Int);
    }
}
