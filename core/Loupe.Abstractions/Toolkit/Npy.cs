using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Loupe.Abstractions.Toolkit;

/// <summary>NumPy <c>.npy</c> (format 1.0/2.0/3.0) reader, float32 and int64 writer.</summary>
public static partial class Npy
{
    /// <summary>Serialises a float32 array.</summary>
    public static byte[] Encode(NdArray a)
    {
        var bytes = WithHeader("<f4", a.Shape, a.Data.Length * 4L, out var body);
        if (BitConverter.IsLittleEndian) System.Runtime.InteropServices.MemoryMarshal.AsBytes(a.Data.AsSpan()).CopyTo(body);
        else for (int i = 0; i < a.Data.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(body[(i * 4)..], a.Data[i]);
        return bytes;
    }

    /// <summary>Serialises a one-dimensional int64 array (e.g. class labels: the <c>npy</c> data source's
    /// <c>labels:</c> file).</summary>
    public static byte[] EncodeInt64(IReadOnlyList<long> values)
    {
        var bytes = WithHeader("<i8", [values.Count], values.Count * 8L, out var body);
        for (int i = 0; i < values.Count; i++) BinaryPrimitives.WriteInt64LittleEndian(body[(i * 8)..], values[i]);
        return bytes;
    }

    /// <summary>A file of <paramref name="dataBytes"/> bytes of data after a format 1.0 header (padded to 64 bytes);
    /// <paramref name="body"/> is the data's part.</summary>
    static byte[] WithHeader(string descr, long[] dims, long dataBytes, out Span<byte> body)
    {
        var shape = dims.Length switch
        {
            0 => "()",
            1 => $"({dims[0]},)",
            _ => "(" + string.Join(", ", dims) + ")",
        };
        var header = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}";
        int total = 10 + header.Length + 1;
        int pad = (64 - total % 64) % 64;
        header = header + new string(' ', pad) + "\n";
        var bytes = new byte[10 + header.Length + dataBytes];
        bytes[0] = 0x93; "NUMPY"u8.CopyTo(bytes.AsSpan(1));
        bytes[6] = 1; bytes[7] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), (ushort)header.Length);
        Encoding.ASCII.GetBytes(header).CopyTo(bytes, 10);
        body = bytes.AsSpan(10 + header.Length);
        return bytes;
    }

    /// <summary>Parsed header of an .npy file.</summary>
    public sealed record Header(string Descr, bool FortranOrder, long[] Shape, long DataOffset)
    {
        /// <summary>Number of elements (the header is refused when it overflows).</summary>
        public long Count => Shape.Aggregate(1L, (a, b) => checked(a * b));
    }

    /// <summary>Largest element count a header may declare: 2^60, so that <c>Count × 8</c> bytes still fits a long.</summary>
    public const long MaxCount = 1L << 60;

    /// <summary>Reads and validates the header; errors name the file.</summary>
    public static Header ReadHeader(Stream s, string file)
    {
        Span<byte> pre = stackalloc byte[10];
        if (s.ReadAtLeast(pre, 10, false) < 10 || pre[0] != 0x93 || !pre[1..6].SequenceEqual("NUMPY"u8))
            throw new LoupeException($"{file}: not a NumPy .npy file (bad magic)");
        int major = pre[6];
        long headerLen;
        long offset;
        if (major == 1) { headerLen = BinaryPrimitives.ReadUInt16LittleEndian(pre[8..]); offset = 10; }
        else if (major is 2 or 3)
        {
            Span<byte> ext = stackalloc byte[2];
            if (s.ReadAtLeast(ext, 2, false) < 2) throw new LoupeException($"{file}: truncated .npy header");
            headerLen = BinaryPrimitives.ReadUInt32LittleEndian([pre[8], pre[9], ext[0], ext[1]]);
            offset = 12;
        }
        else throw new LoupeException($"{file}: unsupported .npy format version {major}");
        if (headerLen > 65536) throw new LoupeException($"{file}: .npy header of {headerLen} bytes is too large");
        var hb = new byte[headerLen];
        if (s.ReadAtLeast(hb, (int)headerLen, false) < headerLen) throw new LoupeException($"{file}: truncated .npy header");
        var h = Encoding.ASCII.GetString(hb);
        var descr = DescrRx().Match(h);
        var fortran = FortranRx().Match(h);
        var shape = ShapeRx().Match(h);
        if (!descr.Success || !fortran.Success || !shape.Success) throw new LoupeException($"{file}: malformed .npy header: {h.Trim()}");
        var dims = shape.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(d => long.TryParse(d, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v >= 0 ? v : throw new LoupeException($"{file}: bad .npy shape '{shape.Groups[1].Value}'"))
            .ToArray();
        if (dims.Aggregate(1.0, (a, b) => a * b) > MaxCount)
            throw new LoupeException($"{file}: .npy shape ({string.Join(",", dims)}) declares more elements than any file can hold");
        return new Header(descr.Groups[1].Value, fortran.Groups[1].Value == "True", dims, offset + headerLen);
    }

    /// <summary>Reads a whole little-endian float32 C-order .npy file (size-checked against the file length).</summary>
    public static NdArray Read(string path, long maxElements = 1L << 28)
    {
        using var s = File.OpenRead(path);
        var h = ReadHeader(s, path);
        if (h.Descr is not ("<f4" or "|f4")) throw new LoupeException($"{path}: dtype '{h.Descr}' is not supported; save float32 (<f4)");
        if (h.FortranOrder) throw new LoupeException($"{path}: Fortran-order arrays are not supported; save C-order");
        if (h.Count > maxElements) throw new LoupeException($"{path}: {h.Count} elements exceed the limit of {maxElements}");
        if (s.Length - h.DataOffset < h.Count * 4) throw new LoupeException($"{path}: truncated: shape ({string.Join(",", h.Shape)}) needs {h.Count * 4} bytes, file has {s.Length - h.DataOffset}");
        var data = new float[h.Count];
        s.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()));
        return new NdArray(data, h.Shape);
    }

    [GeneratedRegex(@"'descr'\s*:\s*'([^']*)'")] private static partial Regex DescrRx();
    [GeneratedRegex(@"'fortran_order'\s*:\s*(True|False)")] private static partial Regex FortranRx();
    [GeneratedRegex(@"'shape'\s*:\s*\(([^)]*)\)")] private static partial Regex ShapeRx();
}

