using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Loupe.Abstractions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Loupe.Core;

/// <summary>Writes files atomically: a temporary file in the same folder, then a rename.</summary>
public static class AtomicFile
{
    /// <summary>Test seam for fault injection: given the final path, returns a stream to write instead of the temporary
    /// file (e.g. <c>/dev/full</c> for a real ENOSPC), or null to write normally. Flows with the execution context.</summary>
    internal static readonly AsyncLocal<Func<string, Stream?>?> Redirect = new();

    /// <summary>Writes <paramref name="bytes"/> to <paramref name="path"/>; never leaves a half-written file at that path.</summary>
    public static void Write(string path, ReadOnlySpan<byte> bytes, bool overwrite = false)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        // A short temporary name: a final name near the 255-byte limit must not fail as "not writable".
        var tmp = Path.Combine(dir, $".{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = Redirect.Value?.Invoke(path) ?? new FileStream(tmp, FileMode.CreateNew, FileAccess.Write))
            {
                fs.Write(bytes);
                if (fs is FileStream f) f.Flush(true); else fs.Flush();
            }
            File.Move(tmp, path, overwrite);
        }
        catch
        {
            try { File.Delete(tmp); } catch { /* best effort */ }
            throw;
        }
    }
}

/// <summary>PNG encoding of display images.</summary>
public static class Png
{
    /// <summary>Encodes an RGB image as PNG bytes.</summary>
    public static byte[] Encode(RgbImage img)
    {
        using var image = Image.LoadPixelData<Rgb24>(img.Pixels, img.Width, img.Height);
        using var ms = new MemoryStream();
        image.SaveAsPng(ms);
        return ms.ToArray();
    }

    /// <summary>Reads a PNG (one Loupe wrote) as an RGB image.</summary>
    public static RgbImage Load(string path)
    {
        using var img = Image.Load<Rgb24>(path);
        var px = new byte[img.Width * img.Height * 3];
        img.CopyPixelDataTo(px);
        return new RgbImage(img.Width, img.Height, px);
    }
}
