using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Loupe.Models.Onnx;

/// <summary>ONNX operators over spatial dims: padding rules, Conv, ConvTranspose, MaxPool, AveragePool.</summary>
public static partial class Ops
{
    /// <summary>Begin and end pads of the spatial dims (explicit, VALID or SAME_*).</summary>
    static (long[] Begin, long[] End) Pads(OnnxNode n, long[] input, long[] kernel, long[] stride, long[] dilation)
    {
        int r = kernel.Length;
        var autoPad = n.String("auto_pad", "NOTSET");
        if (autoPad is "SAME_UPPER" or "SAME_LOWER")
        {
            var b = new long[r]; var e = new long[r];
            for (int i = 0; i < r; i++)
            {
                long outSize = (input[i] + stride[i] - 1) / stride[i];
                long total = Math.Max(0, (outSize - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1 - input[i]);
                if (autoPad == "SAME_UPPER") { b[i] = total / 2; e[i] = total - b[i]; }
                else { e[i] = total / 2; b[i] = total - e[i]; }
            }
            return (b, e);
        }
        if (autoPad == "VALID") return (new long[r], new long[r]);
        var pads = n.Ints("pads") ?? new long[2 * r];
        if (pads.Length != 2 * r) throw n.Error($"pads has {pads.Length} values, expected {2 * r}");
        return (pads[..r], pads[r..]);
    }

    /// <summary>torch pad list (last dim first) for 2-D spatial begin/end pads.</summary>
    static long[] TorchPad(long[] b, long[] e) => [b[1], e[1], b[0], e[0]];

    static bool Symmetric(long[] b, long[] e) => b.SequenceEqual(e);

    /// <summary>Asymmetric pads with begin ≥ end often give the same output as symmetric begin pads (the extra end rows
    /// are never reached by a window): then the op pads itself and the explicit pad copy is skipped.</summary>
    static bool BeginPadsSuffice(long[] inSize, long[] k, long[] s, long[] d, long[] b, long[] e)
    {
        for (int i = 0; i < 2; i++)
        {
            if (b[i] < e[i]) return false;
            long span = d[i] * (k[i] - 1) + 1;
            if ((inSize[i] + b[i] + e[i] - span) / s[i] != (inSize[i] + 2 * b[i] - span) / s[i]) return false;
        }
        return true;
    }

    static Tensor Conv(OnnxNode n, Tensor x, Tensor w, Tensor? bias)
    {
        if (x.dim() != 4 || w.dim() != 4) throw n.Error($"only 2-D convolutions are supported (input {x.dim()}-D, weight {w.dim()}-D)");
        var k = n.Ints("kernel_shape") ?? [w.shape[2], w.shape[3]];
        var s = Fill(n.Ints("strides"), 2, 1);
        var d = Fill(n.Ints("dilations"), 2, 1);
        var g = n.Int("group", 1);
        var (b, e) = Pads(n, [x.shape[2], x.shape[3]], k, s, d);
        if (Symmetric(b, e) || BeginPadsSuffice([x.shape[2], x.shape[3]], k, s, d, b, e)) return Conv2d(x, w, bias, s, b, d, g);
        return Conv2d(F.pad(x, TorchPad(b, e)), w, bias, s, [0, 0], d, g);
    }

    /// <summary>libtorch's convolution, or where oneDNN is off <see cref="DirectConvolution"/> (one group) or
    /// <see cref="GroupedConvolution"/> (narrow groups: depthwise and the like) where they apply.</summary>
    static Tensor Conv2d(Tensor x, Tensor w, Tensor? bias, long[] s, long[] p, long[] d, long g) =>
        DirectConvolution.Applies(x, w, bias, s, p, d, g) ? DirectConvolution.Conv2d(x, w, bias, s, p, d)
        : GroupedConvolution.Applies(x, w, bias, s, p, d, g) ? GroupedConvolution.Conv2d(x, w, bias, s, p, d, g)
        : F.conv2d(x, w, bias, s, p, d, g);

    static Tensor ConvTranspose(OnnxNode n, Tensor x, Tensor w, Tensor? bias)
    {
        if (x.dim() != 4 || w.dim() != 4) throw n.Error($"only 2-D transposed convolutions are supported (input {x.dim()}-D, weight {w.dim()}-D)");
        var k = n.Ints("kernel_shape") ?? [w.shape[2], w.shape[3]];
        var s = Fill(n.Ints("strides"), 2, 1);
        var d = Fill(n.Ints("dilations"), 2, 1);
        var op = Fill(n.Ints("output_padding"), 2, 0);
        var g = n.Int("group", 1);
        long[] inSize = [x.shape[2], x.shape[3]];
        long[] b = new long[2], e = new long[2];
        var outShape = n.Ints("output_shape");
        var autoPad = n.String("auto_pad", "NOTSET");
        if (outShape is not null || autoPad is "SAME_UPPER" or "SAME_LOWER")
        {
            if (outShape is not null && outShape.Length > 2) outShape = outShape[^2..];
            for (int i = 0; i < 2; i++)
            {
                long target = outShape is not null ? outShape[i] : inSize[i] * s[i];
                long total = s[i] * (inSize[i] - 1) + op[i] + (k[i] - 1) * d[i] + 1 - target;
                if (total < 0) throw n.Error($"output_shape {string.Join("×", outShape ?? [])} needs negative padding");
                if (autoPad == "SAME_UPPER") { b[i] = total / 2; e[i] = total - b[i]; }
                else { e[i] = total / 2; b[i] = total - e[i]; }
            }
        }
        else if (autoPad != "VALID")
        {
            var pads = n.Ints("pads") ?? new long[4];
            b = pads[..2]; e = pads[2..];
        }
        long[] p = [Math.Min(b[0], e[0]), Math.Min(b[1], e[1])];
        var y = F.conv_transpose2d(x, w, bias, s, p, op, d, g);
        if (Symmetric(b, e)) return y;
        long h = y.shape[2], wd = y.shape[3];
        return y[.., .., TensorIndex.Slice(b[0] - p[0], h - (e[0] - p[0])), TensorIndex.Slice(b[1] - p[1], wd - (e[1] - p[1]))];
    }

    static Tensor MaxPool(OnnxNode n, Tensor x) => MaxPool(n, x, MaxPooling.Pool2d);   // libtorch's numbers, NCHW through channels-last

    /// <summary>A MaxPool node's output under DeepLift's rescale rule (Captum's maxpool multipliers, <see cref="Rescale.MaxPool2d"/>).
    /// Asymmetric pads are applied first with −∞ (their multipliers are dropped by the pad's backward).</summary>
    internal static Tensor RescaleMaxPool(OnnxNode n, Tensor x) => MaxPool(n, x, (t, k, s, p, d, ceil) => Rescale.MaxPool2d(t, k, s, p, d, ceil));

    static Tensor MaxPool(OnnxNode n, Tensor x, Func<Tensor, long[], long[], long[], long[], bool, Tensor> pool)
    {
        if (x.dim() != 4) throw n.Error($"only 2-D pooling is supported (input {x.dim()}-D)");
        var k = n.Ints("kernel_shape")!;
        var s = Fill(n.Ints("strides"), 2, 1);
        var d = Fill(n.Ints("dilations"), 2, 1);
        bool ceil = n.Int("ceil_mode", 0) != 0;
        var (b, e) = Pads(n, [x.shape[2], x.shape[3]], k, s, d);
        if ((Symmetric(b, e) || !ceil && BeginPadsSuffice([x.shape[2], x.shape[3]], k, s, d, b, e)) && b[0] <= k[0] / 2 && b[1] <= k[1] / 2)
            return pool(x, k, s, b, d, ceil);
        return pool(F.pad(x, TorchPad(b, e), PaddingModes.Constant, double.NegativeInfinity), k, s, [0, 0], d, ceil);
    }

    /// <summary>MaxPool with its Indices output (PyTorch 2's exporter names it even when nothing reads it): each maximum's
    /// place as ONNX counts it, row-major over the whole N×C×H×W input (storage_order 0). The pads are applied first with
    /// −∞, so the indices into the padded plane are mapped back to the input's.</summary>
    static Tensor[] MaxPoolWithIndices(OnnxNode n, Tensor x)
    {
        if (x.dim() != 4) throw n.Error($"only 2-D pooling is supported (input {x.dim()}-D)");
        var k = n.Ints("kernel_shape")!;
        var s = Fill(n.Ints("strides"), 2, 1);
        var d = Fill(n.Ints("dilations"), 2, 1);
        bool ceil = n.Int("ceil_mode", 0) != 0;
        long h = x.shape[2], w = x.shape[3];
        var (b, e) = Pads(n, [h, w], k, s, d);
        var padded = b.All(v => v == 0) && e.All(v => v == 0) ? x : F.pad(x, TorchPad(b, e), PaddingModes.Constant, double.NegativeInfinity);
        var (values, plane) = MaxPooling.Pool2dWithIndices(padded, k, s, [0, 0], d, ceil);
        long pw = padded.shape[3];
        var row = plane.div(pw, RoundingMode.floor) - b[0];
        var col = plane.remainder(pw) - b[1];
        var planes = arange(x.shape[0] * x.shape[1], dtype: ScalarType.Int64).view(x.shape[0], x.shape[1], 1, 1);
        return [values, (planes * h + row) * w + col];
    }

    static Tensor AveragePool(OnnxNode n, Tensor x)
    {
        if (x.dim() != 4) throw n.Error($"only 2-D pooling is supported (input {x.dim()}-D)");
        var k = n.Ints("kernel_shape")!;
        var s = Fill(n.Ints("strides"), 2, 1);
        bool ceil = n.Int("ceil_mode", 0) != 0;
        bool includePad = n.Int("count_include_pad", 0) != 0;
        var (b, e) = Pads(n, [x.shape[2], x.shape[3]], k, s, [1, 1]);
        if (b.All(v => v == 0) && e.All(v => v == 0)) return F.avg_pool2d(x, k, s, [0, 0], ceil, count_include_pad: false);
        if (Symmetric(b, e) && b[0] <= k[0] / 2 && b[1] <= k[1] / 2) return F.avg_pool2d(x, k, s, b, ceil, includePad);
        // Asymmetric pads: pad explicitly with zeros; without count_include_pad divide by the number of real pixels
        // in each window (the same pooling over a padded mask of ones).
        var pad = TorchPad(b, e);
        var sum = F.avg_pool2d(F.pad(x, pad), k, s, [0, 0], ceil, true);
        if (includePad) return sum;
        using var ones = torch.ones(1, 1, x.shape[2], x.shape[3], dtype: x.dtype, device: x.device);
        using var mask = F.pad(ones, pad);
        using var count = F.avg_pool2d(mask, k, s, [0, 0], ceil, true);
        return sum / count;
    }
}
