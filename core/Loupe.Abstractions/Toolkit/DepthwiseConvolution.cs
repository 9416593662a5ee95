using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

/// <summary>Depthwise 2-D convolutions (one group per input channel, each with its own k_h×k_w kernels — MobileNet,
/// EfficientNet, MnasNet, ShuffleNet, ConvNeXt's 7×7 —: any stride, zero padding, dilation and channel multiplier;
/// float32 on the CPU, frozen weights) on Loupe's own kernel, for processes where libtorch's oneDNN convolutions are
/// off (<see cref="TorchNative"/>). There, ATen has no grouped kernel on x86: it runs a grouped convolution as one
/// im2col copy and matrix product per group, and a depthwise layer has as many groups as channels (96 to 1,152 in
/// EfficientNet-B0, whose forward and input gradient then spent 85–92 % of their time in Conv).
/// <para>How: one work item per image and output channel (per input channel for the gradient). The input plane is
/// copied once, zero-padded, into a per-thread buffer whose rows are split by column phase (column s·t + q of a padded
/// row at [row, q, t], s the stride): the input a tap reads for a row of outputs is then one contiguous run, whatever
/// the stride and dilation, and each vector of 8 outputs is a sum of k_h·k_w scaled runs, kept in a register. The input
/// gradient is the transposed convolution: each output row's gradient, scaled by a tap's weight, is added into the
/// padded buffer's run for that tap, and the buffer's inner part is the gradient. Sums run over the taps in order, so
/// results differ from ATen's by float rounding only.</para>
/// <para>Each of the two is the other's derivative: under <c>create_graph</c> (ShapleyCAM's Hessian-vector products)
/// the input gradient is recorded as the transposed convolution, itself differentiable. No weight gradient is
/// computed. The ONNX backend runs its depthwise Conv nodes here, the TorchSharp backend its depthwise Conv2d
/// modules, where <see cref="Enabled"/>.</para></summary>
public static class DepthwiseConvolution
{
    /// <summary>Whether depthwise convolutions run here in this process: oneDNN's are off (<see cref="TorchNative"/>)
    /// and the processor has 256-bit vectors.</summary>
    public static bool Enabled { get; } = TorchNative.Configure() && Vector256.IsHardwareAccelerated;

    static long _calls;

    /// <summary>Kernel calls so far in this process (forward and transposed).</summary>
    public static long Calls => Interlocked.Read(ref _calls);

    /// <summary>Stride, padding and dilation of one depthwise convolution.</summary>
    public sealed record Geometry(long StrideH, long StrideW, long PadH, long PadW, long DilationH, long DilationW)
    {
        /// <summary>Output size along one axis.</summary>
        public static long Out(long size, long pad, long dilation, long kernel, long stride) => (size + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
    }

    /// <summary>Whether <c>F.conv2d(x, weight, bias, stride, padding, dilation, groups)</c> is a depthwise convolution
    /// this kernel runs where it is <see cref="Enabled"/> (see <see cref="Shaped"/>).</summary>
    public static bool Applies(Tensor x, Tensor weight, Tensor? bias, long[] stride, long[] padding, long[] dilation, long groups) =>
        Enabled && Shaped(x, weight, bias, stride, padding, dilation, groups);

    /// <summary>Whether the convolution is one this kernel computes, on any machine: groups = input channels (more than
    /// one), a weight of C_in·m × 1 × k_h × k_w, float32 on the CPU, frozen weight and bias, positive strides and
    /// dilations, non-negative padding, an output of at least one position.</summary>
    public static bool Shaped(Tensor x, Tensor weight, Tensor? bias, long[] stride, long[] padding, long[] dilation, long groups)
    {
        if (x.dim() != 4 || weight.dim() != 4 || groups <= 1 || x.shape[1] != groups || weight.shape[1] != 1 || weight.shape[0] % groups != 0
            || stride.Length != 2 || padding.Length != 2 || dilation.Length != 2) return false;
        if (x.dtype != ScalarType.Float32 || x.device_type != DeviceType.CPU || weight.dtype != ScalarType.Float32 || weight.device_type != DeviceType.CPU
            || weight.requires_grad || bias is { requires_grad: true }
            || bias is { } b && (b.dtype != ScalarType.Float32 || b.device_type != DeviceType.CPU || b.numel() != weight.shape[0]))
            return false;
        if (stride.Any(s => s < 1) || padding.Any(p => p < 0) || dilation.Any(d => d < 1)) return false;
        return Geometry.Out(x.shape[2], padding[0], dilation[0], weight.shape[2], stride[0]) >= 1
            && Geometry.Out(x.shape[3], padding[1], dilation[1], weight.shape[3], stride[1]) >= 1
            && x.shape[0] * weight.shape[0] <= int.MaxValue;
    }

    /// <summary>The convolution, differentiable to <paramref name="x"/> when it needs a gradient.</summary>
    public static Tensor Conv2d(Tensor x, Tensor weight, Tensor? bias, long[] stride, long[] padding, long[] dilation)
    {
        var g = new Geometry(stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1]);
        return x.requires_grad && is_grad_enabled() ? DepthwiseFunction.apply(x, weight, bias!, g) : Forward(x, weight, bias, g);
    }

    /// <summary><c>F.conv2d(x, weight, bias, stride, padding, dilation, groups: C_in)</c>, NCHW result.</summary>
    public static unsafe Tensor Forward(Tensor x, Tensor weight, Tensor? bias, Geometry g)
    {
        Interlocked.Increment(ref _calls);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        long o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3], m = o / c;
        var layout = new Layout(h, w, kh, kw, g);
        var input = x.contiguous();
        var weights = weight.detach().contiguous();
        var biases = bias?.detach().contiguous();
        var output = empty([n, o, layout.OutH, layout.OutW]);
        float* inBase = Pointer(input), wBase = Pointer(weights), bBase = biases is null ? null : Pointer(biases), outBase = Pointer(output);
        TensorThreads.For((int)(n * o), item =>
        {
            long image = item / o, channel = item % o;
            fixed (float* buffer = layout.Rent())
            {
                layout.Fill(buffer, inBase + (image * c + channel / m) * h * w);
                layout.Rows(buffer, wBase + channel * kh * kw, bBase is null ? 0f : bBase[channel], outBase + item * layout.OutH * layout.OutW);
            }
        });
        return scope.MoveToOuter(output);
    }

    /// <summary>The transposed convolution: the gradient of <see cref="Forward"/> with respect to an input of
    /// <paramref name="channels"/> × <paramref name="h"/> × <paramref name="w"/>, for the output gradient
    /// <paramref name="grad"/> (N × C_in·m × OH × OW).</summary>
    public static unsafe Tensor Transposed(Tensor grad, Tensor weight, Geometry g, long channels, long h, long w)
    {
        Interlocked.Increment(ref _calls);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long n = grad.shape[0], o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3], m = o / channels;
        var layout = new Layout(h, w, kh, kw, g);
        if (grad.dim() != 4 || grad.shape[1] != o || grad.shape[2] != layout.OutH || grad.shape[3] != layout.OutW || m * channels != o)
            throw new ArgumentException($"depthwise convolution: a gradient of [{string.Join(", ", grad.shape)}] does not fit {channels} channels of {h}×{w} and a weight of [{string.Join(", ", weight.shape)}]");
        var upstream = grad.to(ScalarType.Float32).contiguous();
        var weights = weight.detach().contiguous();
        var result = empty([n, channels, h, w]);
        float* gBase = Pointer(upstream), wBase = Pointer(weights), rBase = Pointer(result);
        TensorThreads.For((int)(n * channels), item =>
        {
            long image = item / channels, channel = item % channels;
            fixed (float* buffer = layout.Rent())
            {
                layout.Clear(buffer);
                for (long k = 0; k < m; k++)
                {
                    long outChannel = channel * m + k;
                    layout.Scatter(buffer, wBase + outChannel * kh * kw, gBase + (image * o + outChannel) * layout.OutH * layout.OutW);
                }
                layout.Extract(buffer, rBase + item * h * w);
            }
        });
        return scope.MoveToOuter(result);
    }

    static unsafe float* Pointer(Tensor t)
    {
        fixed (byte* p = t.bytes) return (float*)p;   // libtorch's storage: it does not move
    }

    /// <summary>One convolution's padded, phase-split plane: padded row r, column s·t + q at [(r·s + q)·Run + t]; then
    /// a row of accumulators (or of one output row's gradient, zero past its end) of whole vectors.</summary>
    sealed class Layout
    {
        const int Lanes = 8;
        readonly long _h, _w, _kh, _kw, _ph, _pw, _sh, _s, _dh, _dw, _paddedH, _run, _row;
        public readonly long OutH, OutW;
        readonly long[] _taps;

        [ThreadStatic] static float[]? _buffer;
        /// <summary>The layout whose padding this thread's buffer holds as zeros (a <see cref="Fill"/> writes only the
        /// inner part, the same places each time), or null.</summary>
        [ThreadStatic] static (long, long, long, long, long, long)? _zeroedFor;

        (long, long, long, long, long, long) Key => (_h, _w, _ph, _pw, _s, _run);

        public Layout(long h, long w, long kh, long kw, Geometry g)
        {
            (_h, _w, _kh, _kw, _ph, _pw, _sh, _s, _dh, _dw) = (h, w, kh, kw, g.PadH, g.PadW, g.StrideH, g.StrideW, g.DilationH, g.DilationW);
            OutH = Geometry.Out(h, g.PadH, g.DilationH, kh, g.StrideH);
            OutW = Geometry.Out(w, g.PadW, g.DilationW, kw, g.StrideW);
            _paddedH = h + 2 * _ph;
            _row = (OutW + Lanes - 1) / Lanes * Lanes;
            // A tap's run starts at (j·d_w) / s and a row of outputs reads _row values from it.
            _run = Math.Max((w + 2 * _pw + _s - 1) / _s, (kw - 1) * _dw / _s + _row) + Lanes;
            _taps = new long[kh * kw];
            for (long i = 0; i < kh; i++)
                for (long j = 0; j < kw; j++)
                    _taps[i * kw + j] = (i * _dh * _s + j * _dw % _s) * _run + j * _dw / _s;   // offset from row y·s_h's start
        }

        long PlaneLength => _paddedH * _s * _run;

        /// <summary>This thread's buffer, at least a plane and a row of accumulators long.</summary>
        public float[] Rent()
        {
            long length = PlaneLength + _row + Lanes;
            if (length > Array.MaxLength) throw new ArgumentException("depthwise convolution: the padded plane is too large");
            if (_buffer is null || _buffer.Length < length)
            {
                _buffer = GC.AllocateUninitializedArray<float>((int)length);
                _zeroedFor = null;
            }
            return _buffer;
        }

        /// <summary>Zeros the whole plane (the transposed convolution accumulates into it).</summary>
        public unsafe void Clear(float* buffer)
        {
            new Span<float>(buffer, (int)PlaneLength).Clear();
            _zeroedFor = null;   // what it accumulates lands on the padding too
        }

        /// <summary>The zero-padded plane from an H×W input: the padding is cleared only when this thread's buffer last
        /// held another layout.</summary>
        public unsafe void Fill(float* buffer, float* plane)
        {
            if (_zeroedFor != Key)
            {
                new Span<float>(buffer, (int)PlaneLength).Clear();
                _zeroedFor = Key;
            }
            for (long r = 0; r < _h; r++)
            {
                long pr = r + _ph;
                float* src = plane + r * _w, row = buffer + pr * _s * _run;
                if (_s == 1) new ReadOnlySpan<float>(src, (int)_w).CopyTo(new Span<float>(row + _pw, (int)_w));
                else if (_s == 2) Split(src, row);
                else
                    for (long q = 0; q < _w; q++)
                    {
                        long pc = q + _pw;
                        row[pc % _s * _run + pc / _s] = src[q];
                    }
            }
        }

        /// <summary>The inner H×W part of the plane into <paramref name="plane"/>.</summary>
        public unsafe void Extract(float* buffer, float* plane)
        {
            for (long r = 0; r < _h; r++)
            {
                long pr = r + _ph;
                float* dst = plane + r * _w, row = buffer + pr * _s * _run;
                if (_s == 1) new ReadOnlySpan<float>(row + _pw, (int)_w).CopyTo(new Span<float>(dst, (int)_w));
                else if (_s == 2) Join(row, dst);
                else
                    for (long q = 0; q < _w; q++)
                    {
                        long pc = q + _pw;
                        dst[q] = row[pc % _s * _run + pc / _s];
                    }
            }
        }

        // Stride 2: input column q is padded column q + p_w, so the even q go to one phase and the odd q to the other,
        // each a contiguous run: (phase, start) of the even q and of the odd q.
        (long Phase, long Start) Even => (_pw & 1, _pw >> 1);
        (long Phase, long Start) Odd => ((_pw + 1) & 1, (_pw + 1) >> 1);

        static readonly Vector256<int> Deal = Vector256.Create(0, 2, 4, 6, 1, 3, 5, 7);
        static readonly Vector256<int> Merge = Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7);

        /// <summary>One input row into its padded row's two phases (stride 2), 16 values at a time.</summary>
        unsafe void Split(float* src, float* row)
        {
            float* even = row + Even.Phase * _run + Even.Start, odd = row + Odd.Phase * _run + Odd.Start;
            long q = 0;
            if (System.Runtime.Intrinsics.X86.Avx2.IsSupported)
                for (; q + 16 <= _w; q += 16)
                {
                    var a = System.Runtime.Intrinsics.X86.Avx2.PermuteVar8x32(Vector256.Load(src + q), Deal);        // a0 a2 a4 a6 a1 a3 a5 a7
                    var b = System.Runtime.Intrinsics.X86.Avx2.PermuteVar8x32(Vector256.Load(src + q + 8), Deal);
                    System.Runtime.Intrinsics.X86.Avx.Permute2x128(a, b, 0x20).Store(even + q / 2);
                    System.Runtime.Intrinsics.X86.Avx.Permute2x128(a, b, 0x31).Store(odd + q / 2);
                }
            for (; q < _w; q++) (q % 2 == 0 ? even : odd)[q / 2] = src[q];
        }

        /// <summary>The inverse of <see cref="Split"/>: a padded row's two phases back into one row.</summary>
        unsafe void Join(float* row, float* dst)
        {
            float* even = row + Even.Phase * _run + Even.Start, odd = row + Odd.Phase * _run + Odd.Start;
            long q = 0;
            if (System.Runtime.Intrinsics.X86.Avx2.IsSupported)
                for (; q + 16 <= _w; q += 16)
                {
                    var e = Vector256.Load(even + q / 2);
                    var o = Vector256.Load(odd + q / 2);
                    System.Runtime.Intrinsics.X86.Avx2.PermuteVar8x32(System.Runtime.Intrinsics.X86.Avx.Permute2x128(e, o, 0x20), Merge).Store(dst + q);
                    System.Runtime.Intrinsics.X86.Avx2.PermuteVar8x32(System.Runtime.Intrinsics.X86.Avx.Permute2x128(e, o, 0x31), Merge).Store(dst + q + 8);
                }
            for (; q < _w; q++) dst[q] = (q % 2 == 0 ? even : odd)[q / 2];
        }

        /// <summary>One output channel: out[y, x] = bias + Σ_taps w[i, j]·padded[y·s_h + i·d_h, x·s_w + j·d_w].</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public unsafe void Rows(float* buffer, float* weights, float bias, float* output)
        {
            float* acc = buffer + PlaneLength;
            int tapCount = _taps.Length;
            fixed (long* taps = _taps)
                for (long y = 0; y < OutH; y++)
                {
                    float* start = buffer + y * _sh * _s * _run;
                    for (long t = 0; t < _row; t += Lanes)
                    {
                        var a = Vector256.Create(bias);
                        float* at = start + t;
                        for (int k = 0; k < tapCount; k++)
                            a = Vector256.FusedMultiplyAdd(Vector256.Create(weights[k]), Vector256.Load(at + taps[k]), a);
                        a.Store(acc + t);
                    }
                    new ReadOnlySpan<float>(acc, (int)OutW).CopyTo(new Span<float>(output + y * OutW, (int)OutW));
                }
        }

        /// <summary>Adds one output channel's gradient into the plane: padded[y·s_h + i·d_h, x·s_w + j·d_w] += w[i, j]·grad[y, x].</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public unsafe void Scatter(float* buffer, float* weights, float* grad)
        {
            float* row = buffer + PlaneLength;
            new Span<float>(row + OutW, (int)(_row - OutW)).Clear();   // past the row's end: zeros, which add nothing
            int tapCount = _taps.Length;
            fixed (long* taps = _taps)
                for (long y = 0; y < OutH; y++)
                {
                    new ReadOnlySpan<float>(grad + y * OutW, (int)OutW).CopyTo(new Span<float>(row, (int)OutW));
                    float* start = buffer + y * _sh * _s * _run;
                    for (int k = 0; k < tapCount; k++)
                    {
                        var wk = Vector256.Create(weights[k]);
                        float* at = start + taps[k];
                        for (long t = 0; t < _row; t += Lanes)
                            Vector256.FusedMultiplyAdd(wk, Vector256.Load(row + t), Vector256.Load(at + t)).Store(at + t);
                    }
                }
        }
    }
}

/// <summary><see cref="DepthwiseConvolution.Forward"/> with its input gradient, the transposed convolution (recorded
/// as <see cref="DepthwiseTransposedFunction"/> under <c>create_graph</c>).</summary>
sealed class DepthwiseFunction : GuardedFunction<DepthwiseFunction>
{
    public override string Name => "LoupeDepthwiseConvolution";

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var x = (Tensor)vars[0];
        var weight = (Tensor)vars[1];
        var g = (DepthwiseConvolution.Geometry)vars[3];
        ctx.save_for_backward([weight]);   // the weights as they were: a later in-place change does not reach this graph
        ctx.save_data("geometry", g);
        ctx.save_data("input", new long[] { x.shape[1], x.shape[2], x.shape[3] });
        return DepthwiseConvolution.Forward(x, weight, vars[2] as Tensor, g);
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        var g = (DepthwiseConvolution.Geometry)ctx.get_data("geometry");
        var input = (long[])ctx.get_data("input");
        var weight = ctx.get_saved_variables()[0];
        var gradient = is_grad_enabled()
            ? DepthwiseTransposedFunction.apply(grad, weight, g, input)
            : DepthwiseConvolution.Transposed(grad, weight, g, input[0], input[1], input[2]);
        return [gradient, null!, null!, null!];
    }
}

/// <summary><see cref="DepthwiseConvolution.Transposed"/>, whose gradient is the forward convolution again.</summary>
sealed class DepthwiseTransposedFunction : GuardedFunction<DepthwiseTransposedFunction>
{
    public override string Name => "LoupeDepthwiseConvolutionTransposed";

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var weight = (Tensor)vars[1];
        var g = (DepthwiseConvolution.Geometry)vars[2];
        var input = (long[])vars[3];
        ctx.save_for_backward([weight]);
        ctx.save_data("geometry", g);
        return DepthwiseConvolution.Transposed((Tensor)vars[0], weight, g, input[0], input[1], input[2]);
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        var g = (DepthwiseConvolution.Geometry)ctx.get_data("geometry");
        var weight = ctx.get_saved_variables()[0];
        var gradient = is_grad_enabled() ? DepthwiseFunction.apply(grad, weight, null!, g) : DepthwiseConvolution.Forward(grad, weight, null, g);
        return [gradient, null!, null!, null!];
    }
}
