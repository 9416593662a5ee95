using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

/// <summary>2-D convolutions (any kernel size, zero padding, dilation, strides up to <see cref="MaxStride"/>; one group;
/// float32) on Loupe's own
/// AVX-512 kernel, for processes where libtorch's oneDNN convolutions are off (<see cref="TorchNative"/>). There, libtorch
/// falls back to ATen's "slow" convolution — an im2col copy and a small matrix product per image — which on a 2-core
/// AVX-512 machine ran the demo CNN's 32 → 64 channel 14×14 layer at batch 256 in 16–20 ms against oneDNN's 6–7 ms.
/// <para>How: the input is laid out once zero-padded, each image's channels as flat planes of H'·W' values (H' = H +
/// 2·pad, W' = W + 2·pad). Output position (y, x) is flat position f = y·W' + x of that grid, and kernel tap (i, j)
/// reads the planes at f + i·d·W' + j·d: one offset per tap for every position. Positions are computed twelve at a
/// time for 32 output channels at a time, the 24 sums (12 positions × two 16-wide vectors) in registers: per input
/// channel and tap, two weight vectors and twelve broadcast inputs feed 24 multiply-adds. The W' − W_out positions of
/// each row that straddle two rows are computed and dropped (2 of 16 at 14×14 for a 3×3 kernel). Sums run over the
/// input channels and taps in order, so results differ from ATen's by float rounding only.</para>
/// <para>The input gradient is the same convolution of the output gradient with the kernel flipped and its channel
/// axes swapped, padded by d·(k − 1) − pad (stride 1), itself differentiable (a backward with <c>create_graph</c>, as
/// ShapleyCAM's Hessian-vector products take, records it). Weights must be frozen: no weight gradient is computed.
/// The TorchSharp backend runs a model's convolutions here where <see cref="Enabled"/>; the ONNX backend its Conv
/// nodes.</para></summary>
public static partial class DirectConvolution
{
    /// <summary>Output positions per register tile.</summary>
    const int Tile = 12;

    /// <summary>Output channels per register tile (two 16-wide vectors).</summary>
    const int Block = 32;

    /// <summary>Tiles one work item computes (one image, one block of channels).</summary>
    const int TilesPerItem = 32;

    /// <summary>Whether convolutions run here in this process: oneDNN's are off (<see cref="TorchNative"/>) and the
    /// processor has AVX-512. Tests can force it.</summary>
    public static bool Enabled { get; } = TorchNative.Configure() && Vector512.IsHardwareAccelerated;

    static long _calls;

    /// <summary>Convolutions run here so far in this process (forward and input-gradient calls).</summary>
    public static long Calls => Interlocked.Read(ref _calls);

    /// <summary>Whether <c>F.conv2d(x, weight, bias, stride, padding, dilation, groups)</c> can run here where it is
    /// <see cref="Enabled"/> (see the class comment): strides up to <see cref="MaxStride"/>, one group, float32 on the CPU, frozen weights, and
    /// padding ≤ d·(k − 1) on both axes (which the input gradient needs); a 1×1 kernel only with at least 128 input
    /// channels on maps of at most 1,024 output positions (below).</summary>
    public static bool Applies(Tensor x, Tensor weight, Tensor? bias, long[] stride, long[] padding, long[] dilation, long groups)
    {
        if (!Enabled || groups != 1 || stride.Length != 2 || stride.Any(s => s is < 1 or > MaxStride) || padding.Length != 2 || dilation.Length != 2
            || x.dim() != 4 || x.dtype != ScalarType.Float32 || x.device_type != DeviceType.CPU) return false;
        if (weight.dtype != ScalarType.Float32 || weight.requires_grad || weight.dim() != 4 || weight.shape[1] != x.shape[1]
            || weight.device_type != DeviceType.CPU || bias is { requires_grad: true } || bias is { } b && (b.dtype != ScalarType.Float32 || b.device_type != DeviceType.CPU)) return false;
        long kh = weight.shape[2], kw = weight.shape[3];
        if (!(padding[0] >= 0 && padding[1] >= 0 && padding[0] <= dilation[0] * (kh - 1) && padding[1] <= dilation[1] * (kw - 1)
            && x.shape[2] + 2 * padding[0] > dilation[0] * (kh - 1) && x.shape[3] + 2 * padding[1] > dilation[1] * (kw - 1))) return false;
        // A 1×1 convolution does one multiply-add per input channel and output, so writing its output (and the layout
        // copies) weighs as much as the arithmetic: libtorch's product, which writes NCHW directly, is faster on wide
        // maps or few input channels (resnet50 b8: 64 → 256 at 56×56 5.1 against 9.4 ms; 1024 → 256 at 14×14 5.2
        // against 3.4 ms here; `Loupe.Benchmarks.dll --conv-layers 7 pointwise` and `strided`).
        long outputs = ((x.shape[2] - 1) / stride[0] + 1) * ((x.shape[3] - 1) / stride[1] + 1);
        return kh * kw > 1 || x.shape[1] >= 128 && outputs <= 1024;
    }

    /// <summary>Largest stride run here (a stride-s convolution reads s² phase planes of its input).</summary>
    public const int MaxStride = 4;

    /// <summary>The convolution (stride 1), differentiable to <paramref name="x"/> when it needs a gradient.</summary>
    public static Tensor Conv2d(Tensor x, Tensor weight, Tensor? bias, long[] padding, long[] dilation) => Conv2d(x, weight, bias, [1, 1], padding, dilation);

    /// <summary>The convolution, differentiable to <paramref name="x"/> when it needs a gradient: at stride 1 through this
    /// kernel both ways (<see cref="InputGradient"/>); at larger strides libtorch's convolution runs whenever a gradient
    /// is taken (this kernel's forward with libtorch's transposed convolution as the input gradient measured faster per
    /// layer, `--conv-layers 7 strided`, but resnet18's ONNX forward + backward with it swung between 280 and 359 ms
    /// against 311–372 ms without, its stem's transposed convolution now 22, now 63 ms: no clear gain), so only forward
    /// passes (perturbation methods, metrics) take the strided kernel.</summary>
    public static Tensor Conv2d(Tensor x, Tensor weight, Tensor? bias, long[] stride, long[] padding, long[] dilation)
    {
        var g = new Geometry(padding[0], padding[1], dilation[0], dilation[1], stride[0], stride[1]);
        if (!(x.requires_grad && is_grad_enabled())) return Forward(x, weight, bias, g);
        return stride[0] == 1 && stride[1] == 1 ? DirectConvolutionFunction.apply(x, weight, bias!, g)
            : nn.functional.conv2d(x, weight, bias, stride, padding, dilation);
    }

    /// <summary>Padding, dilation and stride of one convolution.</summary>
    internal sealed record Geometry(long PadH, long PadW, long DilationH, long DilationW, long StrideH = 1, long StrideW = 1);

    /// <summary><c>F.conv2d(x, weight, bias, stride=1, padding=(ph, pw), dilation=(dh, dw))</c>, NCHW result.</summary>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias, long ph, long pw, long dh, long dw) =>
        Forward(x, weight, bias, new Geometry(ph, pw, dh, dw));

    /// <summary><c>F.conv2d(x, weight, bias, stride, padding, dilation)</c>, NCHW result. A stride s·t convolution reads
    /// the zero-padded input split into s·t phase planes (rows ≡ a mod s, columns ≡ b mod t): output (y, x) then takes
    /// tap (i, j) from phase (i·d mod s, j·d mod t) at (y + ⌊i·d / s⌋, x + ⌊j·d / t⌋), one offset per tap as at stride 1,
    /// so the same register-tiled kernel runs every stride.</summary>
    internal static unsafe Tensor Forward(Tensor x, Tensor weight, Tensor? bias, Geometry geometry)
    {
        Interlocked.Increment(ref _calls);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (ph, pw, dh, dw, sh, sw) = geometry;
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        long o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3];
        long hp = h + 2 * ph, wp = w + 2 * pw, oh = (hp - dh * (kh - 1) - 1) / sh + 1, ow = (wp - dw * (kw - 1) - 1) / sw + 1;
        long gh = (hp + sh - 1) / sh, gw = (wp + sw - 1) / sw;   // one phase plane's grid (stride 1: the padded image)
        // The phases some tap reads, in order (a 1×1 kernel at stride 2 reads one of four), and each one's place.
        var place = new int[sh * sw];
        Array.Fill(place, -1);
        for (long i = 0; i < kh; i++)
            for (long j = 0; j < kw; j++) place[i * dh % sh * sw + j * dw % sw] = 0;
        long phases = 0;
        for (int a = 0; a < place.Length; a++) if (place[a] == 0) place[a] = (int)phases++;
        long positions = oh * gw, tiles = (positions + Tile - 1) / Tile;
        long reach = dh * (kh - 1) / sh * gw + dw * (kw - 1) / sw;
        long phasePlane = Math.Max(gh * gw, tiles * Tile + reach);   // tiles past the last row read zeros
        long plane = phases * phasePlane;
        long blocks = (o + Block - 1) / Block, chunks = (tiles + TilesPerItem - 1) / TilesPerItem, items = n * blocks * chunks;
        if (items > int.MaxValue || plane > int.MaxValue)   // more work items than one loop hands out: libtorch's convolution
            return scope.MoveToOuter(nn.functional.conv2d(x, weight, bias, [sh, sw], [ph, pw], [dh, dw]));
        Tensor input;
        if (sh * sw == 1)
        {
            // Each plane padded in one pass of its own (zeros around the rows, and past them to the plane's end), the
            // planes on libtorch's threads: libtorch's fill of the whole buffer and copy into it were two.
            input = empty([n, c, phasePlane]);
            var contiguousInput = x.contiguous();
            float* source = Pointer(contiguousInput), target = Pointer(input);
            // Runs of planes of ~64 K values per iteration (one iteration per 7×7 plane spent more on handing out work
            // than on copying).
            long planes = n * c, perItem = Math.Clamp((64L << 10) / phasePlane, 1, planes), runs = (planes + perItem - 1) / perItem;
            TensorThreads.For((int)runs, run =>
            {
                for (long i = run * perItem, end = Math.Min(planes, i + perItem); i < end; i++)
                    PadPlane(source + i * h * w, (int)h, (int)w, (int)ph, (int)pw, target + i * phasePlane, phasePlane);
            });
        }
        else
        {
            input = zeros([n, c, phases, phasePlane]);
            // Phase (a, b) holds padded rows a, a + s, … and columns b, b + t, …: input rows (a − pad) + s·k.
            var grid = input.narrow(3, 0, gh * gw).view(n, c, phases, gh, gw);
            for (long a = 0; a < sh; a++)
                for (long b = 0; b < sw; b++)
                {
                    if (place[a * sw + b] < 0) continue;
                    long firstRow = ((a - ph) % sh + sh) % sh, firstCol = ((b - pw) % sw + sw) % sw;   // the first input row and column there
                    if (firstRow >= h || firstCol >= w) continue;
                    long count = (h - firstRow + sh - 1) / sh, across = (w - firstCol + sw - 1) / sw;
                    long at = (firstRow + ph - a) / sh, atCol = (firstCol + pw - b) / sw;   // their place in the phase grid
                    var source = x[TensorIndex.Ellipsis, TensorIndex.Slice(firstRow, h, sh), TensorIndex.Slice(firstCol, w, sw)];
                    grid.select(2, place[a * sw + b]).narrow(2, at, count).narrow(3, atCol, across).copy_(source);
                }
        }
        long width = blocks * Block, k = c * kh * kw;
        // Weights per block of 32 output channels: k rows (channel, tap i, tap j) of 32 values, zero past the last
        // channel; packed in one pass, a block per iteration (libtorch's permute and pad were two copies, one reading
        // across the output channels: ~45 MB moved per resnet18 forward).
        var dense = weight.detach().contiguous();
        var packed = empty([blocks, k, Block]);
        float* from = Pointer(dense), to = Pointer(packed);
        TensorThreads.For((int)blocks, b => Pack(from + b * Block * k, (int)Math.Min(Block, o - b * Block), k, to + b * k * Block));
        var biases = zeros(width);
        if (bias is not null) biases.narrow(0, 0, o).copy_(bias.detach());
        // The result in NCHW, written by the work items themselves: each computes its tiles into a small buffer of its
        // thread (positions × 32 channels, in cache) and moves them to their channels' planes, dropping the positions
        // that straddle two rows. (A whole positions × channels result permuted to NCHW by libtorch afterwards was a
        // sixth of resnet18's forward.)
        var y = empty([n, o, oh, ow]);
        var taps = new int[kh * kw];
        for (long i = 0; i < kh; i++)
            for (long j = 0; j < kw; j++)
            {
                long r = i * dh, q = j * dw;
                taps[i * kw + j] = (int)(place[r % sh * sw + q % sw] * phasePlane + r / sh * gw + q / sw);
            }
        float* inBase = Pointer(input), wBase = Pointer(packed), bBase = Pointer(biases), yBase = Pointer(y);
        long outPlane = oh * ow;
        TensorThreads.For((int)items, item =>
        {
            long chunk = item % chunks, rest = item / chunks, block = rest % blocks, image = rest / blocks;
            long first = chunk * TilesPerItem, last = Math.Min(tiles, first + TilesPerItem);
            _scratch ??= new float[(TilesPerItem * Tile + 16) * Block];   // 16 spare positions (Scatter reads whole runs)
            fixed (float* scratch = _scratch)
            fixed (int* tapOffsets = taps)
            {
                // Tile t lands at scratch + (t − first)·12·32.
                Tiles(inBase + image * c * plane, plane, (int)c, tapOffsets, taps.Length, wBase + block * k * Block,
                    bBase + block * Block, scratch - first * Tile * Block, Block, first, last);
                Scatter(scratch, first * Tile, Math.Min(last * Tile, positions), gw, ow, (int)Math.Min(Block, o - block * Block),
                    yBase + (image * o + block * Block) * outPlane, outPlane);
            }
        });
        return scope.MoveToOuter(y);
    }

    /// <summary>The input gradient of <see cref="Forward(Tensor, Tensor, Tensor?, long, long, long, long)"/>: the output gradient convolved with the flipped,
    /// channel-swapped kernel, padded by d·(k − 1) − pad.</summary>
    public static Tensor InputGradient(Tensor grad, Tensor weight, long ph, long pw, long dh, long dw)
    {
        using var scope = NewDisposeScope();
        long kh = weight.shape[2], kw = weight.shape[3];
        var flipped = weight.detach().flip(2, 3).transpose(0, 1);
        return scope.MoveToOuter(Forward(grad.contiguous(), flipped, null, dh * (kh - 1) - ph, dw * (kw - 1) - pw, dh, dw));
    }

    /// <summary>The first float of a contiguous CPU float32 tensor's storage (also used by <see cref="GroupedConvolution"/>).</summary>
    internal static unsafe float* Pointer(Tensor t)
    {
        fixed (byte* p = t.bytes) return (float*)p;   // libtorch's storage: it does not move
    }

    /// <summary>Tiles [<paramref name="first"/>, <paramref name="last"/>) of one image and one block of 32 output
    /// channels: out[(t·12 + q)·width + lane] = bias + Σ_channel Σ_tap w[channel, tap, lane]·in[channel][t·12 + q + tap].
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Tiles(float* input, long plane, int channels, int* taps, int tapCount, float* weights, float* bias,
        float* output, long width, long first, long last)
    {
        var bias0 = Vector512.Load(bias);
        var bias1 = Vector512.Load(bias + 16);
        for (long t = first; t < last; t++)
        {
            Vector512<float> a0 = bias0, a1 = bias0, a2 = bias0, a3 = bias0, a4 = bias0, a5 = bias0,
                a6 = bias0, a7 = bias0, a8 = bias0, a9 = bias0, a10 = bias0, a11 = bias0;
            Vector512<float> b0 = bias1, b1 = bias1, b2 = bias1, b3 = bias1, b4 = bias1, b5 = bias1,
                b6 = bias1, b7 = bias1, b8 = bias1, b9 = bias1, b10 = bias1, b11 = bias1;
            float* wv = weights;
            float* tileInput = input + t * Tile;
            for (int ch = 0; ch < channels; ch++)
            {
                float* channelInput = tileInput + ch * plane;
                for (int tap = 0; tap < tapCount; tap++, wv += Block)
                {
                    float* p = channelInput + taps[tap];
                    var w0 = Vector512.Load(wv);
                    var w1 = Vector512.Load(wv + 16);
                    var v = Vector512.Create(p[0]); a0 = Vector512.FusedMultiplyAdd(w0, v, a0); b0 = Vector512.FusedMultiplyAdd(w1, v, b0);
                    v = Vector512.Create(p[1]); a1 = Vector512.FusedMultiplyAdd(w0, v, a1); b1 = Vector512.FusedMultiplyAdd(w1, v, b1);
                    v = Vector512.Create(p[2]); a2 = Vector512.FusedMultiplyAdd(w0, v, a2); b2 = Vector512.FusedMultiplyAdd(w1, v, b2);
                    v = Vector512.Create(p[3]); a3 = Vector512.FusedMultiplyAdd(w0, v, a3); b3 = Vector512.FusedMultiplyAdd(w1, v, b3);
                    v = Vector512.Create(p[4]); a4 = Vector512.FusedMultiplyAdd(w0, v, a4); b4 = Vector512.FusedMultiplyAdd(w1, v, b4);
                    v = Vector512.Create(p[5]); a5 = Vector512.FusedMultiplyAdd(w0, v, a5); b5 = Vector512.FusedMultiplyAdd(w1, v, b5);
                    v = Vector512.Create(p[6]); a6 = Vector512.FusedMultiplyAdd(w0, v, a6); b6 = Vector512.FusedMultiplyAdd(w1, v, b6);
                    v = Vector512.Create(p[7]); a7 = Vector512.FusedMultiplyAdd(w0, v, a7); b7 = Vector512.FusedMultiplyAdd(w1, v, b7);
                    v = Vector512.Create(p[8]); a8 = Vector512.FusedMultiplyAdd(w0, v, a8); b8 = Vector512.FusedMultiplyAdd(w1, v, b8);
                    v = Vector512.Create(p[9]); a9 = Vector512.FusedMultiplyAdd(w0, v, a9); b9 = Vector512.FusedMultiplyAdd(w1, v, b9);
                    v = Vector512.Create(p[10]); a10 = Vector512.FusedMultiplyAdd(w0, v, a10); b10 = Vector512.FusedMultiplyAdd(w1, v, b10);
                    v = Vector512.Create(p[11]); a11 = Vector512.FusedMultiplyAdd(w0, v, a11); b11 = Vector512.FusedMultiplyAdd(w1, v, b11);
                }
            }
            float* o = output + t * Tile * width;
            a0.Store(o); b0.Store(o + 16); o += width;
            a1.Store(o); b1.Store(o + 16); o += width;
            a2.Store(o); b2.Store(o + 16); o += width;
            a3.Store(o); b3.Store(o + 16); o += width;
            a4.Store(o); b4.Store(o + 16); o += width;
            a5.Store(o); b5.Store(o + 16); o += width;
            a6.Store(o); b6.Store(o + 16); o += width;
            a7.Store(o); b7.Store(o + 16); o += width;
            a8.Store(o); b8.Store(o + 16); o += width;
            a9.Store(o); b9.Store(o + 16); o += width;
            a10.Store(o); b10.Store(o + 16); o += width;
            a11.Store(o); b11.Store(o + 16);
        }
    }
}

/// <summary><see cref="DirectConvolution"/> with its own input gradient: under <c>create_graph</c> the gradient is
/// this function again (the flipped kernel, the complementary padding), so it can be differentiated once more.</summary>
sealed class DirectConvolutionFunction : GuardedFunction<DirectConvolutionFunction>
{
    public override string Name => "LoupeDirectConvolution";

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var x = (Tensor)vars[0];
        var weight = (Tensor)vars[1];
        var bias = vars[2] as Tensor;
        var g = (DirectConvolution.Geometry)vars[3];
        ctx.save_for_backward([weight]);   // the weights as they were: a later in-place change does not reach this graph
        ctx.save_data("geometry", g);
        return DirectConvolution.Forward(x, weight, bias, g);
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        var g = (DirectConvolution.Geometry)ctx.get_data("geometry");
        var weight = ctx.get_saved_variables()[0];
        if (!is_grad_enabled())
            return [DirectConvolution.InputGradient(grad, weight, g.PadH, g.PadW, g.DilationH, g.DilationW), null!, null!, null!];
        // Recorded (create_graph): the input gradient as this function of the gradient, itself differentiable.
        using var scope = NewDisposeScope();
        long kh = weight.shape[2], kw = weight.shape[3];
        var flipped = weight.detach().flip(2, 3).transpose(0, 1).contiguous();
        var back = new DirectConvolution.Geometry(g.DilationH * (kh - 1) - g.PadH, g.DilationW * (kw - 1) - g.PadW, g.DilationH, g.DilationW);
        return [scope.MoveToOuter(apply(grad.contiguous(), flipped, null!, back)), null!, null!, null!];
    }
}
