using System.Buffers.Binary;
using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using System.IO.Compression;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Data;

/// <summary>Options of <c>idx</c>.</summary>
public sealed record IdxOptions
{
    /// <summary>Images file.</summary>
    [Required, FilePath, Description("IDX images file (e.g. t10k-images-idx3-ubyte, .gz or not)")]
    public string Images { get; init; } = "";
    /// <summary>Labels file.</summary>
    [FilePath, Description("IDX labels file (optional)")]
    public string? Labels { get; init; }
    /// <summary>First item.</summary>
    [Range(0, int.MaxValue), Description("index of the first item to read")]
    public int Offset { get; init; }
    /// <summary>At most this many items.</summary>
    [Range(1, int.MaxValue), Description("read at most this many items")]
    public int? Limit { get; init; }
}

/// <summary>IDX files (MNIST, Fashion-MNIST): unsigned-byte images N×H×W, optional labels, gzip or raw,
/// streamed. Pixels are ÷255; if the model's size differs, bilinearly resized (align_corners = false);
/// grey is replicated to 3 channels for RGB models. Ids are the item index, zero-padded.</summary>
public sealed class IdxAdapter : DataAdapter<IdxOptions>
{
    /// <summary>A parsed IDX header.</summary>
    public sealed record IdxHeader(int Type, int[] Dims, int HeaderBytes);

    /// <summary>Opens a (possibly gzipped) IDX file.</summary>
    public static Stream OpenStream(string path)
    {
        var fs = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[2];
        var n = fs.Read(magic);
        fs.Position = 0;
        return n == 2 && magic[0] == 0x1f && magic[1] == 0x8b ? new GZipStream(fs, CompressionMode.Decompress) : fs;
    }

    /// <summary>Reads the header: magic (0,0,type,ndims) then big-endian int32 dims.</summary>
    public static IdxHeader ReadHeader(Stream s, string path)
    {
        Span<byte> head = stackalloc byte[4];
        if (Fill(s, head, path) < 4) throw new LoupeException($"{path}: truncated IDX header");
        if (head[0] != 0 || head[1] != 0) throw new LoupeException($"{path}: not an IDX file (bad magic {head[0]:x2}{head[1]:x2}{head[2]:x2}{head[3]:x2})");
        if (head[2] != 0x08) throw new LoupeException($"{path}: IDX element type 0x{head[2]:x2} is not supported (only unsigned bytes, 0x08)");
        int nd = head[3];
        if (nd is < 1 or > 4) throw new LoupeException($"{path}: IDX with {nd} dimensions is not supported");
        var dims = new int[nd];
        Span<byte> d = stackalloc byte[4];
        for (int i = 0; i < nd; i++)
        {
            if (Fill(s, d, path) < 4) throw new LoupeException($"{path}: truncated IDX header");
            dims[i] = BinaryPrimitives.ReadInt32BigEndian(d);
            if (dims[i] < 0) throw new LoupeException($"{path}: negative IDX dimension {dims[i]}");
        }
        return new IdxHeader(head[2], dims, 4 + 4 * nd);
    }

    /// <summary>Reads until <paramref name="buffer"/> is full or the stream ends; corrupt gzip data is an error naming the file.</summary>
    static int Fill(Stream s, Span<byte> buffer, string path)
    {
        try { return s.ReadAtLeast(buffer, buffer.Length, false); }
        catch (InvalidDataException e) { throw new LoupeException($"{path}: corrupt gzip data ({e.Message})", e); }
    }

    /// <inheritdoc/>
    public override IDataSource Open(IdxOptions options, DataOpenContext context)
    {
        IdxHeader header;
        using (var s = OpenStream(options.Images)) header = ReadHeader(s, options.Images);
        if (header.Dims.Length != 3) throw new LoupeException($"{options.Images}: expected an images file with 3 dimensions (N×H×W), found {header.Dims.Length}");
        long pixels = (long)header.Dims[1] * header.Dims[2];
        if (pixels == 0 || pixels > context.MaxImagePixels) throw new LoupeException($"{options.Images}: image size {header.Dims[1]}×{header.Dims[2]} is invalid or over the limit");
        var raw = new FileInfo(options.Images);
        if (!IsGzip(options.Images) && raw.Length < header.HeaderBytes + header.Dims[0] * pixels)
            throw new LoupeException($"{options.Images}: truncated: header declares {header.Dims[0]} images of {header.Dims[1]}×{header.Dims[2]}, but the file has {raw.Length} bytes");
        if (options.Labels is not null)
        {
            using var ls = OpenStream(options.Labels);
            var lh = ReadHeader(ls, options.Labels);
            if (lh.Dims.Length != 1) throw new LoupeException($"{options.Labels}: expected a labels file with 1 dimension, found {lh.Dims.Length}");
            if (lh.Dims[0] != header.Dims[0]) throw new LoupeException($"{options.Labels}: {lh.Dims[0]} labels for {header.Dims[0]} images in {options.Images}");
        }
        long total = header.Dims[0];
        long start = Math.Min(options.Offset, total);
        long count = Math.Min(total - start, options.Limit ?? long.MaxValue);
        return new IdxSource(options, header, start, count);
    }

    static bool IsGzip(string path)
    {
        using var fs = File.OpenRead(path);
        return fs.ReadByte() == 0x1f && fs.ReadByte() == 0x8b;
    }

    sealed class IdxSource(IdxOptions options, IdxHeader header, long start, long count) : IDataSource, IRangeDataSource
    {
        public IDataSource Slice(long first, long rows) => new IdxSource(options, header, start + first, rows);
        public long? Count => count;
        public bool Preprocessed => false;
        public IEnumerable<string> Files => options.Labels is null ? [options.Images] : [options.Images, options.Labels];
        public bool? HasLabels => options.Labels is not null;

        public IEnumerable<DataBatch> Read(InputSpec spec, int batchSize, CancellationToken cancellation)
        {
            int h = header.Dims[1], w = header.Dims[2], hw = h * w;
            using var images = OpenStream(options.Images);
            ReadHeader(images, options.Images);
            Skip(images, start * hw, options.Images);
            Stream? labels = null;
            try
            {
                if (options.Labels is not null)
                {
                    labels = OpenStream(options.Labels);
                    ReadHeader(labels, options.Labels);
                    Skip(labels, start, options.Labels);
                }
                batchSize = (int)Math.Clamp(Array.MaxLength / hw, 1, batchSize);
                // The buffer grows as data arrives: a small (gzipped) file that declares huge images allocates
                // no more than it really holds before it is found truncated.
                var buffer = new byte[Math.Min(batchSize * hw, 1 << 20)];
                var lbuf = new byte[batchSize];
                for (long done = 0; done < count;)
                {
                    cancellation.ThrowIfCancellationRequested();
                    int n = (int)Math.Min(batchSize, count - done);
                    for (int got = 0, r; got < n * hw; got += r)
                    {
                        int want = Math.Min(1 << 20, n * hw - got);
                        if (buffer.Length < got + want) Array.Resize(ref buffer, (int)Math.Min(n * hw, Math.Max(2L * buffer.Length, got + want)));
                        if ((r = Fill(images, buffer.AsSpan(got, want), options.Images)) < want)
                            throw new LoupeException($"{options.Images}: truncated: ended before item {start + done + n}");
                    }
                    long[]? lab = null;
                    if (labels is not null)
                    {
                        if (Fill(labels, lbuf.AsSpan(0, n), options.Labels!) < n) throw new LoupeException($"{options.Labels}: truncated");
                        lab = lbuf.Take(n).Select(b => (long)b).ToArray();
                    }
                    var ids = Enumerable.Range(0, n).Select(i => (start + done + i).ToString("D5")).ToArray();
                    yield return new DataBatch(ids, ToTensor(buffer, n, h, w, spec), lab);
                    done += n;
                }
            }
            finally { labels?.Dispose(); }
        }

        static Tensor ToTensor(byte[] buffer, int n, int h, int w, InputSpec spec)
        {
            using var scope = NewDisposeScope();
            var t = tensor(buffer.AsSpan(0, n * h * w).ToArray(), [n, 1, h, w]).to(ScalarType.Float32) / 255f;
            if (h != spec.Height || w != spec.Width)
                t = nn.functional.interpolate(t, [spec.Height, spec.Width], mode: InterpolationMode.Bilinear, align_corners: false);
            if (spec.Channels == 3) t = t.expand(-1, 3, -1, -1).contiguous();
            return scope.MoveToOuter(t);
        }

        static void Skip(Stream s, long bytes, string path)
        {
            if (bytes == 0) return;
            if (s.CanSeek) { s.Seek(bytes, SeekOrigin.Current); return; }
            var buf = new byte[81920];
            while (bytes > 0)
            {
                int r = Fill(s, buf.AsSpan(0, (int)Math.Min(buf.Length, bytes)), path);
                if (r == 0) throw new LoupeException($"{path}: truncated");
                bytes -= r;
            }
        }

        public void Dispose() { }
    }
}
