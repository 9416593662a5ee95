using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Loupe.Models.Onnx;

/// <summary>Operators of older exports and of the ONNX Model Zoo's Caffe-era networks: LRN (AlexNet, CaffeNet, GoogLeNet,
/// ZFNet), Upsample (opsets 7–9: segmentation and detection exports before Resize), DepthToSpace and SpaceToDepth
/// (sub-pixel super-resolution), LpNormalization.</summary>
public static partial class Ops
{
    /// <summary>Adds the operators of this file to the table.</summary>
    static Dictionary<string, OpFn> WithLegacyOps(Dictionary<string, OpFn> table)
    {
        table["LRN"] = (n, x) => One(Lrn(n, x[0]!));
        table["Upsample"] = (n, x) => One(Upsample(n, x));
        table["DepthToSpace"] = (n, x) => One(DepthToSpace(n, x[0]!));
        table["SpaceToDepth"] = (n, x) => One(SpaceToDepth(n, x[0]!));
        table["LpNormalization"] = (n, x) =>
        {
            long p = n.Int("p", 2), axis = Axis(n.Int("axis", -1), x[0]!.dim());
            var norm = p == 1 ? x[0]!.abs().sum([axis], keepdim: true) : x[0]!.square().sum([axis], keepdim: true).sqrt();
            return One(x[0]! / norm);
        };
        return table;
    }

    /// <summary>Load-time checks of the operators of this file.</summary>
    static void CheckLegacyOps(OnnxNode n)
    {
        switch (n.OpType)
        {
            case "LRN":
                if (n.Int("size", 0) is < 1 or > 1024) throw n.Error("size must be 1–1024");
                break;
            case "Upsample":
                if (n.String("mode", "nearest") is not ("nearest" or "linear" or "bilinear")) throw n.Error($"Upsample mode '{n.String("mode", "")}' is not supported (nearest, linear)");
                break;
            case "DepthToSpace" or "SpaceToDepth":
                if (n.Int("blocksize", 0) is < 1 or > 1024) throw n.Error("blocksize must be 1–1024");
                if (n.OpType == "DepthToSpace" && n.String("mode", "DCR") is not ("DCR" or "CRD")) throw n.Error($"mode '{n.String("mode", "")}' is not supported (DCR, CRD)");
                break;
            case "LpNormalization":
                if (n.Int("p", 2) is not (1 or 2)) throw n.Error("p must be 1 or 2");
                break;
        }
    }

    /// <summary>Local response normalisation across channels: x / (bias + α/size · Σ x²)^β, the sum over the channels
    /// c − ⌊(size−1)/2⌋ … c + ⌈(size−1)/2⌉ (ONNX's window; PyTorch's local_response_norm puts the longer side first
    /// for an even size).</summary>
    static Tensor Lrn(OnnxNode n, Tensor x)
    {
        if (x.dim() < 3) throw n.Error($"LRN needs an N×C×… input, got ({string.Join("×", x.shape)})");
        long size = n.Int("size", 1), before = (size - 1) / 2, after = size - 1 - before;
        var shape = x.shape;
        var sq = x.square().reshape(shape[0], 1, shape[1], -1);
        var sum = F.avg_pool2d(F.pad(sq, [0, 0, before, after]), [size, 1], [1, 1]) * size;
        var div = (sum.reshape(shape) * (n.Float("alpha", 1e-4f) / size) + n.Float("bias", 1f)).pow(n.Float("beta", 0.75f));
        return x / div;
    }

    /// <summary>Upsample (opsets 7–9; Resize's predecessor): scales from the attribute (&lt; 9) or the input; nearest
    /// (⌊x / scale⌋) or linear with ONNX's asymmetric coordinates (x / scale, not PyTorch's half-pixel centres).</summary>
    static Tensor Upsample(OnnxNode n, Tensor?[] x)
    {
        var input = x[0]!;
        var scales = n.Opset < 9 ? n.Floats("scales")?.Select(v => (double)v).ToArray() : x.Length > 1 && x[1] is { } s ? s.to(ScalarType.Float64).ToArray<double>() : null;
        if (input.dim() != 4 || scales is not { Length: 4 } || scales[0] != 1 || scales[1] != 1 || !(scales[2] >= 1) || !(scales[3] >= 1) || double.IsInfinity(scales[2] * scales[3]))
            throw n.Error($"Upsample is supported on N×C×H×W inputs with scales (1, 1, ≥ 1, ≥ 1), got ({string.Join("×", input.shape)}) and ({string.Join(", ", scales ?? [])})");
        long oh = (long)Math.Floor(input.shape[2] * scales[2]), ow = (long)Math.Floor(input.shape[3] * scales[3]);
        // Nearest: libtorch's output and working copy; linear: the two neighbours' gathers, their difference and the
        // weighted sum, each of the output's size.
        n.CheckOutput([input.shape[0], input.shape[1], oh, ow], copies: n.String("mode", "nearest") == "nearest" ? 2 : 6);
        if (n.String("mode", "nearest") == "nearest") return F.interpolate(input, null, [scales[2], scales[3]], InterpolationMode.Nearest);
        // Linear, asymmetric: each output row/column reads its two neighbours at x / scale (clamped to the last pixel).
        Tensor Along(Tensor t, int dim, long outSize, double scale)
        {
            long inSize = t.shape[dim];
            var pos = arange(outSize, dtype: ScalarType.Float64) / scale;
            var lo = pos.floor().clamp(0, inSize - 1);
            var hi = (lo + 1).clamp(0, inSize - 1);
            var w = (pos - lo).clamp(0, 1).to(t.dtype);
            var shape = Enumerable.Repeat(1L, (int)t.dim()).ToArray();
            shape[dim] = outSize;
            var a = t.index_select(dim, lo.to(ScalarType.Int64));
            var b = t.index_select(dim, hi.to(ScalarType.Int64));
            return a + (b - a) * w.view(shape);
        }
        return Along(Along(input, 2, oh, scales[2]), 3, ow, scales[3]);
    }

    static Tensor DepthToSpace(OnnxNode n, Tensor x)
    {
        long b = n.Int("blocksize", 1);
        if (x.dim() != 4 || x.shape[1] % (b * b) != 0) throw n.Error($"input ({string.Join("×", x.shape)}) needs 4 dims and channels divisible by blocksize² ({b * b})");
        long N = x.shape[0], C = x.shape[1] / (b * b), H = x.shape[2], W = x.shape[3];
        var y = n.String("mode", "DCR") == "DCR"
            ? x.reshape(N, b, b, C, H, W).permute(0, 3, 4, 1, 5, 2)
            : x.reshape(N, C, b, b, H, W).permute(0, 1, 4, 2, 5, 3);
        return y.reshape(N, C, H * b, W * b);
    }

    static Tensor SpaceToDepth(OnnxNode n, Tensor x)
    {
        long b = n.Int("blocksize", 1);
        if (x.dim() != 4 || x.shape[2] % b != 0 || x.shape[3] % b != 0) throw n.Error($"input ({string.Join("×", x.shape)}) needs 4 dims and a height and width divisible by blocksize {b}");
        long N = x.shape[0], C = x.shape[1], H = x.shape[2] / b, W = x.shape[3] / b;
        return x.reshape(N, C, H, b, W, b).permute(0, 3, 5, 1, 2, 4).reshape(N, C * b * b, H, W);
    }
}
