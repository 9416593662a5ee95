namespace Loupe.Abstractions.Toolkit;

/// <summary>numpy's legacy <c>np.random.RandomState(seed)</c> — the Mersenne Twister MT19937 seeded by Knuth's
/// recurrence (init_genrand) — and its <c>randint(low, high, size)</c> for int64 results (masked rejection: each value
/// the next 32-bit output masked to the smallest all-ones mask covering high − 1 − low, drawn again while above it) and
/// <c>standard_normal</c> (the legacy polar method), so that a library which seeds numpy before its draws (Quantus's
/// RandomLogit: <c>np.random.seed(seed)</c> per batch; sklearn's <c>NMF(init='random', random_state=0)</c>) can be
/// followed draw for draw. Not for Loupe's own random elements, which use torch generators seeded per input.</summary>
public sealed class NumpyRandomState
{
    const int N = 624, M = 397;
    readonly uint[] mt = new uint[N];
    int index = N;
    double? _gauss;   // the second value of the last polar pair, returned by the next standard_normal draw

    /// <summary><c>np.random.RandomState(seed)</c> (0 ≤ seed &lt; 2³²).</summary>
    public NumpyRandomState(uint seed)
    {
        mt[0] = seed;
        for (int i = 1; i < N; i++) mt[i] = 1812433253u * (mt[i - 1] ^ (mt[i - 1] >> 30)) + (uint)i;
    }

    /// <summary>numpy's <c>RandomState(array)</c> and CPython's <c>random.seed(int)</c> (the integer's 32-bit words,
    /// least significant first): the reference init_by_array over init_genrand(19650218).</summary>
    public static NumpyRandomState FromKey(uint[] key)
    {
        var s = new NumpyRandomState(19650218u);
        var mt = s.mt;
        int i = 1, j = 0;
        for (int k = Math.Max(N, key.Length); k > 0; k--)
        {
            mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint)j;
            i++; j++;
            if (i >= N) { mt[0] = mt[N - 1]; i = 1; }
            if (j >= key.Length) j = 0;
        }
        for (int k = N - 1; k > 0; k--)
        {
            mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1566083941u)) - (uint)i;
            i++;
            if (i >= N) { mt[0] = mt[N - 1]; i = 1; }
        }
        mt[0] = 0x80000000u;
        return s;
    }

    /// <summary>The next 32-bit output (genrand_int32).</summary>
    public uint NextUInt32()
    {
        if (index >= N)
        {
            for (int k = 0; k < N; k++)
            {
                uint y = (mt[k] & 0x80000000u) | (mt[(k + 1) % N] & 0x7fffffffu);
                mt[k] = mt[(k + M) % N] ^ (y >> 1) ^ ((y & 1u) != 0 ? 0x9908b0dfu : 0u);
            }
            index = 0;
        }
        uint v = mt[index++];
        v ^= v >> 11;
        v ^= (v << 7) & 0x9d2c5680u;
        v ^= (v << 15) & 0xefc60000u;
        v ^= v >> 18;
        return v;
    }

    /// <summary><c>randint(low, high, size)</c>: <paramref name="size"/> integers in [low, high) (a range of at most
    /// 2³² values); a one-value range draws nothing, as numpy's.</summary>
    public long[] RandInt(long low, long high, int size)
    {
        if (high <= low) throw new ArgumentException("randint: high must be greater than low");
        ulong rng = (ulong)(high - 1 - low);
        if (rng > 0xFFFFFFFFUL) throw new ArgumentException("randint: ranges over 2³² values are not ported");
        var values = new long[size];
        if (rng == 0)
        {
            Array.Fill(values, low);
            return values;
        }
        ulong mask = rng;
        mask |= mask >> 1; mask |= mask >> 2; mask |= mask >> 4; mask |= mask >> 8; mask |= mask >> 16;
        for (int i = 0; i < size; i++)
        {
            ulong v;
            if (rng == 0xFFFFFFFFUL) v = NextUInt32();
            else do v = NextUInt32() & mask; while (v > rng);
            values[i] = low + (long)v;
        }
        return values;
    }

    /// <summary>numpy's <c>random_sample</c> (legacy double): 53 bits from two outputs, (a ≫ 5, b ≫ 6).</summary>
    public double NextDouble()
    {
        uint a = NextUInt32() >> 5, b = NextUInt32() >> 6;
        return (a * 67108864.0 + b) / 9007199254740992.0;
    }

    /// <summary>numpy's legacy <c>standard_normal</c>: Marsaglia's polar method on pairs (x₁, x₂) uniform in the unit
    /// disc, f = √(−2 ln r² / r²); f·x₂ is returned and f·x₁ kept for the next draw.</summary>
    public double StandardNormal()
    {
        if (_gauss is { } kept)
        {
            _gauss = null;
            return kept;
        }
        double x1, x2, r2;
        do
        {
            x1 = 2.0 * NextDouble() - 1.0;
            x2 = 2.0 * NextDouble() - 1.0;
            r2 = x1 * x1 + x2 * x2;
        } while (r2 >= 1.0 || r2 == 0.0);
        double f = Math.Sqrt(-2.0 * Math.Log(r2) / r2);
        _gauss = f * x1;
        return f * x2;
    }
}
