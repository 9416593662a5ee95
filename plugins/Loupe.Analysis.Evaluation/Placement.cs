using System.Buffers.Binary;
using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using System.IO.Compression;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Options of <c>fashion-placement</c>.</summary>
public sealed record PlacementOptions
{
    /// <summary>Images.</summary>
    [Required, FilePath, Description("IDX images file (28×28 Fashion-MNIST items; .gz or not)")]
    public string Images { get; init; } = "";
    /// <summary>Labels.</summary>
    [FilePath, Description("IDX labels file (optional)")]
    public string? Labels { get; init; }
    /// <summary>Canvas size.</summary>
    [Range(1, 4096), Description("side of the black canvas the item is pasted on")]
    public int Canvas { get; init; } = 56;
    /// <summary>Limit.</summary>
    [Range(1, int.MaxValue), Description("read at most this many items")]
    public int? Limit { get; init; }
    /// <summary>Position seed.</summary>
    [Description("seed of the random positions (item i's position depends only on the seed and i)")]
    public int Seed { get; init; }
}

/// <summary>Fashion-MNIST items pasted at a seeded random position on a larger black canvas, so the object's location
/// is known (for the pointing game). Pixels ÷255; resized bilinearly when the model's size differs from the canvas;
/// grey is replicated for RGB models. Ids: item index, zero-padded.</summary>
public sealed class FashionPlacement : DataAdapter<PlacementOptions>
{
    /// <inheritdoc/>
    public override IDataSource Open(PlacementOptions o, DataOpenContext context)
    {
        var (n, ih, iw) = Header(o.Images);
        if (ih > o.Canvas || iw > o.Canvas) throw new LoupeException($"{o.Images}: items are {ih}×{iw}, larger than canvas {o.Canvas}");
        long count = Math.Min(n, o.Limit ?? int.MaxValue);
        if (o.Labels is not null && Header(o.Labels).N < count) throw new LoupeException($"{o.Labels}: fewer labels than images");
        if (context.Input.Height != o.Canvas || context.Input.Width != o.Canvas)
            context.Warn($"fashion-placement: canvas {o.Canvas}² is resized to the model's {context.Input.Height}×{context.Input.Width}");
        return new Source(o, (int)count, ih, iw);
    }

    static Stream OpenStream(string path)
    {
        var fs = File.OpenRead(path);
        int b0 = fs.ReadByte(), b1 = fs.ReadByte();
        fs.Position = 0;
        return b0 == 0x1f && b1 == 0x8b ? new GZipStream(fs, CompressionMode.Decompress) : fs;
    }

    static int[] ReadDims(Stream s, string path)
    {
        var head = new byte[4];
        if (s.ReadAtLeast(head, 4, false) < 4 || head[0] != 0 || head[1] != 0 || head[2] != 0x08 || head[3] is < 1 or > 3)
            throw new LoupeException($"{path}: not an unsigned-byte IDX file");
        var dims = new int[head[3]];
        var d = new byte[4];
        for (int i = 0; i < dims.Length; i++)
        {
            if (s.ReadAtLeast(d, 4, false) < 4) throw new LoupeException($"{path}: truncated IDX header");
            dims[i] = BinaryPrimitives.ReadInt32BigEndian(d);
        }
        return dims;
    }

    static (int N, int H, int W) Header(string path)
    {
        using var s = OpenStream(path);
        var d = ReadDims(s, path);
        return d.Length == 3 ? (d[0], d[1], d[2]) : d.Length == 1 ? (d[0], 0, 0) : throw new LoupeException($"{path}: unexpected IDX rank {d.Length}");
    }

    /// <summary>Top-left position of item <paramref name="index"/>.</summary>
    public static (int Y, int X) Position(int seed, int index, int canvas, int h, int w)
    {
        var r = new Random(unchecked(seed * 1_000_003 + index * 7_919 + 12_345));
        return (r.Next(canvas - h + 1), r.Next(canvas - w + 1));
    }

    sealed class Source(PlacementOptions o, int count, int ih, int iw) : IDataSource
    {
        public long? Count => count;
        public bool Preprocessed => false;
        public IEnumerable<string> Files => o.Labels is null ? [o.Images] : [o.Images, o.Labels];
        public bool? HasLabels => o.Labels is not null;
        public void Dispose() { }

        public IEnumerable<DataBatch> Read(InputSpec spec, int batchSize, CancellationToken cancellation)
        {
            using var images = OpenStream(o.Images);
            ReadDims(images, o.Images);
            using var labels = o.Labels is null ? null : OpenStream(o.Labels);
            if (labels is not null) ReadDims(labels, o.Labels!);
            int c = o.Canvas, item = ih * iw;
            var buf = new byte[item];
            for (int start = 0; start < count; start += batchSize)
            {
                cancellation.ThrowIfCancellationRequested();
                int k = Math.Min(batchSize, count - start);
                var px = new float[k * c * c];
                var mk = new float[k * c * c];
                var ids = new string[k];
                long[]? lab = labels is null ? null : new long[k];
                for (int j = 0; j < k; j++)
                {
                    int index = start + j;
                    if (images.ReadAtLeast(buf, item, false) < item) throw new LoupeException($"{o.Images}: truncated at item {index}");
                    var (y0, x0) = Position(o.Seed, index, c, ih, iw);
                    for (int y = 0; y < ih; y++)
                        for (int x = 0; x < iw; x++)
                        {
                            px[j * c * c + (y0 + y) * c + x0 + x] = buf[y * iw + x] / 255f;
                            mk[j * c * c + (y0 + y) * c + x0 + x] = buf[y * iw + x] > 0 ? 1f : 0f;  // the item's own pixels
                        }
                    ids[j] = index.ToString("D5");
                    if (lab is not null) { int b = labels!.ReadByte(); if (b < 0) throw new LoupeException($"{o.Labels}: truncated"); lab[j] = b; }
                }
                using var scope = NewDisposeScope();
                var t = tensor(px).view(k, 1, c, c);
                if (spec.Height != c || spec.Width != c)
                    t = nn.functional.interpolate(t, [spec.Height, spec.Width], mode: InterpolationMode.Bilinear, align_corners: false).clamp(0, 1);
                var m = tensor(mk).view(k, 1, c, c);
                if (spec.Height != c || spec.Width != c)
                    m = nn.functional.interpolate(m, [spec.Height, spec.Width], mode: InterpolationMode.Nearest);
                if (spec.Channels == 3) t = t.expand(k, 3, spec.Height, spec.Width);
                yield return new DataBatch(ids, scope.MoveToOuter(t.contiguous()), lab, scope.MoveToOuter(m.contiguous()));
            }
        }
    }
}
