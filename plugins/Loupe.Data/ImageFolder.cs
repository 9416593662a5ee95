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

/// <summary>How an image is brought to the model's H×W.</summary>
public enum ImageResize
{
    /// <summary>Both sides to the model's size; the aspect ratio changes.</summary>
    Stretch,
    /// <summary>The shorter side to <c>resize_size</c> (default H / 0.875, 256 for 224), then the centre H×W crop:
    /// torchvision's <c>Resize(256)</c> + <c>CenterCrop(224)</c>, what most ImageNet checkpoints expect.</summary>
    CenterCrop,
    /// <summary>The longer side to the model's size, keeping the aspect ratio; black bars fill the rest (centred).</summary>
    Pad,
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
    /// <summary>How images are brought to the model's size.</summary>
    [Description("stretch (default), center-crop (torchvision's Resize(256) + CenterCrop(224)) or pad (keep the aspect ratio, black bars)")]
    public ImageResize Resize { get; init; } = ImageResize.Stretch;
    /// <summary>Shorter side before the crop of <c>center-crop</c> (default round(H / 0.875)).</summary>
    [Range(1, 65536), Description("center-crop: the shorter side before the crop (default round(height / 0.875), 256 for 224)")]
    public int? ResizeSize { get; init; }
    /// <summary>Ground-truth labels.</summary>
    [Description("the images' classes (what the 'label' target explains): none (the default) or folders (torchvision's ImageFolder: an image's class is the place of its top subfolder among the folder's subfolders sorted by name; needs recursive: true)")]
    public ImageLabels Labels { get; init; }
}

/// <summary>Where <c>image-folder</c> finds the images' classes.</summary>
public enum ImageLabels
{
    /// <summary>No labels.</summary>
    None,
    /// <summary>torchvision's ImageFolder: class k is the k-th subfolder by name.</summary>
    Folders,
}

/// <summary>Images from a folder. Preprocessing, exactly: decode to 8-bit RGB (or 8-bit luminance, BT.709, for
/// 1-channel models); resize to the model's H×W with ImageSharp's bilinear (Triangle) resampler, which widens its
/// support when shrinking as PIL's does (stretching, or torchvision's shorter side + centre crop, or padding, per
/// <c>resize</c>); then float32 ÷ 255. The host then normalises (x − mean) / std.</summary>
public sealed class ImageFolderAdapter : DataAdapter<ImageFolderOptions>
{
    static readonly string[] Extensions = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tga", ".webp", ".tif", ".tiff"];

    /// <inheritdoc/>
    public override IDataSource Open(ImageFolderOptions options, DataOpenContext context)
    {
        if (options.Labels == ImageLabels.Folders && !options.Recursive)
            throw new LoupeException($"{options.Path}: option 'labels': folders reads the classes from the subfolders; set recursive: true");
        // Names exactly as stored: one that is not UTF-8 gets an escaped id and is opened by its raw bytes.
        var all = FolderFiles.List(options.Path, options.Recursive);
        var files = all.Where(f => Extensions.Contains(System.IO.Path.GetExtension(f.Id).ToLowerInvariant())).ToList();
        if (options.Limit is { } limit) files = files.Take(limit).ToList();
        var usable = new List<FolderFile>();
        int skipped = 0;
        foreach (var f in files)
        {
            // Header only: refuse undecodable and oversized images before any pixel buffer is allocated.
            var problem = ImageDecoding.Check(f, context.MaxImagePixels);
            if (problem is null) { usable.Add(f); continue; }
            if (options.OnError == OnError.Skip) { context.Warn($"skipped {f.Path}: {problem}"); skipped++; }
            else throw new LoupeException($"{f.Path}: {problem}");
        }
        if (skipped > 0) context.Warn($"image-folder: {skipped} of {files.Count} files skipped (on_error: skip); {usable.Count} images are used");
        var ignored = all.Count(f => !Extensions.Contains(System.IO.Path.GetExtension(f.Id).ToLowerInvariant()));
        if (ignored > 0) context.Warn($"image-folder: {ignored} files in {options.Path} are not images by their extension and were skipped ({string.Join(", ", Extensions)})");
        return new ImageFolderSource(options, usable, options.Labels == ImageLabels.Folders ? FolderLabels(options.Path, usable) : null, context);
    }

    /// <summary>Each file's class as torchvision's ImageFolder numbers them: the place of its top subfolder among the
    /// folder's subfolders sorted by name (ordinal); a file directly in the folder has none (an error naming it).</summary>
    static long[] FolderLabels(string folder, List<FolderFile> files)
    {
        var classes = Directory.EnumerateDirectories(folder).Select(d => System.IO.Path.GetFileName(d)).Order(StringComparer.Ordinal).ToList();
        var index = classes.Select((c, k) => (c, k)).ToDictionary(p => p.c, p => (long)p.k, StringComparer.Ordinal);
        return [.. files.Select(f =>
        {
            int slash = f.Id.IndexOf('/');
            if (slash < 0) throw new LoupeException($"{f.Path}: option 'labels': folders takes each image's class from its subfolder; this image is directly in {folder}");
            return index.TryGetValue(f.Id[..slash], out var k) ? k
                : throw new LoupeException($"{f.Path}: option 'labels': its subfolder '{f.Id[..slash]}' is not among the folder's subfolders (a name that is not UTF-8?)");
        })];
    }

    sealed class ImageFolderSource(ImageFolderOptions options, List<FolderFile> files, long[]? labels, DataOpenContext context) : IDataSource, IRangeDataSource
    {
        public IDataSource Slice(long start, long count) => new ImageFolderSource(options, files.GetRange((int)start, (int)count), labels?[(int)start..(int)(start + count)], context);
        public long? Count => files.Count;
        public bool Preprocessed => false;
        public IEnumerable<string> Files => files.Select(f => f.Path);
        public bool? HasLabels => labels is not null;

        public IEnumerable<DataBatch> Read(InputSpec spec, int batchSize, CancellationToken cancellation)
        {
            var ids = new List<string>();
            var pixels = new List<float>();
            var rows = new List<long>();
            for (int i = 0; i < files.Count; i++)
            {
                var f = files[i];
                cancellation.ThrowIfCancellationRequested();
                float[] px;
                try { px = ImageDecoding.Load(f, spec, context.MaxImagePixels, options.Resize, options.ResizeSize); }
                catch (LoupeException e) when (options.OnError == OnError.Skip) { context.Warn("skipped " + e.Message); continue; }
                ids.Add(f.Id);
                pixels.AddRange(px);
                if (labels is not null) rows.Add(labels[i]);
                if (ids.Count == batchSize)
                {
                    yield return Batch(ids, pixels, rows, spec);
                    ids.Clear(); pixels.Clear(); rows.Clear();
                }
            }
            if (ids.Count > 0) yield return Batch(ids, pixels, rows, spec);
        }

        DataBatch Batch(List<string> ids, List<float> pixels, List<long> rows, InputSpec spec) =>
            new([.. ids], tensor(pixels.ToArray(), [ids.Count, spec.Channels, spec.Height, spec.Width]), labels is null ? null : [.. rows]);

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
    public static string? Check(string file, long maxPixels) => Check(new FolderFile(file, System.IO.Path.GetFileName(file), null), maxPixels);

    /// <summary>Null when the header is readable and within the pixel budget, else the problem.</summary>
    public static string? Check(FolderFile file, long maxPixels)
    {
        try
        {
            // A FIFO blocks the open until a writer comes, a device never ends: refused before reading (a name that
            // is not UTF-8 is opened by its raw bytes).
            using var fs = file.OpenRead("");
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

    static void Resize(Image<Rgb24> img, int w, int h) =>
        img.Mutate(c => c.Resize(new ResizeOptions { Size = new SixLabors.ImageSharp.Size(w, h), Mode = ResizeMode.Stretch, Sampler = KnownResamplers.Triangle }));

    /// <summary>Brings <paramref name="img"/> to w×h (disposing it when a new image is returned).</summary>
    static Image<Rgb24> Fit(Image<Rgb24> img, int w, int h, ImageResize mode, int? resizeSize)
    {
        switch (mode)
        {
            case ImageResize.CenterCrop:
            {
                // torchvision: the shorter side to `size`, the longer to int(size · long / short); crop at round((H − h) / 2).
                int size = resizeSize ?? (int)Math.Round(Math.Min(w, h) / 0.875);
                bool wide = img.Width >= img.Height;
                int shortSide = Math.Min(img.Width, img.Height), longSide = Math.Max(img.Width, img.Height);
                int longNew = (int)((long)size * longSide / shortSide);
                int nw = wide ? longNew : size, nh = wide ? size : longNew;
                if (nw < w || nh < h) throw new LoupeException($"resize_size {size} is smaller than the model's {w}×{h} input");
                if (nw != img.Width || nh != img.Height) Resize(img, nw, nh);
                int top = (int)Math.Round((nh - h) / 2.0, MidpointRounding.ToEven), left = (int)Math.Round((nw - w) / 2.0, MidpointRounding.ToEven);
                img.Mutate(c => c.Crop(new Rectangle(left, top, w, h)));
                return img;
            }
            case ImageResize.Pad:
            {
                double scale = Math.Min(w / (double)img.Width, h / (double)img.Height);
                int nw = Math.Clamp((int)Math.Round(img.Width * scale), 1, w), nh = Math.Clamp((int)Math.Round(img.Height * scale), 1, h);
                Resize(img, nw, nh);
                var canvas = new Image<Rgb24>(Config, w, h, new Rgb24(0, 0, 0));
                var at = new SixLabors.ImageSharp.Point((w - nw) / 2, (h - nh) / 2);
                canvas.Mutate(c => c.DrawImage(img, at, 1f));
                img.Dispose();
                return canvas;
            }
            default:
                Resize(img, w, h);
                return img;
        }
    }

    /// <summary>Decodes, resizes and scales to [0,1]; returns C×H×W floats.</summary>
    public static float[] Load(string file, InputSpec spec, long maxPixels, ImageResize resize = ImageResize.Stretch, int? resizeSize = null) =>
        Load(new FolderFile(file, System.IO.Path.GetFileName(file), null), spec, maxPixels, resize, resizeSize);

    /// <summary>Decodes, resizes and scales to [0,1]; returns C×H×W floats.</summary>
    public static float[] Load(FolderFile file, InputSpec spec, long maxPixels, ImageResize resize = ImageResize.Stretch, int? resizeSize = null)
    {
        if (Check(file, maxPixels) is { } problem) throw new LoupeException($"{file.Path}: {problem}");
        Image<Rgb24> img;
        // ImageSharp 2.1 throws all kinds of exceptions on crafted files (NullReference, IndexOutOfRange,
        // DivideByZero, ... found by tools/Loupe.Fuzz): each becomes an error naming the file.
        try
        {
            using var stream = file.OpenRead();
            img = Image.Load<Rgb24>(Config, stream);
        }
        catch (Exception e) when (e is not OutOfMemoryException and not LoupeException) { throw new LoupeException($"{file.Path}: cannot decode image ({e.GetType().Name}: {e.Message})", e); }
        if (img.Width != spec.Width || img.Height != spec.Height)
        {
            try { img = Fit(img, spec.Width, spec.Height, resize, resizeSize); }
            catch { img.Dispose(); throw; }
        }
        using var _ = img;
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
