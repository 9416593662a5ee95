using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Loupe.Models.Onnx;

/// <summary>Operators of segmentation and detection heads: Resize (the bilinear / nearest upsampling of torchvision's
/// FCN, DeepLabV3 and LRASPP; Keypoint R-CNN's bicubic heatmaps), ReduceMax, ArgMax and ArgMin. ArgMax/ArgMin give Int64 indices (no gradient: the
/// gradient of a detector's scores goes through the values, e.g. ReduceMax, not through the chosen index).</summary>
public static partial class Ops
{
    /// <summary>Adds the operators of this file to the table.</summary>
    static Dictionary<string, OpFn> WithHeadOps(Dictionary<string, OpFn> table)
    {
        table["Resize"] = (n, x) => One(Resize(n, x));
        table["ReduceMax"] = (n, x) => One(Reduce(n, x, max: true));
        table["ReduceMin"] = (n, x) => One(Reduce(n, x, max: false));
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
                if (mode == "nearest" && (ct != "asymmetric" || n.String("nearest_mode", "round_prefer_floor") != "floor"))
                    throw n.Error($"nearest Resize is supported with coordinate_transformation_mode 'asymmetric' and nearest_mode 'floor' (PyTorch's), got '{ct}' / '{n.String("nearest_mode", "round_prefer_floor")}'");
                if (mode == "cubic" && ct is not ("half_pixel" or "pytorch_half_pixel" or "align_corners"))
                    throw n.Error($"cubic Resize with coordinate_transformation_mode '{ct}' is not supported (half_pixel, pytorch_half_pixel, align_corners)");
                if (mode == "cubic" && Math.Abs(n.Float("cubic_coeff_a", -0.75f) + 0.75f) > 1e-6f)
                    throw n.Error($"cubic Resize with cubic_coeff_a {n.Float("cubic_coeff_a", -0.75f)} is not supported (−0.75, PyTorch's bicubic)");
                if (mode is not ("linear" or "nearest" or "cubic")) throw n.Error($"Resize mode '{mode}' is not supported (linear, nearest, cubic)");
                if (n.Int("antialias", 0) != 0) throw n.Error("antialias = 1 is not supported");
                if (n.Int("exclude_outside", 0) != 0) throw n.Error("exclude_outside = 1 is not supported");
                break;
            case "ArgMax" or "ArgMin":
                if (n.Int("select_last_index", 0) != 0) throw n.Error("select_last_index = 1 is not supported");
                break;
            case "ReduceMax" or "ReduceMin":
                if (n.Int("noop_with_empty_axes", 0) != 0) throw n.Error("noop_with_empty_axes = 1 is not supported");
                break;
        }
    }

    /// <summary>Resizes the spatial dims of an N×C×H×W input to <c>sizes</c> (or floor(dim · <c>scales</c>)); N and C
    /// must keep their size.</summary>
    static Tensor Resize(OnnxNode n, Tensor?[] x)
    {
        var input = x[0]!;
        if (input.dim() != 4) throw n.Error($"only 4-D (N×C×H×W) Resize is supported, input is ({string.Join("×", input.shape)})");
        int scalesAt = n.Opset >= 11 ? 2 : 1, sizesAt = 3;
        long[] size;
        if (sizesAt < x.Length && x[sizesAt] is { } sz && sz.numel() > 0)
            size = Longs(sz);
        else if (scalesAt < x.Length && x[scalesAt] is { } sc && sc.numel() > 0)
        {
            var s = sc.to(ScalarType.Float64).ToArray<double>();
            if (s.Length != 4) throw n.Error($"scales has {s.Length} values, the input has 4 dims");
            size = input.shape.Select((d, i) => (long)Math.Floor(d * s[i])).ToArray();
        }
        else throw n.Error("Resize needs 'scales' or 'sizes'");
        if (size.Length != 4) throw n.Error($"sizes has {size.Length} values, the input has 4 dims");
        if (size[0] != input.shape[0] || size[1] != input.shape[1])
            throw n.Error($"only the spatial dims can be resized: ({string.Join("×", input.shape)}) → ({string.Join("×", size)})");
        if (size[2] <= 0 || size[3] <= 0) throw n.Error($"output size {size[2]}×{size[3]} is empty");
        n.CheckOutput(size);
        if (n.String("mode", "nearest") == "nearest") return F.interpolate(input, [size[2], size[3]], mode: InterpolationMode.Nearest);
        bool corners = n.String("coordinate_transformation_mode", "half_pixel") == "align_corners";
        var how = n.String("mode", "nearest") == "cubic" ? InterpolationMode.Bicubic : InterpolationMode.Bilinear;   // cubic: a = −0.75, edge values beyond the border
        return F.interpolate(input, [size[2], size[3]], mode: how, align_corners: corners);
    }

    static long[] ReduceAxes(OnnxNode n, Tensor?[] x)
    {
        var data = x[0]!;
        var axes = n.Opset >= 18 && x.Length > 1 && x[1] is { } a ? Longs(a) : n.Ints("axes");
        return (axes ?? Enumerable.Range(0, (int)data.dim()).Select(i => (long)i).ToArray()).Select(v => Axis(v, data.dim())).ToArray();
    }

    static Tensor Reduce(OnnxNode n, Tensor?[] x, bool max)
    {
        bool keep = n.Int("keepdims", 1) != 0;
        var axes = ReduceAxes(n, x);
        return max ? x[0]!.amax(axes, keep) : x[0]!.amin(axes, keep);
    }

    static Tensor ArgExtreme(OnnxNode n, Tensor x, bool max)
    {
        long axis = Axis(n.Int("axis", 0), x.dim());
        bool keep = n.Int("keepdims", 1) != 0;
        using var d = x.detach();
        return max ? d.argmax(axis, keep) : d.argmin(axis, keep);
    }
}
