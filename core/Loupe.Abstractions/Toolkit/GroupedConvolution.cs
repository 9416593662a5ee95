using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
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
public static class GroupedConvolution
{
    /// <summary>Widest group (input channels per group) run here: wider groups make matrix products large enough for
    /// ATen's per-group path.</summary>
    public const long MaxGroupWidth = 16;

    /// <summary>Whether grouped convolutions run here in this process: oneDNN's are off (<see cref="TorchNative"/>)
    /// and the processor has 256-bit vectors.</summary>
    public static bool Enabled { get; } = TorchNative.Configure() && Vector256.IsHardwareAccelerated;

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
    /// frozen weight and bias; positive strides and dilations, non-negative padding, an output of at least one position.</summary>
    public static bool Shaped(Tensor x, Tensor weight, Tensor? bias, long[] stride, long[] padding, long[] dilation, long groups)
    {
        if (x.dim() != 4 || weight.dim() != 4 || groups <= 1 || x.shape[1] % groups != 0 || weight.shape[1] != x.shape[1] / groups
            || weight.shape[1] > MaxGroupWidth || weight.shape[0] % groups != 0 || stride.Length != 2 || padding.Length != 2 || dilation.Length != 2)
            return false;
        if (x.dtype != ScalarType.Float32 || x.device_type != DeviceType.CPU || weight.dtype != ScalarType.Float32 || weight.device_type != DeviceType.CPU
            || weight.requires_grad || bias is { requires_grad: true }
            || bias is { } b && (b.dtype != ScalarType.Float32 || b.device_type != DeviceType.CPU || b.numel() != weight.shape[0]))
            return false;
        if (stride.Any(s => s < 1) || padding.Any(p => p < 0) || dilation.Any(d => d < 1)) return false;
        return Geometry.Out(x.shape[2], padding[0], dilation[0], weight.shape[2], stride[0]) >= 1
            && Geometry.Out(x.shape[3], padding[1], dilation[1], weight.shape[3], stride[1]) >= 1
            && x.shape[0] * groups <= int.MaxValue;
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

    static unsafe float* Pointer(Tensor t)
    {
        fixed (byte* p = t.bytes) return (float*)p;   // libtorch's storage: it does not move
    }

    /// <summary>One convolution's padded, phase-split planes (a group's channels one after another): padded row r,
    /// column s·t + q at [(r·s + q)·Run + t]; then a row of accumulators (or of one output row's gradient, zero past its
    /// end) of whole vectors.</summary>
    sealed class Layout
    {
        const int Lanes = 8;
        readonly long _h, _w, _ph, _pw, _sh, _s, _dh, _kh, _kw, _paddedH, _run, _row, _planes, _margin, _gradRow;
        public readonly long OutH, OutW;
        readonly long[] _taps;
        /// <summary>Per column phase φ of the input gradient: the taps j whose columns land there, and where they read
        /// the output gradient's row (x = t + offset for padded column s·t + φ).</summary>
        readonly (int Tap, long Offset)[][] _phaseTaps;

        [ThreadStatic] static float[]? _buffer;
        /// <summary>The layout whose padding this thread's buffer holds as zeros (a <see cref="Fill"/> writes only the
        /// inner parts, the same places each time), or null.</summary>
        [ThreadStatic] static (long, long, long, long, long, long, long)? _zeroedFor;

        (long, long, long, long, long, long, long) Key => (_h, _w, _ph, _pw, _s, _run, _planes);

        public Layout(long h, long w, long kh, long kw, long planes, Geometry g)
        {
            (_h, _w, _ph, _pw, _sh, _s, _dh, _kh, _kw, _planes) = (h, w, g.PadH, g.PadW, g.StrideH, g.StrideW, g.DilationH, kh, kw, planes);
            OutH = Geometry.Out(h, g.PadH, g.DilationH, kh, g.StrideH);
            OutW = Geometry.Out(w, g.PadW, g.DilationW, kw, g.StrideW);
            _paddedH = h + 2 * _ph;
            _row = (OutW + Lanes - 1) / Lanes * Lanes;
            // A tap's run starts at (j·d_w) / s and a row of outputs reads _row values from it.
            _run = Math.Max((w + 2 * _pw + _s - 1) / _s, (kw - 1) * g.DilationW / _s + _row) + Lanes;
            _taps = new long[kh * kw];
            for (long i = 0; i < kh; i++)
                for (long j = 0; j < kw; j++)
                    _taps[i * kw + j] = (i * g.DilationH * _s + j * g.DilationW % _s) * _run + j * g.DilationW / _s;   // from row y·s_h's start
            // The transposed convolution gathers: padded column s·t + φ receives from output column x = (s·t + φ − j·d_w)/s
            // = t + (φ − j·d_w)/s for the taps j with φ ≡ j·d_w (mod s). Output-gradient rows are kept with zeros on both
            // sides, so that every t of a run reads a value.
            _phaseTaps = new (int, long)[_s][];
            for (long phase = 0; phase < _s; phase++)
                _phaseTaps[phase] = [.. Enumerable.Range(0, (int)kw).Where(j => (phase - j * g.DilationW) % _s == 0).Select(j => (j, (phase - j * g.DilationW) / _s))];
            _margin = (kw - 1) * g.DilationW / _s + 1;
            _gradRow = _margin + Math.Max(OutW, _run) + Lanes;
        }

        long PlaneLength => _paddedH * _s * _run;

        /// <summary>This thread's buffer, at least the planes and a row of accumulators long, and
        /// <paramref name="gradients"/> output-gradient planes with their margins.</summary>
        public float[] Rent(long gradients = 0)
        {
            long length = _planes * PlaneLength + _row + Lanes + gradients * OutH * _gradRow;
            if (length > Array.MaxLength) throw new ArgumentException("grouped convolution: the padded planes are too large");
            if (_buffer is null || _buffer.Length < length)
            {
                _buffer = GC.AllocateUninitializedArray<float>((int)length);
                _zeroedFor = null;
            }
            return _buffer;
        }

        /// <summary>The zero-padded planes from the group's H×W input planes: the padding is cleared only when this
        /// thread's buffer last held another layout.</summary>
        public unsafe void Fill(float* buffer, float* input)
        {
            if (_zeroedFor != Key)
            {
                new Span<float>(buffer, checked((int)(_planes * PlaneLength))).Clear();
                _zeroedFor = Key;
            }
            for (long c = 0; c < _planes; c++)
                for (long r = 0; r < _h; r++)
                {
                    float* src = input + (c * _h + r) * _w, row = buffer + c * PlaneLength + (r + _ph) * _s * _run;
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

        /// <summary>The planes' inner H×W parts into the group's input planes.</summary>
        public unsafe void Extract(float* buffer, float* input)
        {
            for (long c = 0; c < _planes; c++)
                for (long r = 0; r < _h; r++)
                {
                    float* dst = input + (c * _h + r) * _w, row = buffer + c * PlaneLength + (r + _ph) * _s * _run;
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
            if (Avx2.IsSupported)
                for (; q + 16 <= _w; q += 16)
                {
                    var a = Avx2.PermuteVar8x32(Vector256.Load(src + q), Deal);        // a0 a2 a4 a6 a1 a3 a5 a7
                    var b = Avx2.PermuteVar8x32(Vector256.Load(src + q + 8), Deal);
                    Avx.Permute2x128(a, b, 0x20).Store(even + q / 2);
                    Avx.Permute2x128(a, b, 0x31).Store(odd + q / 2);
                }
            for (; q < _w; q++) (q % 2 == 0 ? even : odd)[q / 2] = src[q];
        }

        /// <summary>The inverse of <see cref="Split"/>: a padded row's two phases back into one row.</summary>
        unsafe void Join(float* row, float* dst)
        {
            float* even = row + Even.Phase * _run + Even.Start, odd = row + Odd.Phase * _run + Odd.Start;
            long q = 0;
            if (Avx2.IsSupported)
                for (; q + 16 <= _w; q += 16)
                {
                    var e = Vector256.Load(even + q / 2);
                    var o = Vector256.Load(odd + q / 2);
                    Avx2.PermuteVar8x32(Avx.Permute2x128(e, o, 0x20), Merge).Store(dst + q);
                    Avx2.PermuteVar8x32(Avx.Permute2x128(e, o, 0x31), Merge).Store(dst + q + 8);
                }
            for (; q < _w; q++) dst[q] = (q % 2 == 0 ? even : odd)[q / 2];
        }

        /// <summary>One output channel: out[y, x] = bias + Σ_c Σ_taps w[c, i, j]·padded_c[y·s_h + i·d_h, x·s_w + j·d_w].</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public unsafe void Rows(float* buffer, float* weights, float bias, float* output)
        {
            float* acc = buffer + _planes * PlaneLength;
            int tapCount = _taps.Length;
            long planeLength = PlaneLength;
            fixed (long* taps = _taps)
                for (long y = 0; y < OutH; y++)
                {
                    float* start = buffer + y * _sh * _s * _run;
                    for (long t = 0; t < _row; t += Lanes)
                    {
                        var a = Vector256.Create(bias);
                        float* wk = weights;
                        for (long c = 0; c < _planes; c++)
                        {
                            float* at = start + c * planeLength + t;
                            for (int k = 0; k < tapCount; k++)
                                a = Vector256.FusedMultiplyAdd(Vector256.Create(wk[k]), Vector256.Load(at + taps[k]), a);
                            wk += tapCount;
                        }
                        a.Store(acc + t);
                    }
                    new ReadOnlySpan<float>(acc, (int)OutW).CopyTo(new Span<float>(output + y * OutW, (int)OutW));
                }
        }

        /// <summary>The transposed convolution of one group into its planes' inner rows (phase-split, as
        /// <see cref="Extract"/> reads them): padded_c[r, s·t + φ] = Σ_k Σ_i Σ_j w[k, c, i, j]·grad_k[y, x] over the
        /// output channels k of the group and the taps with r = y·s_h + i·d_h and s·t + φ = x·s_w + j·d_w, each vector of
        /// 8 in a register.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public unsafe void Gather(float* buffer, float* weights, float* grad, long outputs)
        {
            _zeroedFor = null;   // the runs written reach into the padding columns
            float* rows = buffer + _planes * PlaneLength + _row + Lanes;
            new Span<float>(rows, checked((int)(outputs * OutH * _gradRow))).Clear();
            for (long k = 0; k < outputs; k++)
                for (long y = 0; y < OutH; y++)
                    new ReadOnlySpan<float>(grad + (k * OutH + y) * OutW, (int)OutW).CopyTo(new Span<float>(rows + (k * OutH + y) * _gradRow + _margin, (int)OutW));
            long taps = _kh * _kw, perOutput = _planes * taps, planeLength = PlaneLength;
            Span<long> ys = stackalloc long[(int)_kh];
            Span<int> iis = stackalloc int[(int)_kh];
            for (long r = _ph; r < _ph + _h; r++)
            {
                int count = 0;
                for (int i = 0; i < _kh; i++)
                {
                    long from = r - i * _dh;
                    if (from < 0 || from % _sh != 0 || from / _sh >= OutH) continue;
                    ys[count] = from / _sh;
                    iis[count++] = i;
                }
                for (long c = 0; c < _planes; c++)
                    for (long phase = 0; phase < _s; phase++)
                    {
                        float* dst = buffer + c * planeLength + (r * _s + phase) * _run;
                        var phaseTaps = _phaseTaps[phase];
                        for (long t = 0; t < _run - Lanes; t += Lanes)
                        {
                            var a = Vector256<float>.Zero;
                            for (long k = 0; k < outputs; k++)
                            {
                                float* wk = weights + k * perOutput + c * taps;
                                float* gk = rows + k * OutH * _gradRow + _margin + t;
                                for (int q = 0; q < count; q++)
                                {
                                    float* g = gk + ys[q] * _gradRow;
                                    float* wi = wk + iis[q] * _kw;
                                    foreach (var (tap, offset) in phaseTaps)
                                        a = Vector256.FusedMultiplyAdd(Vector256.Create(wi[tap]), Vector256.Load(g + offset), a);
                                }
                            }
                            a.Store(dst + t);
                        }
                    }
            }
        }
    }
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
