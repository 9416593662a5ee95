using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Loupe.Models.Onnx;

/// <summary>Operators of segmentation and detection heads: Resize (the bilinear / nearest upsampling of torchvision's
/// FCN, DeepLabV3 and LRASPP; Keypoint R-CNN's bicubic heatmaps), ArgMax and ArgMin. ArgMax/ArgMin give Int64 indices (no gradient: the
/// gradient of a detector's scores goes through the values, e.g. ReduceMax, not through the chosen index).</summary>
public static partial class Ops
{
    /// <summary>Adds the operators of this file to the table.</summary>
    static Dictionary<string, OpFn> WithHeadOps(Dictionary<string, OpFn> table)
    {
        table["Resize"] = (n, x) => One(Resize(n, x));
        table["ArgMax"] = (n, x) => One(ArgExtreme(n, x[0]!, max: true));
        table["ArgMin"] = (n, x) => One(ArgExtreme(n, x[0]!, max: false));
        return table;
    }

    /// <summary>Load-time checks of the operators of this file.</summary>
    static void CheckHeadOps(OnnxNode n)
    {
        switch (n.OpType)
        {
            case "Resize":
                var mode = n.String("mode", "nearest");
                var ct = n.String("coordinate_transformation_mode", "half_pixel");
                if (mode == "linear" && ct is not ("half_pixel" or "pytorch_half_pixel" or "align_corners"))
                    throw n.Error($"linear Resize with coordinate_transformation_mode '{ct}' is not supported (half_pixel, pytorch_half_pixel, align_corners)");
                if (mode == "nearest" && !NearestExact(n) && (ct != "asymmetric" || n.String("nearest_mode", "round_prefer_floor") != "floor"))
                    throw n.Error($"nearest Resize is supported with coordinate_transformation_mode 'asymmetric' and nearest_mode 'floor' (PyTorch's 'nearest') or 'half_pixel' and 'round_prefer_ceil' (its 'nearest-exact'), got '{ct}' / '{n.String("nearest_mode", "round_prefer_floor")}'");
                if (mode == "cubic" && ct is not ("half_pixel" or "pytorch_half_pixel" or "align_corners"))
                    throw n.Error($"cubic Resize with coordinate_transformation_mode '{ct}' is not supported (half_pixel, pytorch_half_pixel, align_corners)");
                if (mode == "cubic" && Math.Abs(n.Float("cubic_coeff_a", -0.75f) + 0.75f) > 1e-6f)
                    throw n.Error($"cubic Resize with cubic_coeff_a {n.Float("cubic_coeff_a", -0.75f)} is not supported (−0.75, PyTorch's bicubic)");
                if (mode is not ("linear" or "nearest" or "cubic")) throw n.Error($"Resize mode '{mode}' is not supported (linear, nearest, cubic)");
                if (n.String("keep_aspect_ratio_policy", "stretch") != "stretch")
                    throw n.Error($"keep_aspect_ratio_policy '{n.String("keep_aspect_ratio_policy", "")}' is not supported (stretch)");
                if (n.Int("exclude_outside", 0) != 0) throw n.Error("exclude_outside = 1 is not supported");
                break;
            case "ArgMax" or "ArgMin":
                if (n.Int("select_last_index", 0) != 0) throw n.Error("select_last_index = 1 is not supported");
                break;
        }
    }

    /// <summary>Resizes the spatial dims of an N×C×H×W input to <c>sizes</c>, or by <c>scales</c> (floor(dim · scale)
    /// pixels, the scale itself mapping the coordinates, as ONNX and PyTorch's <c>scale_factor</c> do); from opset 18
    /// the two may list only the <c>axes</c> they change. N and C must keep their size. <c>antialias</c> (opset 18, which
    /// PyTorch 2's exporter always writes) widens a linear or cubic kernel when an axis shrinks, as ONNX defines it.</summary>
    static Tensor Resize(OnnxNode n, Tensor?[] x)
    {
        var input = x[0]!;
        if (input.dim() != 4) throw n.Error($"only 4-D (N×C×H×W) Resize is supported, input is ({string.Join("×", input.shape)})");
        int scalesAt = n.Opset >= 11 ? 2 : 1, sizesAt = 3;
        var axes = n.Opset >= 18 && n.Ints("axes") is { } ax ? ax.Select(a => Axis(a, 4)).ToArray() : [0, 1, 2, 3];
        if (axes.Any(a => a < 0 || a > 3) || axes.Distinct().Count() != axes.Length) throw n.Error($"axes ({string.Join(", ", n.Ints("axes") ?? [])}) are not distinct axes of a 4-D input");
        long[] size;
        double[]? scales = null;
        if (sizesAt < x.Length && x[sizesAt] is { } sz && sz.numel() > 0)
        {
            var given = Longs(sz);
            if (given.Length != axes.Length) throw n.Error($"sizes has {given.Length} values for {axes.Length} axes");
            size = input.shape.ToArray();
            for (int i = 0; i < axes.Length; i++) size[axes[i]] = given[i];
        }
        else if (scalesAt < x.Length && x[scalesAt] is { } sc && sc.numel() > 0)
        {
            var given = sc.to(ScalarType.Float64).ToArray<double>();
            if (given.Length != axes.Length) throw n.Error($"scales has {given.Length} values for {axes.Length} axes");
            scales = [1, 1, 1, 1];
            for (int i = 0; i < axes.Length; i++) scales[axes[i]] = given[i];
            if (scales.Any(v => !(v > 0) || double.IsInfinity(v))) throw n.Error($"scales ({string.Join(", ", given)}) must be positive and finite");
            size = input.shape.Select((d, i) => (long)Math.Floor(d * scales[i])).ToArray();
        }
        else throw n.Error("Resize needs 'scales' or 'sizes'");
        if (size[0] != input.shape[0] || size[1] != input.shape[1])
            throw n.Error($"only the spatial dims can be resized: ({string.Join("×", input.shape)}) → ({string.Join("×", size)})");
        if (size[2] <= 0 || size[3] <= 0) throw n.Error($"output size {size[2]}×{size[3]} is empty");
        // The output and libtorch's working copies: two for nearest, four for linear and cubic (whose time, too, grows
        // with the output: a cubic Resize to 480 MB took over 5 s, found by the fuzzer).
        n.CheckOutput(size, copies: n.String("mode", "nearest") == "nearest" ? 2 : 4);
        var mode = n.String("mode", "nearest");
        // With scales, the scale maps the coordinates (not the rounded size ratio); with sizes, the size ratio.
        long[]? outSize = scales is null ? [size[2], size[3]] : null;
        double[]? factor = scales is null ? null : [scales[2], scales[3]];
        if (mode == "nearest") return F.interpolate(input, outSize, factor, NearestExact(n) ? InterpolationMode.NearestExact : InterpolationMode.Nearest);
        bool corners = n.String("coordinate_transformation_mode", "half_pixel") == "align_corners";
        var how = mode == "cubic" ? InterpolationMode.Bicubic : InterpolationMode.Bilinear;   // cubic: a = −0.75, edge values beyond the border
        if (n.Int("antialias", 0) != 0 && (size[2] < input.shape[2] || size[3] < input.shape[3]))
        {
            // ONNX's antialiased kernel reaches past the border to the edge pixels (exclude_outside 0), PyTorch's does
            // not: the kernel's weights as matrices, one per axis.
            var sh = scales?[2] ?? size[2] / (double)input.shape[2];
            var sw = scales?[3] ?? size[3] / (double)input.shape[3];
            var ct = n.String("coordinate_transformation_mode", "half_pixel");
            bool cubic = mode == "cubic";
            n.CheckOutput([size[2], input.shape[2]]);   // the weight matrices (out × in) come from the file's sizes too
            n.CheckOutput([size[3], input.shape[3]]);
            using var wh = tensor(AntialiasWeights(input.shape[2], size[2], sh, ct, cubic), [size[2], input.shape[2]]).to(input.dtype);
            using var ww = tensor(AntialiasWeights(input.shape[3], size[3], sw, ct, cubic), [size[3], input.shape[3]]).to(input.dtype);
            return MatMul(n, MatMul(n, wh, input), ww.t());
        }
        return F.interpolate(input, outSize, factor, how, corners);
    }

    /// <summary>The out × in weights of ONNX's antialiased linear or cubic (a = −0.75) resize of one axis by
    /// <paramref name="scale"/>: the kernel stretched by 1 / scale, its taps around each output's source coordinate (as
    /// <paramref name="mode"/> maps it) normalised to sum 1, taps past the border read the edge pixel (exclude_outside 0)
    /// — ONNX's reference implementation, which ONNX Runtime follows.</summary>
    static float[] AntialiasWeights(long inSize, long outSize, double scale, string mode, bool cubic)
    {
        var w = new float[outSize * inSize];
        double s = Math.Min(scale, 1.0), outWidth = scale * inSize;
        int start = cubic ? (int)Math.Floor(-2 / s) + 1 : (int)Math.Floor(-1 / s) + 1;
        int taps = 2 - 2 * start;
        var coeffs = new double[taps];
        for (long o = 0; o < outSize; o++)
        {
            double x = mode switch
            {
                "align_corners" => outWidth == 1 ? 0 : o * (inSize - 1) / (outWidth - 1),
                "asymmetric" => o / scale,
                "pytorch_half_pixel" => outWidth == 1 ? -0.5 : (o + 0.5) / scale - 0.5,
                _ => (o + 0.5) / scale - 0.5,
            };
            double floor = Math.Floor(x), ratio = x == floor ? 1 : x - floor;
            long b = (long)Math.Round(x - ratio);
            double sum = 0;
            for (int i = 0; i < taps; i++)
            {
                double a = Math.Abs(s * (start + i - ratio));
                coeffs[i] = cubic
                    ? a <= 1 ? (1.25 * a - 2.25) * a * a + 1 : a < 2 ? ((-0.75 * a + 3.75) * a - 6) * a + 3 : 0
                    : Math.Clamp(1 - a, 0, 1);
                sum += coeffs[i];
            }
            for (int i = 0; i < taps; i++)
                w[o * inSize + Math.Clamp(b + start + i, 0, inSize - 1)] += (float)(coeffs[i] / sum);
        }
        return w;
    }

    /// <summary>Nearest with half-pixel centres rounded half up: ⌊(x + ½) / scale⌋, PyTorch's 'nearest-exact'.</summary>
    static bool NearestExact(OnnxNode n) =>
        n.String("coordinate_transformation_mode", "half_pixel") is "half_pixel" or "pytorch_half_pixel" && n.String("nearest_mode", "round_prefer_floor") == "round_prefer_ceil";

    static Tensor ArgExtreme(OnnxNode n, Tensor x, bool max)
    {
        long axis = Axis(n.Int("axis", 0), x.dim());
        bool keep = n.Int("keepdims", 1) != 0;
        using var d = x.detach();
        return max ? d.argmax(axis, keep) : d.argmin(axis, keep);
    }
}
