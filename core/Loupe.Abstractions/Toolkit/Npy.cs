using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Loupe.Abstractions.Toolkit;

/// <summary>NumPy <c>.npy</c> (format 1.0/2.0/3.0) reader (numbers of any common dtype, read as float32), float32 and
/// int64 writer.</summary>
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

    /// <summary>Reads a whole .npy file as float32 (size-checked against the file length): any element type
    /// <see cref="ElementOf"/> accepts (float64 as NumPy saves by default, integers, booleans; either byte order),
    /// C or Fortran order (returned in C order).</summary>
    public static NdArray Read(string path, long maxElements = 1L << 28)
    {
        using var s = File.OpenRead(path);
        var h = ReadHeader(s, path);
        var type = ElementOf(h, path);
        if (h.Count > maxElements) throw new LoupeException($"{path}: {h.Count} elements exceed the limit of {maxElements}");
        CheckLength(h, type, s.Length, path);
        var data = new float[h.Count];
        ReadFloats(s, data, type, path);
        return new NdArray(h.FortranOrder ? FromFortran(data, h.Shape) : data, h.Shape);
    }

    /// <summary>A C-order .npy file read row by row (the first axis): its header and element type, checked once;
    /// <see cref="ReadRows"/> reads any rows (e.g. Quantus's <c>a_batch</c> or <c>s_batch</c>, one row per input).</summary>
    public sealed record Rows(string Path, Header Header, Element Type)
    {
        /// <summary>Number of rows.</summary>
        public long Count => Header.Shape[0];
        /// <summary>Elements per row.</summary>
        public long RowElements => Header.Shape.Skip(1).Aggregate(1L, (a, b) => checked(a * b));

        /// <summary>Opens <paramref name="path"/>: any dtype <see cref="ElementOf"/> reads, C order, at least one axis, no
        /// more than <paramref name="maxRowElements"/> per row, as long as its shape says. Errors name the file.</summary>
        public static Rows Open(string path, long maxRowElements)
        {
            SafeFile.RequireRegular(path);
            using var s = File.OpenRead(path);
            var h = ReadHeader(s, path);
            var type = ElementOf(h, path);
            if (h.FortranOrder) throw new LoupeException($"{path}: Fortran-order arrays cannot be read by row; save C-order (np.ascontiguousarray)");
            if (h.Shape.Length == 0) throw new LoupeException($"{path}: a 0-d array has no rows (one per input is expected)");
            var rows = new Rows(path, h, type);
            if (rows.RowElements > maxRowElements) throw new LoupeException($"{path}: rows of {rows.RowElements} elements exceed the limit of {maxRowElements}");
            CheckLength(h, type, s.Length, path);
            return rows;
        }

        /// <summary>Rows <paramref name="rows"/> (each below <see cref="Count"/>), stacked: float32, the row's shape
        /// after a leading axis of their number.</summary>
        public NdArray ReadRows(IReadOnlyList<long> rows)
        {
            long k = RowElements;
            var data = new float[checked(rows.Count * k)];
            using var s = File.OpenRead(Path);
            for (int i = 0; i < rows.Count; i++)
            {
                if (rows[i] < 0 || rows[i] >= Count) throw new LoupeException($"{Path}: row {rows[i]} asked for, the file holds {Count}");
                s.Position = Header.DataOffset + rows[i] * k * Type.Size;
                ReadFloats(s, data.AsSpan((int)(i * k), (int)k), Type, Path, rows[i] * k);
            }
            return new NdArray(data, [rows.Count, .. Header.Shape.Skip(1)]);
        }
    }

    /// <summary>An element type of a .npy file: its kind (<c>f</c> float, <c>i</c> signed, <c>u</c> unsigned,
    /// <c>b</c> boolean), its size in bytes and its byte order.</summary>
    public readonly record struct Element(char Kind, int Size, bool BigEndian)
    {
        /// <summary>Whether the values are little-endian float32, read without conversion.</summary>
        public bool IsFloat32 => Kind == 'f' && Size == 4 && !BigEndian;
    }

    /// <summary>The header's element type, or an error naming the file: float16/32/64, signed and unsigned integers of
    /// 1–8 bytes and booleans, little- or big-endian (NumPy's <c>descr</c>: <c>&lt;f8</c>, <c>|u1</c>, <c>&gt;i4</c>, <c>|b1</c>…).</summary>
    public static Element ElementOf(Header h, string file)
    {
        var d = h.Descr;
        bool ok = d.Length == 3 && d[0] is '<' or '>' or '|'
            && (d[1], d[2]) is ('f', '2' or '4' or '8') or ('i' or 'u', '1' or '2' or '4' or '8') or ('b', '1');
        if (!ok) throw new LoupeException($"{file}: dtype '{d}' is not supported; save numbers (float32, float64, float16, integers or booleans)");
        return new Element(d[1], d[2] - '0', d[0] == '>');
    }

    /// <summary>Refuses a file shorter than its header's shape needs.</summary>
    public static void CheckLength(Header h, Element type, long fileLength, string file)
    {
        if (fileLength - h.DataOffset < h.Count * type.Size)
            throw new LoupeException($"{file}: truncated: shape ({string.Join(",", h.Shape)}) needs {h.Count * type.Size} bytes of data, the file has {fileLength - h.DataOffset}");
    }

    /// <summary>Largest integer every value up to which float32 holds exactly (2^24): larger integers are refused
    /// rather than rounded (an index or id would silently change).</summary>
    public const long ExactIntegers = 1L << 24;

    /// <summary>Reads <paramref name="into"/>.Length elements of <paramref name="type"/> from the stream's position as
    /// float32. Errors name the file and the element (counted from <paramref name="first"/>): a float64 beyond float32's
    /// range, an integer beyond ±<see cref="ExactIntegers"/>.</summary>
    public static void ReadFloats(Stream s, Span<float> into, Element type, string file, long first = 0)
    {
        if (type.IsFloat32 && BitConverter.IsLittleEndian)
        {
            s.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(into));
            return;
        }
        const int Chunk = 1 << 14;
        var buffer = new byte[Chunk * type.Size];
        for (int at = 0; at < into.Length; at += Chunk)
        {
            int k = Math.Min(Chunk, into.Length - at);
            var bytes = buffer.AsSpan(0, k * type.Size);
            s.ReadExactly(bytes);
            Convert(bytes, into.Slice(at, k), type, file, first + at);
        }
    }

    static void Convert(ReadOnlySpan<byte> bytes, Span<float> into, Element t, string file, long first)
    {
        int size = t.Size;
        for (int i = 0; i < into.Length; i++)
        {
            var b = bytes.Slice(i * size, size);
            switch (t.Kind, size)
            {
                case ('f', 2): into[i] = (float)(t.BigEndian ? BinaryPrimitives.ReadHalfBigEndian(b) : BinaryPrimitives.ReadHalfLittleEndian(b)); break;
                case ('f', 4): into[i] = t.BigEndian ? BinaryPrimitives.ReadSingleBigEndian(b) : BinaryPrimitives.ReadSingleLittleEndian(b); break;
                case ('f', _):
                    double v = t.BigEndian ? BinaryPrimitives.ReadDoubleBigEndian(b) : BinaryPrimitives.ReadDoubleLittleEndian(b);
                    if (double.IsFinite(v) && Math.Abs(v) > float.MaxValue)
                        throw new LoupeException($"{file}: element {first + i} ({v.ToString("R", CultureInfo.InvariantCulture)}) is beyond float32's range (Loupe computes in float32)");
                    into[i] = (float)v;
                    break;
                case ('b', _): into[i] = b[0] != 0 ? 1 : 0; break;
                case ('u', _):
                    ulong u = size switch
                    {
                        1 => b[0],
                        2 => t.BigEndian ? BinaryPrimitives.ReadUInt16BigEndian(b) : BinaryPrimitives.ReadUInt16LittleEndian(b),
                        4 => t.BigEndian ? BinaryPrimitives.ReadUInt32BigEndian(b) : BinaryPrimitives.ReadUInt32LittleEndian(b),
                        _ => t.BigEndian ? BinaryPrimitives.ReadUInt64BigEndian(b) : BinaryPrimitives.ReadUInt64LittleEndian(b),
                    };
                    into[i] = u <= ExactIntegers ? u : throw Inexact(file, first + i, u.ToString(CultureInfo.InvariantCulture));
                    break;
                default:
                    long n = size switch
                    {
                        1 => (sbyte)b[0],
                        2 => t.BigEndian ? BinaryPrimitives.ReadInt16BigEndian(b) : BinaryPrimitives.ReadInt16LittleEndian(b),
                        4 => t.BigEndian ? BinaryPrimitives.ReadInt32BigEndian(b) : BinaryPrimitives.ReadInt32LittleEndian(b),
                        _ => t.BigEndian ? BinaryPrimitives.ReadInt64BigEndian(b) : BinaryPrimitives.ReadInt64LittleEndian(b),
                    };
                    into[i] = Math.Abs((double)n) <= ExactIntegers ? n : throw Inexact(file, first + i, n.ToString(CultureInfo.InvariantCulture));
                    break;
            }
        }
    }

    static LoupeException Inexact(string file, long element, string value) =>
        new($"{file}: element {element} ({value}) is an integer beyond ±{ExactIntegers} (2^24), which float32 cannot hold exactly");

    /// <summary>The C-order copy of Fortran-order <paramref name="data"/> of <paramref name="shape"/> (the first
    /// index varies fastest in the file).</summary>
    static float[] FromFortran(float[] data, long[] shape)
    {
        if (shape.Count(d => d > 1) <= 1) return data;   // one axis of length > 1: the same order
        int k = shape.Length;
        var fortranStride = new long[k];
        long stride = 1;
        for (int j = 0; j < k; j++) { fortranStride[j] = stride; stride *= shape[j]; }
        var c = new float[data.Length];
        var index = new long[k];
        long from = 0;
        for (long i = 0; i < c.Length; i++)
        {
            c[i] = data[from];
            // Next C-order index: the last axis fastest; the Fortran offset follows it.
            for (int j = k - 1; j >= 0; j--)
            {
                if (++index[j] < shape[j]) { from += fortranStride[j]; break; }
                from -= (shape[j] - 1) * fortranStride[j];
                index[j] = 0;
            }
        }
        return c;
    }

    [GeneratedRegex(@"'descr'\s*:\s*'([^']*)'")] private static partial Regex DescrRx();
    [GeneratedRegex(@"'fortran_order'\s*:\s*(True|False)")] private static partial Regex FortranRx();
    [GeneratedRegex(@"'shape'\s*:\s*\(([^)]*)\)")] private static partial Regex ShapeRx();
}

