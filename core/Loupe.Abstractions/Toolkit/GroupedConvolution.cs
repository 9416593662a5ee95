using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

/// <summary>Grouped 2-D convolutions of narrow groups — depthwise ones (one input channel per group: MobileNet,
/// EfficientNet, MnasNet, ShuffleNet, ConvNeXt's 7×7) and groups of up to <see cref="MaxGroupWidth"/> input channels
/// (RegNet's, ResNeXt's first stages) —: any stride, zero padding, dilation and output channels per group; float32 on the
/// CPU, frozen weights. Loupe's own kernel, for processes where libtorch's oneDNN convolutions are off
/// (<see cref="TorchNative"/>). There, ATen has no grouped kernel on x86: it runs a grouped convolution as one im2col
/// copy and matrix product per group, and a depthwise layer has as many groups as channels (96 to 1,152 in
/// EfficientNet-B0, whose forward and input gradient then spent 85–92 % of their time in Conv).
/// <para>How: one work item per image and group. The group's input planes are copied once, zero-padded, into a
/// per-thread buffer whose rows are split by column phase (column s·t + q of a padded row at [row, q, t], s the stride):
/// the input a tap reads for a row of outputs is then one contiguous run, whatever the stride and dilation, and each
/// vector of 8 outputs of an output channel is a sum over the group's channels and the k_h·k_w taps of scaled runs, kept
/// in a register. The input gradient is the transposed convolution: each output row's gradient, scaled by a tap's
/// weight, is added into the padded buffer's run for that tap, and the buffers' inner parts are the gradient. Sums run
/// over channels and taps in order, so results differ from ATen's by float rounding only.</para>
/// <para>Each of the two is the other's derivative: under <c>create_graph</c> (ShapleyCAM's Hessian-vector products)
/// the input gradient is recorded as the transposed convolution, itself differentiable. No weight gradient is
/// computed. The ONNX backend runs its grouped Conv nodes here, the TorchSharp backend its grouped Conv2d modules,
/// where <see cref="Enabled"/>.</para></summary>
public static partial class GroupedConvolution
{
    /// <summary>Widest group (input channels per group) run here: wider groups make matrix products large enough for
    /// ATen's per-group path.</summary>
    public const long MaxGroupWidth = 16;

    /// <summary>Whether grouped convolutions run here in this process: oneDNN's are off (<see cref="TorchNative"/>)
    /// and the processor has 256-bit vectors.</summary>
    public static bool Enabled { get; } = TorchNative.Configure() && Vector256.IsHardwareAccelerated;

    /// <summary>Largest per-thread buffer (floats; 256 MB): a convolution whose padded planes need more runs on ATen.</summary>
    internal const long MaxBuffer = 1L << 26;

    static long _calls;

    /// <summary>Kernel calls so far in this process (forward and transposed).</summary>
    public static long Calls => Interlocked.Read(ref _calls);

    /// <summary>Stride, padding and dilation of one convolution, and its groups.</summary>
    public sealed record Geometry(long StrideH, long StrideW, long PadH, long PadW, long DilationH, long DilationW, long Groups)
    {
        /// <summary>Output size along one axis.</summary>
        public static long Out(long size, long pad, long dilation, long kernel, long stride) => (size + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
    }

    /// <summary>Whether <c>F.conv2d(x, weight, bias, stride, padding, dilation, groups)</c> is a convolution this
    /// kernel runs where it is <see cref="Enabled"/> (see <see cref="Shaped"/>).</summary>
    public static bool Applies(Tensor x, Tensor weight, Tensor? bias, long[] stride, long[] padding, long[] dilation, long groups) =>
        Enabled && Shaped(x, weight, bias, stride, padding, dilation, groups);

    /// <summary>Whether the convolution is one this kernel computes, on any machine: more than one group, of at most
    /// <see cref="MaxGroupWidth"/> input channels; a weight of groups·m × C_in/groups × k_h × k_w; float32 on the CPU;
    /// frozen weight and bias; strides of 1 to 64, positive dilations, non-negative padding, an output of at least one
    /// position, and a per-thread buffer of at most <see cref="MaxBuffer"/> floats.</summary>
    public static bool Shaped(Tensor x, Tensor weight, Tensor? bias, long[] stride, long[] padding, long[] dilation, long groups)
    {
        if (x.dim() != 4 || weight.dim() != 4 || groups <= 1 || x.shape[1] % groups != 0 || weight.shape[1] != x.shape[1] / groups
            || weight.shape[1] > MaxGroupWidth || weight.shape[0] % groups != 0 || stride.Length != 2 || padding.Length != 2 || dilation.Length != 2)
            return false;
        if (x.dtype != ScalarType.Float32 || x.device_type != DeviceType.CPU || weight.dtype != ScalarType.Float32 || weight.device_type != DeviceType.CPU
            || weight.requires_grad || bias is { requires_grad: true }
            || bias is { } b && (b.dtype != ScalarType.Float32 || b.device_type != DeviceType.CPU || b.numel() != weight.shape[0]))
            return false;
        // Strides past 64 (the buffer holds a run per column phase) go to ATen.
        if (stride.Any(s => s < 1 || s > 64) || padding.Any(p => p < 0) || dilation.Any(d => d < 1)) return false;
        if (Geometry.Out(x.shape[2], padding[0], dilation[0], weight.shape[2], stride[0]) < 1
            || Geometry.Out(x.shape[3], padding[1], dilation[1], weight.shape[3], stride[1]) < 1
            || x.shape[0] * groups > int.MaxValue || x.shape[2] + 2 * padding[0] > MaxBuffer || x.shape[3] + 2 * padding[1] > MaxBuffer)
            return false;
        var g = new Geometry(stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups);
        return new Layout(x.shape[2], x.shape[3], weight.shape[2], weight.shape[3], weight.shape[1], g).Length(weight.shape[0] / groups) <= MaxBuffer;
    }

    /// <summary>The convolution, differentiable to <paramref name="x"/> when it needs a gradient.</summary>
    public static Tensor Conv2d(Tensor x, Tensor weight, Tensor? bias, long[] stride, long[] padding, long[] dilation, long groups)
    {
        var g = new Geometry(stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups);
        return x.requires_grad && is_grad_enabled() ? GroupedConvolutionFunction.apply(x, weight, bias!, g) : Forward(x, weight, bias, g);
    }

    /// <summary><c>F.conv2d(x, weight, bias, stride, padding, dilation, groups)</c>, NCHW result.</summary>
    public static unsafe Tensor Forward(Tensor x, Tensor weight, Tensor? bias, Geometry g)
    {
        Interlocked.Increment(ref _calls);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        long o = weight.shape[0], width = weight.shape[1], kh = weight.shape[2], kw = weight.shape[3], groups = g.Groups, m = o / groups;
        var layout = new Layout(h, w, kh, kw, width, g);
        var input = x.contiguous();
        var weights = weight.detach().contiguous();
        var biases = bias?.detach().contiguous();
        var output = empty([n, o, layout.OutH, layout.OutW]);
        long outPlane = layout.OutH * layout.OutW;
        float* inBase = Pointer(input), wBase = Pointer(weights), bBase = biases is null ? null : Pointer(biases), outBase = Pointer(output);
        TensorThreads.For((int)(n * groups), item =>
        {
            long image = item / groups, group = item % groups;
            fixed (float* buffer = layout.Rent())
            {
                layout.Fill(buffer, inBase + (image * c + group * width) * h * w);
                for (long k = 0; k < m; k++)
                {
                    long channel = group * m + k;
                    layout.Rows(buffer, wBase + channel * width * kh * kw, bBase is null ? 0f : bBase[channel], outBase + (image * o + channel) * outPlane);
                }
            }
        });
        return scope.MoveToOuter(output);
    }

    /// <summary>The transposed convolution: the gradient of <see cref="Forward"/> with respect to an input of
    /// <paramref name="channels"/> × <paramref name="h"/> × <paramref name="w"/>, for the output gradient
    /// <paramref name="grad"/> (N × O × OH × OW).</summary>
    public static unsafe Tensor Transposed(Tensor grad, Tensor weight, Geometry g, long channels, long h, long w)
    {
        Interlocked.Increment(ref _calls);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long n = grad.shape[0], o = weight.shape[0], width = weight.shape[1], kh = weight.shape[2], kw = weight.shape[3], groups = g.Groups, m = o / groups;
        var layout = new Layout(h, w, kh, kw, width, g);
        if (grad.dim() != 4 || grad.shape[1] != o || grad.shape[2] != layout.OutH || grad.shape[3] != layout.OutW || groups * width != channels || m * groups != o)
            throw new ArgumentException($"grouped convolution: a gradient of [{string.Join(", ", grad.shape)}] does not fit {channels} channels of {h}×{w}, {groups} groups and a weight of [{string.Join(", ", weight.shape)}]");
        var upstream = grad.to(ScalarType.Float32).contiguous();
        var weights = weight.detach().contiguous();
        var result = empty([n, channels, h, w]);
        long outPlane = layout.OutH * layout.OutW;
        float* gBase = Pointer(upstream), wBase = Pointer(weights), rBase = Pointer(result);
        TensorThreads.For((int)(n * groups), item =>
        {
            long image = item / groups, group = item % groups;
            fixed (float* buffer = layout.Rent(m))
            {
                layout.Gather(buffer, wBase + group * m * width * kh * kw, gBase + (image * o + group * m) * outPlane, m);
                layout.Extract(buffer, rBase + (image * channels + group * width) * h * w);
            }
        });
        return scope.MoveToOuter(result);
    }

    static unsafe float* Pointer(Tensor t) => DirectConvolution.Pointer(t);
}

/// <summary><see cref="GroupedConvolution.Forward"/> with its input gradient, the transposed convolution (recorded
/// as <see cref="GroupedConvolutionTransposedFunction"/> under <c>create_graph</c>).</summary>
sealed class GroupedConvolutionFunction : GuardedFunction<GroupedConvolutionFunction>
{
    public override string Name => "LoupeGroupedConvolution";

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var x = (Tensor)vars[0];
        var weight = (Tensor)vars[1];
        var g = (GroupedConvolution.Geometry)vars[3];
        ctx.save_for_backward([weight]);   // the weights as they were: a later in-place change does not reach this graph
        ctx.save_data("geometry", g);
        ctx.save_data("input", new long[] { x.shape[1], x.shape[2], x.shape[3] });
        return GroupedConvolution.Forward(x, weight, vars[2] as Tensor, g);
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        var g = (GroupedConvolution.Geometry)ctx.get_data("geometry");
        var input = (long[])ctx.get_data("input");
        var weight = ctx.get_saved_variables()[0];
        var gradient = is_grad_enabled()
            ? GroupedConvolutionTransposedFunction.apply(grad, weight, g, input)
            : GroupedConvolution.Transposed(grad, weight, g, input[0], input[1], input[2]);
        return [gradient, null!, null!, null!];
    }
}

/// <summary><see cref="GroupedConvolution.Transposed"/>, whose gradient is the forward convolution again.</summary>
sealed class GroupedConvolutionTransposedFunction : GuardedFunction<GroupedConvolutionTransposedFunction>
{
    public override string Name => "LoupeGroupedConvolutionTransposed";

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var weight = (Tensor)vars[1];
        var g = (GroupedConvolution.Geometry)vars[2];
        var input = (long[])vars[3];
        ctx.save_for_backward([weight]);
        ctx.save_data("geometry", g);
        return GroupedConvolution.Transposed((Tensor)vars[0], weight, g, input[0], input[1], input[2]);
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        var g = (GroupedConvolution.Geometry)ctx.get_data("geometry");
        var weight = ctx.get_saved_variables()[0];
        var gradient = is_grad_enabled() ? GroupedConvolutionFunction.apply(grad, weight, null!, g) : GroupedConvolution.Forward(grad, weight, null, g);
        return [gradient, null!, null!, null!];
    }
}
