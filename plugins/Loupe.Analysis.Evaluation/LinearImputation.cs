using System.Runtime.CompilerServices;
using Loupe.Abstractions.Toolkit;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>ROAD's linear imputation (Rong et al. 2022): every unknown pixel equals the weighted mean of its in-image
/// 8-neighbours (weights 1/6 for the 4 direct ones, 1/12 for the diagonals), known neighbours fixed; per channel. The
/// system is symmetric positive definite when each unknown region touches a known pixel; all images × channels are
/// solved at once, in float64, by conjugate gradients with one step size per system (relative residual 1e-10; an
/// image whose pixels are all unknown stays at 0).
/// <para>Cost: on images this small every tensor call costs more than its arithmetic, so an iteration is kept to
/// about twenty elementwise calls: the stencil is separable, [1 2 1]ᵀ[1 2 1] / 12 minus the centre's 4/12, and runs
/// as two [1 2 1] passes over shifted views of one zero-padded copy (no float64 convolution, whose im2col costs as much
/// as ten such calls); the masked operator u (Σw − K) u is one product and one fused multiply-add (the search
/// directions are zero at known pixels already); the updates are in place; the residual is read every
/// <see cref="CheckEvery"/> iterations (one synchronising read instead of one per iteration).</para>
/// <para>Direct paths: even so, CG needs 80–100 iterations of ~18 tiny calls on 28×28 images and hundreds of
/// full-size ones on 224×224 images, so each image is solved exactly by a Cholesky factorisation instead (same numbers
/// to rounding; <see cref="DirectPath"/>): the banded one (<see cref="BandedImputation"/>, n·b²/2 multiply-adds, n the
/// unknowns and b the half-bandwidth of the system in raster order, or region by region on wide masks of at most 45 %
/// of their pixels unknown: <see cref="MaskComponents"/>) or the nested-dissection one
/// (<see cref="DissectedImputation"/>, ~n^1.5), whichever is estimated faster: every 28×28 mask banded, ImageNet-size
/// masks dissected from ~30 % unknown up, 112×112 ones from ~50 %. On the 40 systems of ROAD's five percentages on 8 inputs of 224×224 (blob-shaped masks, two
/// threads, `Loupe.Benchmarks.dll --road-large`): 11.3 s when the 70 % and 90 % masks went to CG, 1.1–1.5 s all banded,
/// 0.25–0.40 s with the dissection. CG is left for images whose factor would not fit <see cref="DirectEntries"/> (the
/// dissection's bound: ~600×600 pixels); images of one batch may take different paths.</para></summary>
public static class LinearImputation
{
    /// <summary>Iterations between two convergence checks.</summary>
    public const int CheckEvery = 4;

    /// <summary>Relative residual at which every system is solved.</summary>
    public const double Tolerance = 1e-10;

    /// <summary>Most float64 entries a direct solve's factor may hold (32 M, 256 MB per system being solved; a full
    /// 224×224 mask needs 11.7 M): larger systems take the conjugate-gradient path.</summary>
    public const long DirectEntries = 32L << 20;

    /// <summary>x (N×C×H×W) with the pixels where <paramref name="unknown"/> (N×1×H×W bool) imputed; float64.
    /// <paramref name="solver"/> forces one path (tests); by default each image is solved directly when its factor holds
    /// at most <paramref name="directEntries"/> entries, else by conjugate gradients.</summary>
    public static Tensor Solve(Tensor x, Tensor unknown, ImputationSolver solver = ImputationSolver.Auto, long directEntries = DirectEntries)
    {
        if (solver == ImputationSolver.ConjugateGradient) return ConjugateGradient(x, unknown);
        using var scope = NewDisposeScope();
        int n = (int)x.shape[0], c = (int)x.shape[1], h = (int)x.shape[2], w = (int)x.shape[3];
        var mask = unknown.to(ScalarType.Bool).reshape(n, h * w).cpu().contiguous();
        var data = x.to(ScalarType.Float64, copy: true).cpu().contiguous();   // its own copy: solved in place
        SolveInPlace(data, mask, n, c, h, w, solver, directEntries);
        return scope.MoveToOuter(data.to(x.device));
    }

    /// <summary>ROAD's noisy imputation of every input at every point, in one call: copy j of input i (row i·P + j of
    /// the (N·P)×C×H×W result, in x's dtype) has the pixels with <paramref name="rank"/>[i] &lt;
    /// <paramref name="limits"/>[j] imputed, plus σ times its noise there. <paramref name="rank"/>: N×(H·W), each row a
    /// permutation of 0..H·W−1 (a pixel's place in the removal order), so that copy j has exactly
    /// u_j = min(limits[j], H·W) unknown pixels. <paramref name="noise"/>: N×(C·Σ_j u_j), only the values that are
    /// used: input i's row holds point after point, each point's C·u_j values channel after channel, each channel's
    /// over the point's unknown pixels in raster order (<see cref="NoiseLength"/>). The same numbers as
    /// <see cref="Solve"/> on the expanded copies and their masks, then the noise; the masks, copies and noise never
    /// become tensors (each of those steps was a tensor call costing more than its arithmetic on ROAD's small
    /// images). Where every copy takes the banded path (images at most 39 pixels wide), the copies of one point — the
    /// same number of unknowns — are solved together, one per vector lane (<see cref="LaneImputation"/>): ROAD's 40
    /// copies of the bench row in 1.0 instead of 1.3 ms on two threads (`Loupe.Benchmarks.dll --profile-road 301 2
    /// noisy`).</summary>
    public static Tensor Noisy(Tensor x, Tensor rank, long[] limits, Tensor noise, double sigma, long directEntries = DirectEntries)
    {
        using var scope = NewDisposeScope();
        int n = (int)x.shape[0], c = (int)x.shape[1], h = (int)x.shape[2], w = (int)x.shape[3], hw = h * w, chw = c * hw, p = limits.Length;
        var unknowns = limits.Select(l => (int)Math.Clamp(l, 0, hw)).ToArray();
        var starts = new long[p];   // where each point's noise starts in an input's row
        for (int j = 1; j < p; j++) starts[j] = starts[j - 1] + (long)c * unknowns[j - 1];
        long perInput = NoiseLength(limits, c, hw);
        if (noise.numel() != n * perInput)
            throw new ArgumentException($"ROAD imputation: the noise holds {noise.numel()} values, not N·C·Σ unknowns = {n * perInput}");
        var rankTensor = rank.to(ScalarType.Int64).reshape(n, hw).cpu().contiguous();
        var pixelTensor = x.to(ScalarType.Float64).reshape(n, chw).cpu().contiguous();
        // The noise as drawn (float32 normally: no conversion pass; other types become float64).
        var noiseTensor = (noise.dtype == ScalarType.Float32 ? noise : noise.to(ScalarType.Float64)).reshape(n, perInput).cpu().contiguous();
        bool single = noiseTensor.dtype == ScalarType.Float32;
        // The result in x's type when it is float32 or float64 (else float64, converted at the end): each copy is
        // solved in a per-thread float64 buffer and written once, with no N·P×C×H×W float64 intermediate (48 MB for
        // ROAD's 40 copies of 224×224, paged in and converted on every call).
        var result = empty([n * p, c, h, w], x.dtype == ScalarType.Float32 ? ScalarType.Float32 : ScalarType.Float64);
        bool singleOut = result.dtype == ScalarType.Float32;
        var maskTensor = empty([n * p, hw], ScalarType.Bool);
        void Finish(int image, Span<double> d)
        {
            var m = Cells<bool>(maskTensor).Slice(image * hw, hw);
            long at = (long)(image / p) * perInput + starts[image % p];
            int count = c * unknowns[image % p];
            if (single)
            {
                var z = Cells<float>(noiseTensor).Slice((int)at, count);
                if (singleOut) Write(d, m, z, sigma, Cells<float>(result).Slice(image * chw, chw), c, hw);
                else Write(d, m, z, sigma, Cells<double>(result).Slice(image * chw, chw), c, hw);
            }
            else
            {
                var z = Cells<double>(noiseTensor).Slice((int)at, count);
                if (singleOut) Write(d, m, z, sigma, Cells<float>(result).Slice(image * chw, chw), c, hw);
                else Write(d, m, z, sigma, Cells<double>(result).Slice(image * chw, chw), c, hw);
            }
        }
        // Copy `image`'s mask (from its input's ranks) and pixels (into d).
        Span<bool> Prepare(int image, Span<double> d)
        {
            int i = image / p;
            long limit = limits[image % p];
            var m = Cells<bool>(maskTensor).Slice(image * hw, hw);
            var r = Cells<long>(rankTensor).Slice(i * hw, hw);
            int count = 0;
            for (int q = 0; q < hw; q++) count += (m[q] = r[q] < limit) ? 1 : 0;
            if (count != unknowns[image % p]) throw new ArgumentException($"ROAD imputation: rank row {i} is not a permutation of 0..{hw - 1}");
            Cells<double>(pixelTensor).Slice(i * chw, chw).CopyTo(d);
            return m;
        }
        var viaGradients = new bool[n * p];
        bool wide = BandedImputation.Wide;
        int lanes = wide ? 8 : 4;
        if (w + 1 <= 40 && BandedImputation.Entries(hw, w + 1) <= directEntries && LaneImputation.Fits(lanes, h, w))
        {
            // Every copy takes the banded path in raster order (DirectPath): the copies of one point, whose systems have
            // the same size, are solved together, one per vector lane (LaneImputation), the largest points first.
            var groups = Enumerable.Range(0, p).OrderByDescending(j => unknowns[j])
                .SelectMany(j => Enumerable.Range(0, (n + lanes - 1) / lanes).Select(g => (Point: j, First: g * lanes, Count: Math.Min(lanes, n - g * lanes)))).ToArray();
            TensorThreads.For(groups.Length, k =>
            {
                var (j, first, count) = groups[k];
                var (data, masks) = GroupBuffers(count * chw, count * hw);
                for (int s = 0; s < count; s++) Prepare((first + s) * p + j, data.AsSpan(s * chw, chw)).CopyTo(masks.AsSpan(s * hw, hw));
                if (wide) LaneImputation.Solve<Lanes8, System.Runtime.Intrinsics.Vector512<double>>(data, masks, count, c, h, w);
                else LaneImputation.Solve<Lanes4, System.Runtime.Intrinsics.Vector256<double>>(data, masks, count, c, h, w);
                for (int s = 0; s < count; s++) Finish((first + s) * p + j, data.AsSpan(s * chw, chw));
            });
        }
        else
        {
            // Each copy is built, solved and made noisy by one iteration on libtorch's threads, the largest masks first.
            var order = Enumerable.Range(0, n * p).OrderByDescending(image => limits[image % p]).ToArray();
            TensorThreads.For(n * p, k =>
            {
                int image = order[k];
                var d = CopyBuffer(chw);
                var m = Prepare(image, d);
                if (!SolveDirect(d, m, c, h, w, directEntries)) { viaGradients[image] = true; return; }
                Finish(image, d);
            });
        }
        var rest = Enumerable.Range(0, n * p).Where(image => viaGradients[image]).ToArray();
        if (rest.Length > 0)
        {
            // The copies without a direct path: one batched conjugate-gradient run on just those.
            var index = tensor(rest.Select(image => (long)image).ToArray());
            var data = pixelTensor.index_select(0, tensor(rest.Select(image => (long)(image / p)).ToArray())).view(rest.Length, c, h, w).contiguous();
            ConjugateGradientRows(data, maskTensor.index_select(0, index), [.. Enumerable.Range(0, rest.Length)], h, w);
            for (int j = 0; j < rest.Length; j++) Finish(rest[j], Cells<double>(data).Slice(j * chw, chw));
        }
        return scope.MoveToOuter(result.to(x.dtype).to(x.device));
    }

    /// <summary>The noise values <see cref="Noisy"/> reads per input for these points on C×<paramref name="hw"/>
    /// images: C·Σ_j min(limits[j], H·W).</summary>
    public static long NoiseLength(IEnumerable<long> limits, long c, long hw) => c * limits.Sum(l => Math.Clamp(l, 0, hw));

    [ThreadStatic] static double[]? _copy;
    [ThreadStatic] static double[]? _group;
    [ThreadStatic] static bool[]? _groupMasks;

    /// <summary>This thread's buffers for a group of copies solved together (their pixels, float64, and masks), kept
    /// between calls.</summary>
    static (double[] Data, bool[] Masks) GroupBuffers(int values, int pixels)
    {
        if (_group is null || _group.Length < values) _group = new double[values];
        if (_groupMasks is null || _groupMasks.Length < pixels) _groupMasks = new bool[pixels];
        return (_group, _groupMasks);
    }

    /// <summary>This thread's buffer for one copy being solved (C·H·W float64), kept between calls.</summary>
    static Span<double> CopyBuffer(int chw)
    {
        if (_copy is null || _copy.Length < chw) _copy = new double[chw];
        return _copy.AsSpan(0, chw);
    }

    /// <summary>One solved copy written into its row of the result (<paramref name="output"/>, C·H·W values), σ·noise
    /// added at its imputed pixels: the noise's next value at each, channel after channel.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    static void Write<T, U>(ReadOnlySpan<double> data, ReadOnlySpan<bool> mask, ReadOnlySpan<T> noise, double sigma, Span<U> output, int c, int hw)
        where T : unmanaged, System.Numerics.INumberBase<T> where U : unmanaged, System.Numerics.INumberBase<U>
    {
        // No branch on the mask (irregular: it mispredicted on about every other pixel of a half-imputed copy): the noisy
        // value or the solved one chosen by a bit mask, the noise's place moved on by the mask's bit.
        int e = 0, last = noise.Length - 1;
        ref byte bits = ref Unsafe.As<bool, byte>(ref MemoryMarshal.GetReference(mask));
        for (int ch = 0; ch < c; ch++)
        {
            var d = data.Slice(ch * hw, hw);
            var o = output.Slice(ch * hw, hw);
            if (last < 0) { for (int q = 0; q < hw; q++) o[q] = U.CreateTruncating(d[q]); continue; }   // nothing imputed
            for (int q = 0; q < hw; q++)
            {
                int b = Unsafe.Add(ref bits, q) & 1;
                long keep = -(long)b;   // all ones where imputed
                double noisy = d[q] + sigma * double.CreateTruncating(noise[Math.Min(e, last)]);
                o[q] = U.CreateTruncating(BitConverter.Int64BitsToDouble((BitConverter.DoubleToInt64Bits(noisy) & keep) | (BitConverter.DoubleToInt64Bits(d[q]) & ~keep)));
                e += b;
            }
        }
    }

    /// <summary>Imputes N images of C×H×W (float64, in place) where <paramref name="mask"/> (N×H×W) is true: each image
    /// by its direct path (<see cref="DirectPath"/>; any size when <paramref name="solver"/> is Direct, the named one
    /// when it names one), the rest by one batched conjugate-gradient run.</summary>
    static void SolveInPlace(Tensor data, Tensor mask, int n, int c, int h, int w, ImputationSolver solver, long directEntries)
    {
        int hw = h * w, chw = c * hw;
        var paths = Enumerable.Range(0, n).Select(i => solver switch
        {
            ImputationSolver.Banded or ImputationSolver.Dissected => solver,
            ImputationSolver.Direct => DirectPath(Cells<bool>(mask).Slice(i * hw, hw), h, w, long.MaxValue),
            _ => DirectPath(Cells<bool>(mask).Slice(i * hw, hw), h, w, directEntries),
        }).ToArray();
        var byDirect = Enumerable.Range(0, n).Where(i => paths[i] != ImputationSolver.ConjugateGradient).ToArray();
        // One image per iteration on libtorch's threads (the systems are independent: same numbers in any order),
        // handed out one at a time, the largest systems first.
        var unknowns = byDirect.Select(i => -Count(Cells<bool>(mask).Slice(i * hw, hw))).ToArray();
        Array.Sort(unknowns, byDirect);
        TensorThreads.For(byDirect.Length, k =>
        {
            int i = byDirect[k];
            var image = Cells<double>(data).Slice(i * chw, chw);
            var m = Cells<bool>(mask).Slice(i * hw, hw);
            if (paths[i] == ImputationSolver.Dissected) DissectedImputation.Solve(image, m, c, h, w);
            else BandedImputation.Solve(image, m, c, h, w);
        });
        ConjugateGradientRows(data, mask, Enumerable.Range(0, n).Except(byDirect).ToArray(), h, w);
    }

    /// <summary>The listed images of <paramref name="data"/> (N×C×H×W float64, in place) imputed by one batched
    /// conjugate-gradient run on their masks (N×H·W).</summary>
    static void ConjugateGradientRows(Tensor data, Tensor mask, int[] rows, int h, int w)
    {
        if (rows.Length == 0) return;
        using var scope = NewDisposeScope();
        var index = tensor(rows.Select(i => (long)i).ToArray());
        data.index_copy_(0, index, ConjugateGradient(data.index_select(0, index), mask.index_select(0, index).view(-1, 1, h, w)));
    }

    static int Count(ReadOnlySpan<bool> mask) => mask.Count(true);

    /// <summary>A contiguous CPU tensor's storage as a span of its elements.</summary>
    static Span<T> Cells<T>(Tensor t) where T : unmanaged => t.numel() == 0 ? [] : MemoryMarshal.Cast<byte, T>(t.bytes);

    /// <summary>Whether one H×W mask (true = unknown) takes a direct path, within <paramref name="directEntries"/>
    /// entries of factor (see the class comment).</summary>
    public static bool PrefersDirect(ReadOnlySpan<bool> unknown, int h, int w, long directEntries = DirectEntries) =>
        DirectPath(unknown, h, w, directEntries) != ImputationSolver.ConjugateGradient;

    /// <summary>Estimated time of the banded factorisation of n unknowns with half-bandwidth b, in nanoseconds: n·b²/2
    /// multiply-adds at ~10 G/s. With <see cref="DissectedNanoseconds"/>, fitted on ROAD-like masks (blobs at 10…90 %)
    /// of 64², 112², 160² and 224² pixels, `Loupe.Benchmarks.dll --road-large SIDE 1 one`: it picks the faster path on
    /// every one of them (e.g. 112² at 90 %: banded 9.8 ms, dissected 3.0; 224² at 10 %: 1.1 and 3.8 ms).</summary>
    public static double BandedNanoseconds(long unknowns, long band) => 0.05 * unknowns * band * band;

    /// <summary>Estimated time of the nested-dissection factorisation of n unknowns in an H×W image, in nanoseconds:
    /// 1.8·n^1.5 (the fronts' arithmetic) + 80 per pixel (the walk over the dissection's boxes, lists and rings).</summary>
    public static double DissectedNanoseconds(long unknowns, long pixels) => 1.8 * Math.Pow(unknowns, 1.5) + 80.0 * pixels;

    /// <summary>The path one mask's system takes: the cheaper of <see cref="ImputationSolver.Banded"/> and
    /// <see cref="ImputationSolver.Dissected"/> by their estimated times among those whose factor fits
    /// <paramref name="directEntries"/> (the dissection's bounded by the full mask's), else conjugate gradients.</summary>
    public static ImputationSolver DirectPath(ReadOnlySpan<bool> unknown, int h, int w, long directEntries = DirectEntries)
    {
        // Narrow images need not be counted: with b ≤ W + 1 ≤ 40 the banded path's estimate, at most H·W·(W + 1)²/20 ns,
        // is below the dissection's per-pixel term alone.
        if (w + 1 <= 40 && BandedImputation.Entries(h * w, w + 1) <= directEntries) return ImputationSolver.Banded;
        var (count, band) = SystemShape(unknown, h, w);
        bool banded = BandedImputation.Entries(count, band) <= directEntries;
        bool dissected = DissectedImputation.Entries(h, w) <= directEntries;
        if (banded && dissected)
            return BandedNanoseconds(count, band) <= DissectedNanoseconds(count, (long)h * w) ? ImputationSolver.Banded : ImputationSolver.Dissected;
        return banded ? ImputationSolver.Banded : dissected ? ImputationSolver.Dissected : ImputationSolver.ConjugateGradient;
    }

    /// <summary>Imputes one image by its direct path; false (image untouched) when it has none within
    /// <paramref name="directEntries"/>.</summary>
    static bool SolveDirect(Span<double> image, ReadOnlySpan<bool> unknown, int c, int h, int w, long directEntries)
    {
        var path = DirectPath(unknown, h, w, directEntries);
        if (path == ImputationSolver.Dissected) DissectedImputation.Solve(image, unknown, c, h, w);
        else if (path == ImputationSolver.Banded) BandedImputation.SolveShaped(image, unknown, c, h, w);   // DirectPath shaped it
        return path != ImputationSolver.ConjugateGradient;
    }

    /// <summary>The number of unknowns n and the half-bandwidth b (largest raster-index gap between two neighbouring
    /// unknowns) of one H×W mask's system.</summary>
    public static (int Unknowns, int Band) SystemShape(ReadOnlySpan<bool> unknown, int h, int w) => BandedImputation.Shape(unknown, h, w);

    /// <summary>The conjugate-gradient path for all images at once.</summary>
    static Tensor ConjugateGradient(Tensor x, Tensor unknown)
    {
        using var scope = NewDisposeScope();
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var u = unknown.to(ScalarType.Float64).expand(n, c, h, w).reshape(n * c, 1, h, w);
        var known = x.to(ScalarType.Float64).reshape(n * c, 1, h, w) * (1 - u);
        // u (Σw − K) p = u (Σw + 1/3) p − u ([1 2 1]ᵀ[1 2 1] p) / 12 for p zero at known pixels.
        var diagonal = u * (Neighbours(ones(1, 1, h, w, dtype: ScalarType.Float64)) + 1.0 / 3);
        var u12 = u / 12;
        Tensor A(Tensor p) => (diagonal * p).addcmul_(u12, Binomial(p), -1);
        Tensor Dot(Tensor a, Tensor b) => (a * b).sum([1, 2, 3], keepdim: true);

        var r = u * Neighbours(known);
        var sol = zeros_like(r);
        var p = r.clone();
        var rr = Dot(r, r);
        var limit = rr.sqrt() * Tolerance;
        int maxIterations = (int)Math.Max(200, 20 * (h + w));
        for (int it = 0; it < maxIterations; it++)
        {
            if (it % CheckEvery == 0 && (rr.sqrt() <= limit).all().item<bool>()) break;
            using var step = NewDisposeScope();   // one iteration's temporaries; p and rr are replaced, sol and r updated in place
            var ap = A(p);
            var alpha = rr / Dot(p, ap).clamp_min_(1e-300);
            sol.addcmul_(alpha, p, 1);
            r.addcmul_(alpha, ap, -1);
            var rr2 = Dot(r, r);
            var p2 = r.addcmul(p, rr2 / rr.clamp_min(1e-300), 1);
            step.MoveToOuter(p2, rr2);
            p.Dispose();
            rr.Dispose();
            (p, rr) = (p2, rr2);
        }
        return scope.MoveToOuter((known + sol).view(n, c, h, w));
    }

    /// <summary>[1 2 1]ᵀ[1 2 1] applied to every B×1×H×W image, zero outside: a row pass and a column pass over
    /// shifted views of one zero-padded copy.</summary>
    static Tensor Binomial(Tensor v)
    {
        long h = v.shape[2], w = v.shape[3];
        var padded = nn.functional.pad(v, [1, 1, 1, 1]);
        var rows = (padded.narrow(3, 0, w) + padded.narrow(3, 2, w)).add_(padded.narrow(3, 1, w), 2);   // (H+2)×W
        return (rows.narrow(2, 0, h) + rows.narrow(2, 2, h)).add_(rows.narrow(2, 1, h), 2);
    }

    /// <summary>The weighted sum K v of each pixel's in-image 8-neighbours (1/6 direct, 1/12 diagonal).</summary>
    static Tensor Neighbours(Tensor v) => Binomial(v) / 12 - v / 3;
}

/// <summary>Which solver <see cref="LinearImputation.Solve"/> uses.</summary>
public enum ImputationSolver
{
    /// <summary>Per image, the cheaper one by <see cref="LinearImputation.PrefersDirect"/>.</summary>
    Auto,
    /// <summary>A direct (exact) factorisation for every image: banded or nested dissection by the image's band.
    /// </summary>
    Direct,
    /// <summary>Conjugate gradients for all images at once.</summary>
    ConjugateGradient,
    /// <summary>A direct path: the banded Cholesky factorisation (<see cref="BandedImputation"/>).</summary>
    Banded,
    /// <summary>A direct path: the nested-dissection one (<see cref="DissectedImputation"/>).</summary>
    Dissected,
}
