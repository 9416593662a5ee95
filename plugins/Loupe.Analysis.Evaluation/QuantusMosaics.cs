using System.Numerics;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Evaluation;

/// <summary>One mosaic of Quantus's mosaic_creation: the inputs (rows) in quadrants top-left, top-right, bottom-left,
/// bottom-right, which of them hold the target class, and that class.</summary>
public sealed record QuantusMosaic(int[] Rows, bool[] Target, long Class);

/// <summary>Quantus's <c>mosaic_creation(images, labels, mosaics_per_class, seed)</c> (quantus/functions/mosaic_func.py),
/// followed draw for draw with CPython's <c>random.Random(seed)</c> (<see cref="PythonRandom"/>): for each class of the
/// labels, in increasing order, the class's rows repeated ⌈2·per_class / count⌉ times and shuffled; from every other
/// class ⌈2·per_class / (classes − 1)⌉ rows drawn with <c>choices</c>, all of them shuffled together; each mosaic
/// takes the next two target rows and the next two others, shuffled into the quadrants.</summary>
public static class QuantusMosaics
{
    /// <summary>The mosaics of rows with these <paramref name="labels"/> (Quantus's order: by class, then as drawn).</summary>
    public static List<QuantusMosaic> Create(IReadOnlyList<long> labels, int perClass, BigInteger seed)
    {
        if (perClass < 1) throw new ArgumentOutOfRangeException(nameof(perClass));
        var rng = new PythonRandom(seed);
        var classes = labels.Distinct().Order().ToList();
        if (classes.Count < 2) throw new Loupe.Abstractions.LoupeException($"focus: Quantus's mosaics need inputs of at least two classes; the data has {classes.Count}");
        List<int> RowsOf(long c) => [.. Enumerable.Range(0, labels.Count).Where(i => labels[i] == c)];
        var mosaics = new List<QuantusMosaic>();
        foreach (var target in classes)
        {
            var outer = classes.Where(c => c != target).ToList();
            var own = RowsOf(target);
            int repeat = (2 * perClass + own.Count - 1) / own.Count;
            var targets = Enumerable.Repeat(own, repeat).SelectMany(r => r).ToList();
            rng.Shuffle(targets);
            int perOuter = (2 * perClass + outer.Count - 1) / outer.Count;
            var others = outer.SelectMany(c => rng.Choices(RowsOf(c), perOuter).Select(row => (Row: row, Class: c))).ToList();
            rng.Shuffle(others);
            int t = 0, o = 0;
            for (int m = 0; m < perClass; m++)
            {
                var four = new List<(int Row, bool Target)>
                {
                    (targets[t++], true), (targets[t++], true), (others[o++].Row, false), (others[o++].Row, false),
                };
                rng.Shuffle(four);
                mosaics.Add(new QuantusMosaic([.. four.Select(e => e.Row)], [.. four.Select(e => e.Target)], target));
            }
        }
        return mosaics;
    }
}
