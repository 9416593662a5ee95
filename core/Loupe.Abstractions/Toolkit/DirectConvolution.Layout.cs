using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Loupe.Abstractions.Toolkit;

/// <summary>The layouts around <see cref="DirectConvolution"/>'s kernel: the zero-padded input planes, the packed
/// weights and the NCHW result, each written in one pass on libtorch's threads (a sixth of resnet18's forward went to
/// libtorch's fills, permutes and copies for them before).</summary>
public static partial class DirectConvolution
{
    [ThreadStatic] static float[]? _scratch;

    /// <summary>One H×W plane into a zero-padded one: <paramref name="ph"/> rows and <paramref name="pw"/> columns of
    /// zeros on each side, then zeros up to <paramref name="length"/> values.</summary>
    static unsafe void PadPlane(float* plane, int h, int w, int ph, int pw, float* padded, long length)
    {
        long wp = w + 2L * pw;
        System.Runtime.InteropServices.NativeMemory.Clear(padded, (nuint)((ph * wp + pw) * sizeof(float)));
        float* row = padded + ph * wp + pw;
        for (int y = 0; y < h; y++, row += wp, plane += w)
        {
            Buffer.MemoryCopy(plane, row, (long)w * sizeof(float), (long)w * sizeof(float));
            if (y < h - 1) System.Runtime.InteropServices.NativeMemory.Clear(row + w, (nuint)(2 * pw * sizeof(float)));
        }
        long done = (ph + h) * wp - pw;   // the last row's right padding on
        System.Runtime.InteropServices.NativeMemory.Clear(padded + done, (nuint)((length - done) * sizeof(float)));
    }

    /// <summary>One block's weights: <paramref name="lanes"/> output channels of <paramref name="k"/> values each
    /// (contiguous) into k rows of 32 (zeros past the lanes); 16 channels × 16 values at a time through
    /// <see cref="Transpose16(float*, long, float*, long)"/>, the rest one value at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Pack(float* weights, int lanes, long k, float* block)
    {
        if (lanes < Block) System.Runtime.InteropServices.NativeMemory.Clear(block, (nuint)(k * Block * sizeof(float)));
        bool transpose = Avx512F.IsSupported;
        long whole = transpose ? k & ~15L : 0;
        for (int lane = 0; lane + 16 <= lanes && transpose; lane += 16)
            for (long r = 0; r < whole; r += 16)
                Transpose16(weights + lane * k + r, k, block + r * Block + lane, Block);
        for (int lane = 0; lane < lanes; lane++)
        {
            float* row = weights + lane * k;
            for (long r = transpose && lane < (lanes & ~15) ? whole : 0; r < k; r++) block[r * Block + lane] = row[r];
        }
    }

    /// <summary>Positions [<paramref name="from"/>, <paramref name="to"/>) of a work item's tiles (position-major, 32
    /// channels each, from <paramref name="scratch"/>) into the output planes of its <paramref name="lanes"/> channels:
    /// position f is row f / W', column f mod W' of the grid, kept where the column is an output column (&lt; W_out).
    /// Blocks of 16 positions × 16 channels are transposed in registers
    /// (<see cref="Transpose16(float*, long, float*, long, int, Vector512{float})"/>; a row's last block and a block's
    /// last channels masked off); without AVX-512, one value at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Scatter(float* scratch, long from, long to, long gridWidth, long outWidth, int lanes, float* planes, long outPlane)
    {
        bool transpose = Avx512F.IsSupported;
        for (long f = from; f < to;)
        {
            long row = f / gridWidth, column = f - row * gridWidth;
            long end = Math.Min(to, f + gridWidth - column);   // this grid row's positions in the range
            long count = Math.Min(end, f + outWidth - column) - f;   // its output columns
            if (count > 0)
            {
                float* source = scratch + (f - from) * Block;
                float* target = planes + row * outWidth + column;
                if (transpose)
                    for (long q = 0; q < count; q += 16)
                    {
                        // The last run's columns past the row masked off (the scratch holds 16 spare positions to read).
                        var columns = count - q >= 16 ? Vector512<float>.AllBitsSet
                            : Vector512.LessThan(Vector512<int>.Indices, Vector512.Create((int)(count - q))).AsSingle();
                        for (int lane = 0; lane < lanes; lane += 16)
                            Transpose16(source + q * Block + lane, Block, target + lane * outPlane + q, outPlane, Math.Min(16, lanes - lane), columns);
                    }
                else
                    for (int lane = 0; lane < lanes; lane++)
                    {
                        float* t = target + lane * outPlane;
                        for (long q = 0; q < count; q++) t[q] = source[q * Block + lane];
                    }
            }
            f = end;
        }
    }

    /// <summary>A 16×16 block: row r of the source (16 floats at source + r·<paramref name="sourceStride"/>) becomes
    /// column r of the target (row i at target + i·<paramref name="targetStride"/>). Four rounds swap the off-diagonal
    /// blocks of 8, 4, 2 and 1: rows i and i + d (bit d of i clear) exchange halves through two two-source permutes
    /// (row i takes its own columns without bit d and row i + d's with it, moved down by d; row i + d the rest).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    static unsafe void Transpose16(float* source, long sourceStride, float* target, long targetStride) =>
        Transpose16(source, sourceStride, target, targetStride, 16, Vector512<float>.AllBitsSet);

    /// <summary><see cref="Transpose16(float*, long, float*, long)"/> storing only the first <paramref name="rows"/>
    /// target rows, each only where <paramref name="columns"/> is set (the source's rows past those columns are read,
    /// and must be readable, but never land).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    static unsafe void Transpose16(float* source, long sourceStride, float* target, long targetStride, int rows, Vector512<float> columns)
    {
        var r0 = Vector512.Load(source);
        var r1 = Vector512.Load(source + 1 * sourceStride);
        var r2 = Vector512.Load(source + 2 * sourceStride);
        var r3 = Vector512.Load(source + 3 * sourceStride);
        var r4 = Vector512.Load(source + 4 * sourceStride);
        var r5 = Vector512.Load(source + 5 * sourceStride);
        var r6 = Vector512.Load(source + 6 * sourceStride);
        var r7 = Vector512.Load(source + 7 * sourceStride);
        var r8 = Vector512.Load(source + 8 * sourceStride);
        var r9 = Vector512.Load(source + 9 * sourceStride);
        var r10 = Vector512.Load(source + 10 * sourceStride);
        var r11 = Vector512.Load(source + 11 * sourceStride);
        var r12 = Vector512.Load(source + 12 * sourceStride);
        var r13 = Vector512.Load(source + 13 * sourceStride);
        var r14 = Vector512.Load(source + 14 * sourceStride);
        var r15 = Vector512.Load(source + 15 * sourceStride);
        var low8 = Vector512.Create(0,1,2,3,4,5,6,7,16,17,18,19,20,21,22,23);
        var high8 = Vector512.Create(8,9,10,11,12,13,14,15,24,25,26,27,28,29,30,31);
        var low4 = Vector512.Create(0,1,2,3,16,17,18,19,8,9,10,11,24,25,26,27);
        var high4 = Vector512.Create(4,5,6,7,20,21,22,23,12,13,14,15,28,29,30,31);
        var low2 = Vector512.Create(0,1,16,17,4,5,20,21,8,9,24,25,12,13,28,29);
        var high2 = Vector512.Create(2,3,18,19,6,7,22,23,10,11,26,27,14,15,30,31);
        var low1 = Vector512.Create(0,16,2,18,4,20,6,22,8,24,10,26,12,28,14,30);
        var high1 = Vector512.Create(1,17,3,19,5,21,7,23,9,25,11,27,13,29,15,31);
        (r0, r8) = (Avx512F.PermuteVar16x32x2(r0, low8, r8), Avx512F.PermuteVar16x32x2(r0, high8, r8));
        (r1, r9) = (Avx512F.PermuteVar16x32x2(r1, low8, r9), Avx512F.PermuteVar16x32x2(r1, high8, r9));
        (r2, r10) = (Avx512F.PermuteVar16x32x2(r2, low8, r10), Avx512F.PermuteVar16x32x2(r2, high8, r10));
        (r3, r11) = (Avx512F.PermuteVar16x32x2(r3, low8, r11), Avx512F.PermuteVar16x32x2(r3, high8, r11));
        (r4, r12) = (Avx512F.PermuteVar16x32x2(r4, low8, r12), Avx512F.PermuteVar16x32x2(r4, high8, r12));
        (r5, r13) = (Avx512F.PermuteVar16x32x2(r5, low8, r13), Avx512F.PermuteVar16x32x2(r5, high8, r13));
        (r6, r14) = (Avx512F.PermuteVar16x32x2(r6, low8, r14), Avx512F.PermuteVar16x32x2(r6, high8, r14));
        (r7, r15) = (Avx512F.PermuteVar16x32x2(r7, low8, r15), Avx512F.PermuteVar16x32x2(r7, high8, r15));
        (r0, r4) = (Avx512F.PermuteVar16x32x2(r0, low4, r4), Avx512F.PermuteVar16x32x2(r0, high4, r4));
        (r1, r5) = (Avx512F.PermuteVar16x32x2(r1, low4, r5), Avx512F.PermuteVar16x32x2(r1, high4, r5));
        (r2, r6) = (Avx512F.PermuteVar16x32x2(r2, low4, r6), Avx512F.PermuteVar16x32x2(r2, high4, r6));
        (r3, r7) = (Avx512F.PermuteVar16x32x2(r3, low4, r7), Avx512F.PermuteVar16x32x2(r3, high4, r7));
        (r8, r12) = (Avx512F.PermuteVar16x32x2(r8, low4, r12), Avx512F.PermuteVar16x32x2(r8, high4, r12));
        (r9, r13) = (Avx512F.PermuteVar16x32x2(r9, low4, r13), Avx512F.PermuteVar16x32x2(r9, high4, r13));
        (r10, r14) = (Avx512F.PermuteVar16x32x2(r10, low4, r14), Avx512F.PermuteVar16x32x2(r10, high4, r14));
        (r11, r15) = (Avx512F.PermuteVar16x32x2(r11, low4, r15), Avx512F.PermuteVar16x32x2(r11, high4, r15));
        (r0, r2) = (Avx512F.PermuteVar16x32x2(r0, low2, r2), Avx512F.PermuteVar16x32x2(r0, high2, r2));
        (r1, r3) = (Avx512F.PermuteVar16x32x2(r1, low2, r3), Avx512F.PermuteVar16x32x2(r1, high2, r3));
        (r4, r6) = (Avx512F.PermuteVar16x32x2(r4, low2, r6), Avx512F.PermuteVar16x32x2(r4, high2, r6));
        (r5, r7) = (Avx512F.PermuteVar16x32x2(r5, low2, r7), Avx512F.PermuteVar16x32x2(r5, high2, r7));
        (r8, r10) = (Avx512F.PermuteVar16x32x2(r8, low2, r10), Avx512F.PermuteVar16x32x2(r8, high2, r10));
        (r9, r11) = (Avx512F.PermuteVar16x32x2(r9, low2, r11), Avx512F.PermuteVar16x32x2(r9, high2, r11));
        (r12, r14) = (Avx512F.PermuteVar16x32x2(r12, low2, r14), Avx512F.PermuteVar16x32x2(r12, high2, r14));
        (r13, r15) = (Avx512F.PermuteVar16x32x2(r13, low2, r15), Avx512F.PermuteVar16x32x2(r13, high2, r15));
        (r0, r1) = (Avx512F.PermuteVar16x32x2(r0, low1, r1), Avx512F.PermuteVar16x32x2(r0, high1, r1));
        (r2, r3) = (Avx512F.PermuteVar16x32x2(r2, low1, r3), Avx512F.PermuteVar16x32x2(r2, high1, r3));
        (r4, r5) = (Avx512F.PermuteVar16x32x2(r4, low1, r5), Avx512F.PermuteVar16x32x2(r4, high1, r5));
        (r6, r7) = (Avx512F.PermuteVar16x32x2(r6, low1, r7), Avx512F.PermuteVar16x32x2(r6, high1, r7));
        (r8, r9) = (Avx512F.PermuteVar16x32x2(r8, low1, r9), Avx512F.PermuteVar16x32x2(r8, high1, r9));
        (r10, r11) = (Avx512F.PermuteVar16x32x2(r10, low1, r11), Avx512F.PermuteVar16x32x2(r10, high1, r11));
        (r12, r13) = (Avx512F.PermuteVar16x32x2(r12, low1, r13), Avx512F.PermuteVar16x32x2(r12, high1, r13));
        (r14, r15) = (Avx512F.PermuteVar16x32x2(r14, low1, r15), Avx512F.PermuteVar16x32x2(r14, high1, r15));
        Avx512F.MaskStore(target, columns, r0);
        if (rows > 1) Avx512F.MaskStore(target + 1 * targetStride, columns, r1);
        if (rows > 2) Avx512F.MaskStore(target + 2 * targetStride, columns, r2);
        if (rows > 3) Avx512F.MaskStore(target + 3 * targetStride, columns, r3);
        if (rows > 4) Avx512F.MaskStore(target + 4 * targetStride, columns, r4);
        if (rows > 5) Avx512F.MaskStore(target + 5 * targetStride, columns, r5);
        if (rows > 6) Avx512F.MaskStore(target + 6 * targetStride, columns, r6);
        if (rows > 7) Avx512F.MaskStore(target + 7 * targetStride, columns, r7);
        if (rows > 8) Avx512F.MaskStore(target + 8 * targetStride, columns, r8);
        if (rows > 9) Avx512F.MaskStore(target + 9 * targetStride, columns, r9);
        if (rows > 10) Avx512F.MaskStore(target + 10 * targetStride, columns, r10);
        if (rows > 11) Avx512F.MaskStore(target + 11 * targetStride, columns, r11);
        if (rows > 12) Avx512F.MaskStore(target + 12 * targetStride, columns, r12);
        if (rows > 13) Avx512F.MaskStore(target + 13 * targetStride, columns, r13);
        if (rows > 14) Avx512F.MaskStore(target + 14 * targetStride, columns, r14);
        if (rows > 15) Avx512F.MaskStore(target + 15 * targetStride, columns, r15);
    }
}
