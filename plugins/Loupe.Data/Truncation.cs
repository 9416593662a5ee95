using System.Buffers.Binary;

namespace Loupe.Data;

/// <summary>Detects PNG and JPEG files that end early. ImageSharp decodes what is there and fills the rest, which
/// would explain a half-grey picture; PIL refuses such files ("image file is truncated"), and so does Loupe.</summary>
internal static class Truncation
{
    static readonly byte[] PngSignature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    /// <summary>Null when the file is complete (or not PNG/JPEG), else the problem.</summary>
    public static string? Check(Stream fs)
    {
        Span<byte> head = stackalloc byte[8];
        if (fs.ReadAtLeast(head, 8, false) < 8) return null;
        if (head.SequenceEqual(PngSignature)) return Png(fs);
        if (head[0] == 0xFF && head[1] == 0xD8) return Jpeg(fs);
        return null;
    }

    /// <summary>Walks the chunks (length, type, data, CRC) after the signature up to IEND.</summary>
    static string? Png(Stream fs)
    {
        Span<byte> chunk = stackalloc byte[8];
        long pos = 8, length = fs.Length;
        while (true)
        {
            fs.Position = pos;
            if (fs.ReadAtLeast(chunk, 8, false) < 8) return $"truncated PNG: the file ends at byte {length} before its IEND chunk";
            long size = BinaryPrimitives.ReadUInt32BigEndian(chunk);
            if (size > int.MaxValue) return $"corrupt PNG: a chunk at byte {pos} declares {size} bytes";
            long end = pos + 12 + size;
            if (end > length) return $"truncated PNG: the chunk at byte {pos} needs {end - pos} bytes, the file ends at byte {length}";
            if (chunk[4..8].SequenceEqual("IEND"u8)) return null;
            pos = end;
        }
    }

    /// <summary>A complete JPEG has an end-of-image marker (FFD9) after its last start-of-scan (FFDA); entropy-coded
    /// data stuffs every FF byte, so neither marker can appear inside it.</summary>
    static string? Jpeg(Stream fs)
    {
        fs.Position = 0;
        long lastSos = -1, lastEoi = -1, i = 0;
        var buffer = new byte[1 << 16];
        int prev = -1, n;
        while ((n = fs.Read(buffer)) > 0)
        {
            for (int k = 0; k < n; k++, i++)
            {
                var b = buffer[k];
                if (prev == 0xFF)
                {
                    if (b == 0xDA) lastSos = i;
                    else if (b == 0xD9) lastEoi = i;
                }
                prev = b;
            }
        }
        if (lastSos < 0) return $"truncated JPEG: the file ends at byte {i} before its first scan";
        return lastEoi < lastSos ? $"truncated JPEG: no end-of-image marker after the last scan (the file ends at byte {i})" : null;
    }
}
