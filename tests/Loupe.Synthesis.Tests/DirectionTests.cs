using Loupe.Analysis.Synthesis;
using static TorchSharp.torch;

namespace Loupe.Synthesis.Tests;

/// <summary>The direction objective's <c>similarity</c> and <c>position</c>: Lucid's dot product averaged over positions,
/// Lucent's <c>direction</c> (cosine similarity averaged over positions) and <c>direction_neuron</c> (at the centre),
/// written out element by element in float64.</summary>
public class DirectionTests
{
    static DirectionTests() => _ = Env.RepoRoot;

    static double Cos(double[] a, double[] b)
    {
        double dot = a.Zip(b, (x, y) => x * y).Sum(), na = Math.Sqrt(a.Sum(x => x * x)), nb = Math.Sqrt(b.Sum(x => x * x));
        return dot / (Math.Max(na, 1e-8) * Math.Max(nb, 1e-8));
    }

    [Fact]
    public void DotCosineMeanAndCentreAreTheirDefinitions()
    {
        using var scope = NewDisposeScope();
        const int n = 2, c = 3, h = 5, w = 4;
        var act = randn([n, c, h, w], generator: new Generator(4));
        float[] v = [0.5f, -1.5f, 2f];
        var values = act.to(ScalarType.Float64).contiguous().ToArray<double>();
        double[] At(int i, int y, int x) => Enumerable.Range(0, c).Select(k => values[((i * c + k) * h + y) * w + x]).ToArray();
        var vd = v.Select(x => (double)x).ToArray();
        var input = new ObjectiveInput(zeros(n, 10), _ => act);
        double[] Got(bool cosine, bool centre) => new Direction("l", v, "v.npy", cosine, centre).Evaluate(input).to(ScalarType.Float64).ToArray<double>();
        for (int i = 0; i < n; i++)
        {
            var positions = Enumerable.Range(0, h).SelectMany(y => Enumerable.Range(0, w).Select(x => At(i, y, x))).ToArray();
            var centre = At(i, h / 2, w / 2);
            Assert.Equal(positions.Average(p => p.Zip(vd, (a, b) => a * b).Sum()), Got(false, false)[i], 5);
            Assert.Equal(positions.Average(p => Cos(p, vd)), Got(true, false)[i], 5);
            Assert.Equal(centre.Zip(vd, (a, b) => a * b).Sum(), Got(false, true)[i], 5);
            Assert.Equal(Cos(centre, vd), Got(true, true)[i], 5);
        }
        // The cosine does not depend on the direction's length; the dot product does.
        var scaled = new Direction("l", [.. v.Select(x => 3 * x)], "v.npy", true).Evaluate(input).ToArray<float>();
        Assert.Equal(Got(true, false).Select(x => (float)x), scaled, (a, b) => Math.Abs(a - b) < 1e-5);
    }
}
