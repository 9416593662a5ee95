using Loupe.Abstractions.Toolkit;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Loupe.Models.TorchSharp;

/// <summary>A 2-D convolution's arguments, read when it runs (so a parameter changed in place is seen).</summary>
sealed class ConvArgs(Func<Tensor> weight, Func<Tensor?> bias, long[] stride, long[] padding, long[] dilation, long groups)
{
    public Tensor Weight => weight();
    public Tensor? Bias => bias();
    public readonly long[] Stride = stride, Padding = padding, Dilation = dilation;
    public readonly long Groups = groups;

    public Tensor Conv(Tensor x) => nn.functional.conv2d(x, Weight, Bias, strides: Stride, padding: Padding, dilation: Dilation, groups: Groups);

    /// <summary>The convolution of <paramref name="x"/>; an NCHW input with at most 4 channels that needs its gradient
    /// (the first layer of an image model, when a technique differentiates to the pixels) goes through
    /// <see cref="FewChannelConvFunction"/>; where oneDNN is off, other ones <see cref="DirectConvolution"/> runs (any
    /// without a gradient, stride 1 with one) go there, and grouped ones of narrow groups (depthwise and the like, any
    /// stride) through <see cref="GroupedConvolution"/>.</summary>
    public Tensor Run(Tensor x)
    {
        if (Groups == 1 && x.dim() == 4 && x.shape[1] <= FewChannelConvFunction.MaxChannels && x.requires_grad && is_grad_enabled()
            && x.is_contiguous() && !Weight.requires_grad && Bias is not { requires_grad: true })
            return FewChannelConvFunction.apply(x, this);
        if (Groups > 1)
        {
            var weight = Weight;
            var bias = Bias;
            if (GroupedConvolution.Applies(x, weight, bias, Stride, Padding, Dilation, Groups)) return GroupedConvolution.Conv2d(x, weight, bias, Stride, Padding, Dilation, Groups);
        }
        else if (x.dim() == 4 && (x.shape[1] > FewChannelConvFunction.MaxChannels || !(x.requires_grad && is_grad_enabled())))
        {
            var weight = Weight;
            var bias = Bias;
            if (DirectConvolution.Applies(x, weight, bias, Stride, Padding, Dilation, Groups)) return DirectConvolution.Conv2d(x, weight, bias, Stride, Padding, Dilation);
        }
        return Conv(x);
    }

    /// <summary>Whether <paramref name="conv"/> is a first-layer convolution this path can run (zero padding given as
    /// numbers, no groups, few input channels).</summary>
    public static bool FewChannels(Conv2d conv) =>
        conv.in_channels <= FewChannelConvFunction.MaxChannels && conv.groups == 1 && conv.padding_mode == PaddingModes.Zeros && conv.padding is not null;

    /// <summary>Whether <paramref name="conv"/> can run on <see cref="DirectConvolution"/> in this process (enabled
    /// there; strides up to <see cref="DirectConvolution.MaxStride"/>, one group, zero padding given as numbers, within the
    /// kernel's reach).</summary>
    public static bool Direct(Conv2d conv) =>
        DirectConvolution.Enabled && conv.groups == 1 && conv.padding_mode == PaddingModes.Zeros && conv.padding is { Length: 2 } p
        && conv.stride.All(s => s is >= 1 and <= DirectConvolution.MaxStride) && conv.in_channels > FewChannelConvFunction.MaxChannels
        && p[0] <= conv.dilation[0] * (conv.kernel_size[0] - 1) && p[1] <= conv.dilation[1] * (conv.kernel_size[1] - 1);

    /// <summary>Whether <paramref name="conv"/> is a grouped convolution of narrow groups (depthwise and the like) that
    /// runs on <see cref="GroupedConvolution"/> in this process (enabled there; zero padding given as numbers).</summary>
    public static bool Grouped(Conv2d conv) =>
        GroupedConvolution.Enabled && conv.groups > 1 && conv.in_channels / conv.groups <= GroupedConvolution.MaxGroupWidth
        && conv.padding_mode == PaddingModes.Zeros && conv.padding is { Length: 2 };

    public static ConvArgs Of(Conv2d conv) => new(() => conv.weight!, () => conv.bias, conv.stride, conv.padding!, conv.dilation, conv.groups);
}

/// <summary>Runs in place of a first-layer <see cref="Conv2d"/>, or of one <see cref="DirectConvolution"/> can run where it
/// is enabled (see <see cref="Rewrites"/>): the same convolution, through <see cref="ConvArgs.Run"/>.</summary>
sealed class FewChannelConv(Conv2d conv) : nn.Module<Tensor, Tensor>("Conv2d")
{
    readonly ConvArgs _args = ConvArgs.Of(conv);
    public override Tensor forward(Tensor x) => _args.Run(x);
}

/// <summary>A convolution whose input gradient is computed as a matrix product and a column-to-image sum, for inputs
/// with few channels. libtorch 2.10's oneDNN runs the data gradient of resnet18's stem (3 → 64 channels, 7×7, stride 2)
/// as a channels-last kernel after reordering the 64×112×112 output gradient (6–9 ms at batch 1); here it is one GEMM
/// (weightᵀ · gradient: 147 × 64 × 12,544) and 49 strided adds (~4 ms). The forward is libtorch's. Parameters must be
/// frozen (their gradients are not computed); not differentiable twice.</summary>
sealed class FewChannelConvFunction : GuardedFunction<FewChannelConvFunction>
{
    public const int MaxChannels = 4;

    public override string Name => "LoupeFewChannelConv";

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var x = (Tensor)vars[0];
        var args = (ConvArgs)vars[1];
        ctx.save_data("args", args);
        ctx.save_data("size", (x.shape[2], x.shape[3]));
        return args.Conv(x);
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        var a = (ConvArgs)ctx.get_data("args");
        var (h, w) = ((long, long))ctx.get_data("size");
        using var scope = NewDisposeScope();
        var weight = a.Weight;
        long n = grad.shape[0], outC = grad.shape[1], oh = grad.shape[2], ow = grad.shape[3];
        long c = weight.shape[1], kh = weight.shape[2], kw = weight.shape[3];
        long sh = a.Stride[0], sw = a.Stride[1], ph = a.Padding[0], pw = a.Padding[1], dh = a.Dilation[0], dw = a.Dilation[1];
        // columns[n, (c, i, j), (y, x)] = Σ_o weight[o, c, i, j] · grad[n, o, y, x]
        var columns = weight.reshape(outC, -1).t().MatMul(grad.reshape(n, outC, oh * ow)).view(n, c, kh, kw, oh, ow);
        // Each kernel tap (i, j) adds its columns to the padded input at rows i·dh + y·sh, columns j·dw + x·sw.
        long spanH = sh * (oh - 1) + 1, spanW = sw * (ow - 1) + 1;
        var padded = zeros([n, c, Math.Max(h + 2 * ph, (kh - 1) * dh + spanH), Math.Max(w + 2 * pw, (kw - 1) * dw + spanW)], dtype: grad.dtype);
        for (long i = 0; i < kh; i++)
            for (long j = 0; j < kw; j++)
                padded[.., .., TensorIndex.Slice(i * dh, i * dh + spanH, sh), TensorIndex.Slice(j * dw, j * dw + spanW, sw)].add_(columns[.., .., i, j]);
        var input = padded[.., .., TensorIndex.Slice(ph, ph + h), TensorIndex.Slice(pw, pw + w)];
        return [scope.MoveToOuter(input), null!];
    }
}
