using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Synthesis;

/// <summary>The atlas's dataset pass: per input one activation vector, kept for the <c>max</c> inputs with the smallest
/// key <see cref="InputSeeds.For"/>(sample_seed, id) (a bottom-k sample: uniform, and the same whatever the batch size,
/// the data order or which step fed it). With <see cref="AtlasPosition.Random"/> the position is
/// splitmix64(key) mod (H·W), row-major. Memory: at most <c>max</c> vectors.</summary>
public sealed class AtlasSample(AtlasPosition position, int max, int seed) : ILayerConsumer
{
    sealed record Entry(long Row, string Id, long Label, float[] Vector, int Y, int X);

    /// <summary>The kept vectors in dataset order.</summary>
    /// <param name="Ids">Input ids.</param>
    /// <param name="Rows">Dataset rows.</param>
    /// <param name="Labels">Ground-truth labels when every batch had them.</param>
    /// <param name="Vectors">M×C, row-major.</param>
    /// <param name="Channels">C.</param>
    /// <param name="Y">Position row of each vector (−1: averaged or a 2-D layer).</param>
    /// <param name="X">Position column of each vector.</param>
    /// <param name="Spatial">Whether the layer is N×C×H×W.</param>
    public sealed record Sample(string[] Ids, long[] Rows, long[]? Labels, float[] Vectors, int Channels, int[] Y, int[] X, bool Spatial);

    // Largest key first, so the head is the one to drop.
    readonly PriorityQueue<Entry, ulong> _kept = new(Comparer<ulong>.Create((a, b) => b.CompareTo(a)));
    long _row;
    bool _labelled = true, _spatial;
    int _channels = -1;

    /// <summary>splitmix64's finaliser: a well-mixed 64-bit value from a key.</summary>
    public static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <inheritdoc/>
    public void Consume(InputBatch batch, Tensor a)
    {
        using var scope = NewDisposeScope();
        if (a.dim() is not (2 or 4)) throw new LoupeException($"activation-atlas needs an N×C×H×W or N×C layer, got shape ({string.Join("×", a.shape)})");
        int n = batch.Ids.Length;
        _spatial = a.dim() == 4;
        _channels = (int)a.shape[1];
        if (batch.Labels is null) _labelled = false;
        var keys = batch.Ids.Select(id => InputSeeds.For(seed, id)).ToArray();
        // Candidates: rows that would enter the sample now (the heap may still drop some of them within this batch).
        bool full = _kept.Count >= max;
        ulong worst = full && _kept.TryPeek(out _, out var p) ? p : ulong.MaxValue;
        var rows = Enumerable.Range(0, n).Where(i => !full || keys[i] < worst).ToArray();
        if (rows.Length > 0)
        {
            long h = _spatial ? a.shape[2] : 1, w = _spatial ? a.shape[3] : 1;
            var pos = rows.Select(i => position == AtlasPosition.Random && _spatial ? (long)(Mix(keys[i]) % (ulong)(h * w)) : -1L).ToArray();
            var sel = a.detach().index_select(0, tensor(rows.Select(i => (long)i).ToArray(), device: a.device));
            Tensor vec;
            if (!_spatial) vec = sel;
            else if (position == AtlasPosition.Mean) vec = sel.mean([2, 3]);
            else
            {
                var idx = tensor(pos, device: a.device).view(-1, 1, 1).expand(-1, _channels, 1);
                vec = sel.flatten(2).gather(2, idx).squeeze(2);
            }
            var data = vec.to(ScalarType.Float32).cpu().contiguous().ToArray<float>();
            for (int r = 0; r < rows.Length; r++)
            {
                int i = rows[r];
                var entry = new Entry(_row + i, batch.Ids[i], batch.Labels?[i] ?? -1, data.AsSpan(r * _channels, _channels).ToArray(),
                    pos[r] < 0 ? -1 : (int)(pos[r] / w), pos[r] < 0 ? -1 : (int)(pos[r] % w));
                _kept.Enqueue(entry, keys[i]);
                if (_kept.Count > max) _kept.Dequeue();
            }
        }
        _row += n;
    }

    /// <summary>The sample in dataset order.</summary>
    public Sample Result()
    {
        if (_kept.Count == 0) throw new LoupeException("the data source produced no inputs");
        var e = _kept.UnorderedItems.Select(x => x.Element).OrderBy(x => x.Row).ToArray();
        var vectors = new float[(long)e.Length * _channels];
        for (int i = 0; i < e.Length; i++) e[i].Vector.CopyTo(vectors, (long)i * _channels);
        return new Sample(e.Select(x => x.Id).ToArray(), e.Select(x => x.Row).ToArray(), _labelled ? e.Select(x => x.Label).ToArray() : null,
            vectors, _channels, e.Select(x => x.Y).ToArray(), e.Select(x => x.X).ToArray(), _spatial);
    }
}
