using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Loupe.Abstractions.Toolkit;

public static partial class GroupedConvolution
{
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

        /// <summary>Floats of a thread's buffer: the planes, a row of accumulators, and <paramref name="gradients"/>
        /// output-gradient planes with their margins.</summary>
        public long Length(long gradients) => _planes * PlaneLength + _row + Lanes + gradients * OutH * _gradRow;

        /// <summary>This thread's buffer, <see cref="Length"/> floats at least.</summary>
        public float[] Rent(long gradients = 0)
        {
            long length = Length(gradients);
            if (length > MaxBuffer) throw new ArgumentException("grouped convolution: the padded planes are too large");
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
