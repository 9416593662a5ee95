using Loupe.Abstractions.Toolkit;

namespace Loupe.Evaluation.Tests;

/// <summary>NumpyRandomState against numpy 1.24's legacy RandomState, values printed by
/// <c>/usr/bin/python3 -c "import numpy as np; np.random.seed(42); print(np.random.randint(0, 9, 8).tolist())"</c> and the
/// like (several ranges, masks and rejections; a one-value range draws nothing).</summary>
public class NumpyRandomStateTests
{
    [Fact]
    public void RandIntIsNumpys()
    {
        Assert.Equal([6, 3, 7, 4, 6, 2, 6, 7], new NumpyRandomState(42).RandInt(0, 9, 8));
        Assert.Equal([102, 435, 860, 270, 106], new NumpyRandomState(42).RandInt(0, 999, 5));
        var seven = new NumpyRandomState(7);
        Assert.Equal([0, 0, 0], seven.RandInt(0, 1, 3));
        Assert.Equal([0, 1, 2, 0, 1, 2], seven.RandInt(0, 3, 6));
        Assert.Equal([1608637542, 1273642419, 1935803228], new NumpyRandomState(42).RandInt(0, int.MaxValue, 3));
        Assert.Throws<ArgumentException>(() => new NumpyRandomState(1).RandInt(3, 3, 1));
    }
}

/// <summary>PythonRandom against CPython 3.11's <c>random.Random</c> (tests/fixtures/make_python_random_fixture.py:
/// random(), getrandbits, _randbelow, shuffle and choices for seeds 1, 42 and 2⁴⁰ + 7), and the init_by_array seeding
/// it shares with numpy's array-seeded RandomState.</summary>
public class PythonRandomTests
{
    static readonly System.Text.Json.Nodes.JsonObject Fixture =
        System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(Env.RepoRoot, "tests", "fixtures", "python_random.json")))!.AsObject();

    static T[] Of<T>(System.Text.Json.Nodes.JsonNode? n) => n!.AsArray().Select(v => v!.GetValue<T>()).ToArray();

    [Theory]
    [InlineData("1")]
    [InlineData("42")]
    [InlineData("1099511627783")]
    public void DrawsAreCPythons(string seed)
    {
        var want = Fixture[seed]!;
        var r = new PythonRandom(System.Numerics.BigInteger.Parse(seed));
        Assert.Equal(Of<double>(want["random"]), Enumerable.Range(0, 5).Select(_ => r.Random()).ToArray());
        Assert.Equal(Of<long>(want["bits"]), new[] { 1, 5, 31, 32 }.Select(k => (long)r.GetRandBits(k)).ToArray());
        var x = Enumerable.Range(0, 20).ToList();
        r.Shuffle(x);
        Assert.Equal(Of<int>(want["shuffle"]), x);
        Assert.Equal(Of<int>(want["choices"]), r.Choices(Enumerable.Range(0, 7).ToArray(), 12));
        Assert.Equal(Of<int>(want["randbelow"]), new[] { 1, 2, 3, 1000, int.MaxValue }.Select(r.RandBelow).ToArray());
    }

    [Fact]
    public void ArraySeedIsNumpys() =>
        Assert.Equal(Of<long>(Fixture["numpy_array_seed_42"]), NumpyRandomState.FromKey([42]).RandInt(0, 9, 8));
}
