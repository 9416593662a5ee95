using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using static TorchSharp.torch;

namespace Loupe.Data;

/// <summary>What to do with an unreadable input in the middle of a dataset.</summary>
public enum OnError
{
    /// <summary>Stop with an error naming the file.</summary>
    Fail,
    /// <summary>Skip it and record a warning in the manifest.</summary>
    Skip,
}

/// <summary>Options of <c>image-folder</c>.</summary>
public sealed record ImageFolderOptions
{
    /// <summary>Folder of images.</summary>
    [Required, FilePath(Directory = true), Description("folder of PNG/JPEG/BMP/GIF/TGA/WebP/TIFF images (sorted by name)")]
    public string Path { get; init; } = "";
    /// <summary>Include subfolders.</summary>
    [Description("include subfolders")]
    public bool Recursive { get; init; }
    /// <summary>At most this many images.</summary>
    [Range(1, int.MaxValue), Description("read at most this many images")]
    public int? Limit { get; init; }
    /// <summary>Unreadable images policy.</summary>
    [Description("unreadable image: fail (default) or skip with a warning")]
    public OnError OnError { get; init; } = OnError.Fail;
}

/// <summary>Images from a folder. Preprocessing, exactly: decode to 8-bit RGB (or 8-bit luminance, BT.709, for
/// 1-channel models); resize to the model's H×W with ImageSharp's bilinear (Triangle) resampler, stretching;
/// then float32 ÷ 255. The host then normalises (x − mean) / std.</summary>
public sealed class ImageFolderAdapter : DataAdapter<ImageFolderOptions>
{
    static readonly string[] Extensions = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tga", ".webp", ".tif", ".tiff"];

    /// <inheritdoc/>
    public override IDataSource Open(ImageFolderOptions options, DataOpenContext context)
    {
        var files = Directory.EnumerateFiles(options.Path, "*", options.Recursive ? SearchOption.AllDirectories : SearchOption.TopDirectoryOnly)
            .Where(f => Extensions.Contains(System.IO.Path.GetExtension(f).ToLowerInvariant()))
            .OrderBy(f => f, StringComparer.Ordinal).ToList();
        if (options.Limit is { } limit) files = files.Take(limit).ToList();
        var usable = new List<string>();
        foreach (var f in files)
        {
            // Header only: refuse undecodable and oversized images before any pixel buffer is allocated.
            var problem = ImageDecoding.Check(f, context.MaxImagePixels);
            if (problem is null) { usable.Add(f); continue; }
            if (options.OnError == OnError.Skip) context.Warn($"skipped {f}: {problem}");
            else throw new LoupeException($"{f}: {problem}");
        }
        return new ImageFolderSource(options, usable, context);
    }

    sealed class ImageFolderSource(ImageFolderOptions options, List<string> files, DataOpenContext context) : IDataSource, IRangeDataSource
    {
        public IDataSource Slice(long start, long count) => new ImageFolderSource(options, files.GetRange((int)start, (int)count), context);
        public long? Count => files.Count;
        public bool Preprocessed => false;
        public IEnumerable<string> Files => files;

        public IEnumerable<DataBatch> Read(InputSpec spec, int batchSize, CancellationToken cancellation)
        {
            var ids = new List<string>();
            var pixels = new List<float>();
            foreach (var f in files)
            {
                cancellation.ThrowIfCancellationRequested();
                float[] px;
                try { px = ImageDecoding.Load(f, spec, context.MaxImagePixels); }
                catch (LoupeException e) when (options.OnError == OnError.Skip) { context.Warn("skipped " + e.Message); continue; }
                ids.Add(System.IO.Path.GetRelativePath(options.Path, f));
                pixels.AddRange(px);
                if (ids.Count == batchSize)
                {
                    yield return Batch(ids, pixels, spec);
                    ids.Clear(); pixels.Clear();
                }
            }
            if (ids.Count > 0) yield return Batch(ids, pixels, spec);
        }

        static DataBatch Batch(List<string> ids, List<float> pixels, InputSpec spec) =>
            new([.. ids], tensor(pixels.ToArray(), [ids.Count, spec.Channels, spec.Height, spec.Width]), null);

        public void Dispose() { }
    }
}

/// <summary>Image decoding with limits (ImageSharp 2.x has reported flaws with crafted files: check the header first).</summary>
public static class ImageDecoding
{
    /// <summary>Decoders that read only the first frame of animated GIF and TIFF files: the header check bounds one
    /// frame's pixels, and a file with thousands of frames must not decode them all. ImageSharp 2.1's WebP decoder
    /// has no such mode, so animated WebP files are refused (<see cref="Check"/>).</summary>
    static readonly Configuration Config = CreateConfig();

    static Configuration CreateConfig()
    {
        var c = Configuration.Default.Clone();
        c.ImageFormatsManager.SetDecoder(SixLabors.ImageSharp.Formats.Gif.GifFormat.Instance, new SixLabors.ImageSharp.Formats.Gif.GifDecoder { DecodingMode = SixLabors.ImageSharp.Metadata.FrameDecodingMode.First });
        // Text chunks (zTXt/iTXt) may inflate to gigabytes: metadata is never read.
        c.ImageFormatsManager.SetDecoder(SixLabors.ImageSharp.Formats.Png.PngFormat.Instance, new SixLabors.ImageSharp.Formats.Png.PngDecoder { IgnoreMetadata = true });
        c.ImageFormatsManager.SetDecoder(SixLabors.ImageSharp.Formats.Jpeg.JpegFormat.Instance, new SixLabors.ImageSharp.Formats.Jpeg.JpegDecoder { IgnoreMetadata = true });
        c.ImageFormatsManager.SetDecoder(SixLabors.ImageSharp.Formats.Tiff.TiffFormat.Instance, new SixLabors.ImageSharp.Formats.Tiff.TiffDecoder { DecodingMode = SixLabors.ImageSharp.Metadata.FrameDecodingMode.First });
        return c;
    }

    /// <summary>Null when the header is readable and within the pixel budget, else the problem.</summary>
    public static string? Check(string file, long maxPixels)
    {
        try
        {
            // .NET decodes file names as UTF-8: a name that is not UTF-8 comes back with U+FFFD and cannot be reopened.
            if (file.Contains('\uFFFD') && !File.Exists(file))
                return "its file name is not valid UTF-8 (shown with �), and .NET cannot open such a name: rename the file (e.g. convmv -f latin1 -t utf8)";
            // A FIFO blocks the open until a writer comes, a device never ends: refuse before opening.
            SafeFile.RequireRegular(file, "");
            using var fs = File.OpenRead(file);
            Span<byte> head = stackalloc byte[21];
            int got = fs.ReadAtLeast(head, head.Length, false);
            if (got == head.Length && head[..4].SequenceEqual("RIFF"u8) && head[8..16].SequenceEqual("WEBPVP8X"u8) && (head[20] & 0x02) != 0)
                return "animated WebP is not supported (save one frame as PNG or a still WebP)";
            // ImageSharp 2.1 sizes a BMP's colour table from the pixel-data offset before checking it (found by
            // tools/Loupe.Fuzz: a 65-byte file allocated 1.2 GB).
            if (got >= 14 && head[0] == 'B' && head[1] == 'M' && System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(head[10..]) is var offset && offset > fs.Length)
                return $"BMP pixel data offset {offset} is beyond the end of the file ({fs.Length} bytes)";
            // Decoders fill a truncated image with zeros; refuse it, as PIL does (LOAD_TRUNCATED_IMAGES off).
            fs.Position = 0;
            if (Truncation.Check(fs) is { } cut) return cut;
            fs.Position = 0;
            var info = Image.Identify(Config, fs);
            if (info is null) return "not a recognised image format";
            if (info.Width <= 0 || info.Height <= 0) return "image has no pixels";
            if ((long)info.Width * info.Height > maxPixels)
                return $"image is {info.Width}×{info.Height} = {(long)info.Width * info.Height} pixels, over the limit of {maxPixels}";
            return null;
        }
        catch (LoupeException e) { return e.Message.TrimStart(':', ' '); }
        catch (Exception e) { return $"not a readable image ({e.GetType().Name}: {e.Message})"; }
    }

    /// <summary>Decodes, resizes and scales to [0,1]; returns C×H×W floats.</summary>
    public static float[] Load(string file, InputSpec spec, long maxPixels)
    {
        if (Check(file, maxPixels) is { } problem) throw new LoupeException($"{file}: {problem}");
        Image<Rgb24> img;
        // ImageSharp 2.1 throws all kinds of exceptions on crafted files (NullReference, IndexOutOfRange,
        // DivideByZero, ... found by tools/Loupe.Fuzz): each becomes an error naming the file.
        try { img = Image.Load<Rgb24>(Config, file); }
        catch (Exception e) when (e is not OutOfMemoryException) { throw new LoupeException($"{file}: cannot decode image ({e.GetType().Name}: {e.Message})", e); }
        using var _ = img;
        if (img.Width != spec.Width || img.Height != spec.Height)
            img.Mutate(c => c.Resize(new ResizeOptions { Size = new SixLabors.ImageSharp.Size(spec.Width, spec.Height), Mode = ResizeMode.Stretch, Sampler = KnownResamplers.Triangle }));
        int hw = spec.Height * spec.Width;
        var result = new float[spec.Channels * hw];
        if (spec.Channels == 1)
        {
            using var grey = img.CloneAs<L8>();
            grey.ProcessPixelRows(rows =>
            {
                for (int y = 0; y < rows.Height; y++)
                {
                    var row = rows.GetRowSpan(y);
                    for (int x = 0; x < row.Length; x++) result[y * spec.Width + x] = row[x].PackedValue / 255f;
                }
            });
        }
        else
        {
            img.ProcessPixelRows(rows =>
            {
                for (int y = 0; y < rows.Height; y++)
                {
                    var row = rows.GetRowSpan(y);
                    for (int x = 0; x < row.Length; x++)
                    {
                        int i = y * spec.Width + x;
                        result[i] = row[x].R / 255f; result[hw + i] = row[x].G / 255f; result[2 * hw + i] = row[x].B / 255f;
                    }
                }
            });
        }
        return result;
    }
}
