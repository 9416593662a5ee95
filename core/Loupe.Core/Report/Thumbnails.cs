using System.Text.Json.Serialization;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Core.Report;

/// <summary>Where the report finds a thumbnail of every input (<c>report/thumbnails.json</c>): sprite sheets of
/// <see cref="Columns"/> × ⌈PerSheet / Columns⌉ tiles of <see cref="Size"/>² pixels; input <c>Ids[i]</c> is tile
/// <c>i % PerSheet</c> (row-major) of sheet <c>i / PerSheet</c>.</summary>
public sealed record ThumbnailIndex(int Size, int Columns, int PerSheet, string[] Sheets, string[] Ids)
{
    /// <summary>Index file, relative to the run folder.</summary>
    public const string IndexPath = "report/thumbnails.json";
    /// <summary>At most this many inputs get a thumbnail (10,000 Fashion-MNIST tiles weigh about 4 MB).</summary>
    public const int MaxInputs = 20_000;

    /// <summary>Streams the run's data once and writes the sprite sheets and the index. Thumbnails are the display
    /// pixels (denormalised), area-resized to at most 48 px, one dispose scope per batch.</summary>
    public static ThumbnailIndex Write(ReportData run, string outDir, CancellationToken cancellation)
    {
        var data = run.Data;
        int size = Math.Min(48, Math.Max(run.Input.Height, run.Input.Width));
        const int columns = 32, perSheet = columns * 32;
        var ids = new List<string>();
        var sheets = new List<string>();
        byte[]? sheet = null;
        int inSheet = 0;
        void Flush()
        {
            if (inSheet == 0) return;
            int rows = (inSheet + columns - 1) / columns;
            var img = new RgbImage(columns * size, rows * size, sheet!.AsSpan(0, columns * size * rows * size * 3).ToArray());
            var rel = $"report/thumbs-{sheets.Count:D3}.png";
            AtomicFile.Write(Path.Combine(outDir, rel), Png.Encode(img), overwrite: true);
            sheets.Add(rel);
            inSheet = 0;
        }
        foreach (var b in data.Read(run.Input, run.BatchSize, cancellation))
        {
            using (b)
            using (var scope = NewDisposeScope())
            {
                var px = data.Preprocessed ? run.Input.Denormalize(b.Pixels) : b.Pixels;
                if (px.shape[1] == 1) px = px.expand(-1, 3, -1, -1);
                var small = nn.functional.interpolate(px.to(ScalarType.Float32), [size, size], mode: InterpolationMode.Area);
                var bytes = (small.clamp(0, 1) * 255).round().to(ScalarType.Byte).permute(0, 2, 3, 1).contiguous().ToArray<byte>();
                for (int i = 0; i < b.Ids.Length && ids.Count < MaxInputs; i++)
                {
                    sheet ??= new byte[columns * size * (perSheet / columns) * size * 3];
                    if (inSheet == 0) Array.Clear(sheet);
                    int col = inSheet % columns, row = inSheet / columns, stride = columns * size * 3;
                    for (int y = 0; y < size; y++)
                        Buffer.BlockCopy(bytes, (i * size * size + y * size) * 3, sheet, (row * size + y) * stride + col * size * 3, size * 3);
                    ids.Add(b.Ids[i]);
                    if (++inSheet == perSheet) Flush();
                }
            }
            if (ids.Count >= MaxInputs) break;
        }
        Flush();
        var index = new ThumbnailIndex(size, columns, perSheet, sheets.ToArray(), ids.ToArray());
        AtomicFile.Write(Path.Combine(outDir, IndexPath), System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(index, Manifest.JsonOptions), overwrite: true);
        return index;
    }
}
