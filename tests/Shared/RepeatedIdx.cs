using System.Globalization;
using System.IO.Compression;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using Microsoft.Extensions.DependencyInjection;
using static TorchSharp.torch;

namespace Loupe.Testing;

/// <summary>Options of the <c>repeated-idx</c> test data source.</summary>
public sealed record RepeatedIdxOptions
{
    /// <summary>IDX images (gzipped, unsigned bytes N×H×W).</summary>
    public string Images { get; init; } = "";
    /// <summary>IDX labels (gzipped).</summary>
    public string? Labels { get; init; }
    /// <summary>Inputs produced: the file's items, cycled.</summary>
    public long Count { get; init; } = 60;
    /// <summary>Name under which <see cref="RepeatedIdx.Samples"/> records this source's reads.</summary>
    public string Tag { get; init; } = "default";
    /// <summary>Also record the managed heap after a full collection at every batch (slower).</summary>
    public bool Managed { get; init; }
}

/// <summary>One memory sample, taken as a batch is handed out: which read of the data (a dataset pass), the rows handed
/// out before it in that read, VmRSS, live tensors (<see cref="TensorAccounting.Live"/>) and the managed heap (after a
/// full collection when asked, else 0) and the memory the .NET GC has committed (its heap including garbage not yet
/// collected).</summary>
public sealed record MemorySample(int Read, long Row, long Rss, long LiveTensors, long Managed, long GcCommitted);

/// <summary>A data source for soak and memory tests: an IDX file's items cycled up to <c>count</c> inputs (60,000 from the
/// 60 planted images). Ids are the item's index in the file, so masks keyed by id (dissection) stay valid for every copy.
/// Every batch records a <see cref="MemorySample"/> under the source's tag.</summary>
public sealed class RepeatedIdx : DataAdapter<RepeatedIdxOptions>
{
    /// <summary>Samples by tag, in order.</summary>
    public static readonly Dictionary<string, List<MemorySample>> Samples = [];

    /// <inheritdoc/>
    public override IDataSource Open(RepeatedIdxOptions options, DataOpenContext context) => new Source(options);

    /// <summary>Median of a sequence.</summary>
    public static double Median(IEnumerable<long> values)
    {
        var v = values.OrderBy(x => x).ToArray();
        if (v.Length == 0) throw new ArgumentException("no values", nameof(values));
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2.0;
    }

    /// <summary>Registers <c>repeated-idx</c>.</summary>
    public sealed class Registrar : IPluginRegistrar
    {
        /// <inheritdoc/>
        public void Register(IServiceCollection services) => services.AddLoupeData<RepeatedIdx>("repeated-idx", "an IDX file's items cycled to a given count, recording memory per batch (tests)");
    }

    sealed class Source : IDataSource
    {
        readonly RepeatedIdxOptions _o;
        readonly byte[] _images, _labels;
        readonly int _items, _h, _w;

        public Source(RepeatedIdxOptions o)
        {
            _o = o;
            var img = Unzip(o.Images);
            _items = Int(img, 4); _h = Int(img, 8); _w = Int(img, 12);
            _images = img[16..];
            _labels = o.Labels is null ? [] : Unzip(o.Labels)[8..];
            if (_items == 0 || o.Count < 1) throw new LoupeException($"repeated-idx: {o.Images} has no items or count < 1");
        }

        static int Int(byte[] b, int at) => (b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3];

        static byte[] Unzip(string file)
        {
            using var gz = new GZipStream(File.OpenRead(file), CompressionMode.Decompress);
            using var ms = new MemoryStream();
            gz.CopyTo(ms);
            return ms.ToArray();
        }

        public long? Count => _o.Count;
        public bool Preprocessed => false;
        public IEnumerable<string> Files => [];

        public IEnumerable<DataBatch> Read(InputSpec spec, int batchSize, CancellationToken cancellation)
        {
            List<MemorySample> log;
            lock (Samples) log = Samples.TryGetValue(_o.Tag, out var l) ? l : Samples[_o.Tag] = [];
            int read = log.Count == 0 ? 1 : log[^1].Read + 1;
            int hw = _h * _w;
            for (long s = 0; s < _o.Count; s += batchSize)
            {
                cancellation.ThrowIfCancellationRequested();
                int n = (int)Math.Min(batchSize, _o.Count - s);
                long managed = _o.Managed ? GC.GetTotalMemory(true) : 0;
                log.Add(new MemorySample(read, s, ProcessMemory.Rss(), TensorAccounting.Live, managed, GC.GetGCMemoryInfo().TotalCommittedBytes));
                var px = new float[n * hw];
                var items = Enumerable.Range(0, n).Select(i => (int)((s + i) % _items)).ToArray();
                for (int i = 0; i < n; i++)
                    for (int p = 0; p < hw; p++) px[i * hw + p] = _images[items[i] * hw + p] / 255f;
                yield return new DataBatch(items.Select(i => i.ToString("D5", CultureInfo.InvariantCulture)).ToArray(), ToTensor(px, n, spec),
                    _labels.Length == 0 ? null : items.Select(i => (long)_labels[i]).ToArray());
            }
        }

        // Own scope, closed before the batch is handed out (a scope held across the yield would collect the host's tensors).
        Tensor ToTensor(float[] px, int n, InputSpec spec)
        {
            using var scope = NewDisposeScope();
            var t = tensor(px, [n, 1, _h, _w]);
            if (_h != spec.Height || _w != spec.Width)
                t = nn.functional.interpolate(t, [spec.Height, spec.Width], mode: InterpolationMode.Bilinear, align_corners: false);
            if (spec.Channels == 3) t = t.expand(-1, 3, -1, -1).contiguous();
            return scope.MoveToOuter(t);
        }

        public void Dispose() { }
    }
}
