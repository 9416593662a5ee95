using System.Numerics;

namespace Loupe.Abstractions.Toolkit;

/// <summary>CPython's <c>random.Random(seed)</c> for a non-negative integer seed — MT19937 seeded by init_by_array over
/// the seed's 32-bit words — with <c>random()</c>, <c>getrandbits(k ≤ 32)</c>, <c>shuffle</c> and <c>choices</c>
/// (without weights) as CPython 3.x draws them, so that a library which draws with Python's <c>random</c> (Quantus's
/// mosaic_creation) can be followed draw for draw. Not for Loupe's own random elements.</summary>
public sealed class PythonRandom
{
    readonly NumpyRandomState mt;

    /// <summary><c>random.Random(seed)</c>.</summary>
    public PythonRandom(BigInteger seed)
    {
        var n = BigInteger.Abs(seed);
        var key = new List<uint>();
        do { key.Add((uint)(n & uint.MaxValue)); n >>= 32; } while (n > 0);
        mt = NumpyRandomState.FromKey([.. key]);
    }

    /// <summary><c>random()</c>: a float in [0, 1) from 53 random bits.</summary>
    public double Random()
    {
        uint a = mt.NextUInt32() >> 5, b = mt.NextUInt32() >> 6;
        return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
    }

    /// <summary><c>getrandbits(k)</c> for 0 ≤ k ≤ 32.</summary>
    public uint GetRandBits(int k)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(k, 32);
        return k == 0 ? 0 : mt.NextUInt32() >> (32 - k);
    }

    /// <summary><c>_randbelow(n)</c>: k = n.bit_length() bits drawn until the value is below n (n ≥ 1).</summary>
    public int RandBelow(int n)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        int k = 32 - BitOperations.LeadingZeroCount((uint)n);
        uint r = GetRandBits(k);
        while (r >= n) r = GetRandBits(k);
        return (int)r;
    }

    /// <summary><c>shuffle(x)</c> in place: for i from the end down to 1, swap x[i] with x[_randbelow(i + 1)].</summary>
    public void Shuffle<T>(IList<T> x)
    {
        for (int i = x.Count - 1; i >= 1; i--)
        {
            int j = RandBelow(i + 1);
            (x[i], x[j]) = (x[j], x[i]);
        }
    }

    /// <summary><c>choices(population, k=k)</c> without weights: population[⌊random() · n⌋], k times.</summary>
    public List<T> Choices<T>(IReadOnlyList<T> population, int k)
    {
        var n = (double)population.Count;
        var picked = new List<T>(k);
        for (int i = 0; i < k; i++) picked.Add(population[(int)Math.Floor(Random() * n)]);
        return picked;
    }
}
