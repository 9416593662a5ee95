using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using System.Text.Json;
using Loupe.Abstractions;

namespace Loupe.Models.TorchSharp;

/// <summary>Checks weights files completely before a reader allocates anything they declare. PyBridge's readers
/// size tensors from the header (safetensors) or the pickle (.pt) and only then read the bytes, so a 1 KB file could
/// ask for terabytes; here every declared size is checked against the bytes really present first. The .pt check is
/// PyTorch's <c>weights_only</c> idea: the pickle is walked opcode by opcode (never executed) and may only build
/// dicts of tensors; any other callable (os.system, builtins.eval, a model class) is refused by name.</summary>
public static class WeightsCheck
{
    static readonly Dictionary<string, int> SafetensorsDtypes = new()
    {
        ["F64"] = 8, ["F32"] = 4, ["F16"] = 2, ["BF16"] = 2, ["I64"] = 8, ["I32"] = 4, ["I16"] = 2, ["I8"] = 1, ["U8"] = 1, ["BOOL"] = 1,
    };

    static readonly Dictionary<string, int> Storages = new()
    {
        ["DoubleStorage"] = 8, ["FloatStorage"] = 4, ["HalfStorage"] = 2, ["BFloat16Storage"] = 2, ["LongStorage"] = 8, ["IntStorage"] = 4,
        ["ShortStorage"] = 2, ["CharStorage"] = 1, ["ByteStorage"] = 1, ["BoolStorage"] = 1,
    };

    /// <summary>Largest safetensors JSON header accepted.</summary>
    public const long MaxHeaderBytes = 100_000_000;
    /// <summary>Largest data.pkl accepted inside a .pt archive.</summary>
    public const long MaxPickleBytes = 64L << 20;

    /// <summary>Validates a .safetensors file: header length, JSON, dtypes, shapes, and that the offsets tile the data
    /// exactly (in range, no overlap, no hole) with each tensor's bytes = its shape × dtype size.</summary>
    public static void Safetensors(string path, long length)
    {
        using var s = File.OpenRead(path);
        Span<byte> head = stackalloc byte[8];
        if (s.ReadAtLeast(head, 8, false) < 8) throw new LoupeException($"{path}: truncated safetensors file ({length} bytes; the header length alone takes 8)");
        var n = BinaryPrimitives.ReadUInt64LittleEndian(head);
        if (n < 2 || n > MaxHeaderBytes || (long)n > length - 8)
            throw new LoupeException($"{path}: safetensors header length {n} is invalid for a {length}-byte file");
        var json = new byte[n];
        s.ReadExactly(json);
        long dataLength = length - 8 - (long)n;
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 8 }); }
        catch (JsonException e) { throw new LoupeException($"{path}: safetensors header is not valid JSON ({e.Message})"); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new LoupeException($"{path}: safetensors header must be a JSON object");
            var spans = new List<(long Begin, long End, string Name)>();
            var names = new HashSet<string>();
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (!names.Add(p.Name)) throw new LoupeException($"{path}: safetensors header names tensor '{p.Name}' twice");
                if (p.Name == "__metadata__") continue;
                string What(string problem) => $"{path}: safetensors tensor '{p.Name}': {problem}";
                if (p.Value.ValueKind != JsonValueKind.Object) throw new LoupeException(What("entry must be an object with dtype, shape and data_offsets"));
                if (!p.Value.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String) throw new LoupeException(What("missing dtype"));
                if (!SafetensorsDtypes.TryGetValue(dt.GetString()!, out var size))
                    throw new LoupeException(What($"dtype '{dt.GetString()}' is not supported (supported: {string.Join(", ", SafetensorsDtypes.Keys)})"));
                var shape = Longs(p.Value, "shape", -1) ?? throw new LoupeException(What("shape must be a list of non-negative integers"));
                var offsets = Longs(p.Value, "data_offsets", 2) ?? throw new LoupeException(What("data_offsets must be [begin, end] (non-negative integers)"));
                if (offsets[1] < offsets[0] || offsets[1] > dataLength)
                    throw new LoupeException(What($"data_offsets [{offsets[0]}, {offsets[1]}] are outside the {dataLength} bytes of data (truncated file?)"));
                double declared = shape.Aggregate((double)size, (a, b) => a * b);
                if (declared != offsets[1] - offsets[0])
                    throw new LoupeException(What($"shape [{string.Join(", ", shape)}] of {dt.GetString()} needs {declared:0} bytes, but data_offsets hold {offsets[1] - offsets[0]}"));
                spans.Add((offsets[0], offsets[1], p.Name));
            }
            long at = 0;
            foreach (var (b, e, name) in spans.OrderBy(x => x.Begin).ThenBy(x => x.End))
            {
                if (b < at) throw new LoupeException($"{path}: safetensors tensor '{name}' overlaps another tensor's bytes (offset {b} < {at})");
                if (b > at) throw new LoupeException($"{path}: safetensors data has a hole before tensor '{name}' (bytes {at}..{b} belong to no tensor)");
                at = e;
            }
            if (at != dataLength) throw new LoupeException($"{path}: safetensors data has {dataLength - at} trailing bytes that belong to no tensor");
        }
    }

    static long[]? Longs(JsonElement e, string name, int count)
    {
        if (!e.TryGetProperty(name, out var a) || a.ValueKind != JsonValueKind.Array || count >= 0 && a.GetArrayLength() != count || a.GetArrayLength() > 32) return null;
        var r = new long[a.GetArrayLength()];
        int i = 0;
        foreach (var x in a.EnumerateArray())
        {
            if (x.ValueKind != JsonValueKind.Number || !x.TryGetInt64(out var v) || v < 0) return null;
            r[i++] = v;
        }
        return r;
    }

    /// <summary>Validates a PyTorch zip checkpoint without running it: the archive's entries do not inflate beyond
    /// the file, and data.pkl only rebuilds tensors whose storages exist in the archive with the declared sizes.</summary>
    public static void PyTorchZip(string path, long length)
    {
        ZipArchive zip;
        var stream = File.OpenRead(path);
        try { zip = new ZipArchive(stream, ZipArchiveMode.Read); }
        catch (InvalidDataException e) { stream.Dispose(); throw new LoupeException($"{path}: not a valid zip archive (truncated or damaged torch.save file: {e.Message})"); }
        using (zip)
        {
            long inflated = zip.Entries.Sum(e => e.Length);
            if (inflated > 2 * length + (1 << 20))
                throw new LoupeException($"{path}: archive entries inflate to {inflated} bytes from a {length}-byte file (a zip bomb? torch.save stores tensors uncompressed)");
            var pkls = zip.Entries.Where(e => e.FullName.EndsWith("data.pkl", StringComparison.Ordinal)).ToList();
            if (pkls.Count != 1) throw new LoupeException($"{path}: expected one data.pkl in the archive, found {pkls.Count}; not a torch.save checkpoint");
            if (pkls[0].Length > MaxPickleBytes) throw new LoupeException($"{path}: data.pkl is {pkls[0].Length} bytes, over the limit of {MaxPickleBytes}");
            var pickle = new byte[pkls[0].Length];
            try
            {
                using var ps = pkls[0].Open();
                if (ps.ReadAtLeast(pickle, pickle.Length, false) < pickle.Length) throw new LoupeException($"{path}: data.pkl is truncated");
            }
            catch (InvalidDataException e) { throw new LoupeException($"{path}: data.pkl cannot be read ({e.Message})"); }
            new PickleWalker(path, pickle, key => zip.Entries.FirstOrDefault(f => f.FullName.EndsWith($"data/{key}", StringComparison.Ordinal))?.Length).Walk();
        }
    }

    /// <summary>A pickle interpreter that only tracks values: globals are names, calls are checked, never made.</summary>
    sealed class PickleWalker(string path, byte[] p, Func<string, long?> entryLength)
    {
        sealed record Global(string Module, string Name) { public override string ToString() => $"{Module}.{Name}"; }
        sealed record Storage(long Numel);
        sealed class Mark;
        sealed class Dict;
        sealed class TensorValue;
        static readonly Mark MarkValue = new();
        const int MaxStack = 1 << 20;

        readonly List<object?> _stack = [];
        readonly Dictionary<long, object?> _memo = [];
        int _pos;

        LoupeException Bad(string what) => new($"{path}: data.pkl {what} (at byte {_pos}); a weights file may only hold tensors, saved with torch.save(model.state_dict(), path). Nothing in it was executed");

        public void Walk()
        {
            while (true)
            {
                if (_pos >= p.Length) throw Bad("ends without a STOP opcode (truncated)");
                byte op = p[_pos++];
                switch (op)
                {
                    case 0x80: Take(1); break;                                  // PROTO
                    case 0x95: Take(8); break;                                  // FRAME
                    case (byte)'}': Push(new Dict()); break;                    // EMPTY_DICT
                    case (byte)']': Push(new List<object?>()); break;           // EMPTY_LIST
                    case (byte)')': Push(Array.Empty<object?>()); break;        // EMPTY_TUPLE
                    case (byte)'(': Push(MarkValue); break;                     // MARK
                    case (byte)'N': Push(null); break;
                    case 0x88: Push(true); break;
                    case 0x89: Push(false); break;
                    case (byte)'K': Push((long)Take(1)[0]); break;
                    case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2))); break;
                    case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4))); break;
                    case 0x8a:                                                  // LONG1
                    {
                        int n = Take(1)[0];
                        if (n > 8) throw Bad($"holds a {n}-byte integer");
                        var b = Take(n);
                        long v = 0;
                        for (int i = n - 1; i >= 0; i--) v = (v << 8) | b[i];
                        if (n is > 0 and < 8 && (b[n - 1] & 0x80) != 0) v -= 1L << (8 * n);
                        Push(v);
                        break;
                    }
                    case (byte)'G': Take(8); Push(0.0); break;                  // BINFLOAT
                    case (byte)'X': Push(Text(Len(4))); break;                  // BINUNICODE
                    case 0x8c: Push(Text(Len(1))); break;                       // SHORT_BINUNICODE
                    case 0x8d: Push(Text(Len(8))); break;                       // BINUNICODE8
                    case (byte)'C': Take(Len(1)); Push(Array.Empty<byte>()); break; // SHORT_BINBYTES
                    case (byte)'B': Take(Len(4)); Push(Array.Empty<byte>()); break; // BINBYTES
                    case (byte)'q': _memo[Take(1)[0]] = Top(); break;           // BINPUT
                    case (byte)'r': _memo[BinaryPrimitives.ReadUInt32LittleEndian(Take(4))] = Top(); break;
                    case 0x94: _memo[_memo.Count] = Top(); break;               // MEMOIZE
                    case (byte)'h': Push(Memo(Take(1)[0])); break;              // BINGET
                    case (byte)'j': Push(Memo(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))); break;
                    case (byte)'c':                                             // GLOBAL
                    {
                        var module = Line();
                        Push(Allowed(new Global(module, Line())));
                        break;
                    }
                    case 0x93:                                                  // STACK_GLOBAL
                    {
                        var name = Pop() as string; var module = Pop() as string;
                        if (name is null || module is null) throw Bad("has a STACK_GLOBAL without names");
                        Push(Allowed(new Global(module, name)));
                        break;
                    }
                    case (byte)'t': Push(PopMark().ToArray()); break;           // TUPLE
                    case 0x85: Push(new[] { Pop() }); break;
                    case 0x86: { var b = Pop(); var a = Pop(); Push(new[] { a, b }); break; }
                    case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new[] { a, b, c }); break; }
                    case (byte)'Q': Push(PersistentLoad(Pop())); break;         // BINPERSID
                    case (byte)'R': { var args = Pop(); var f = Pop(); Push(Call(f, args)); break; } // REDUCE
                    case (byte)'b': Pop(); if (Top() is not Dict and not TensorValue) throw Bad("sets the state of a non-dict object"); break; // BUILD
                    case (byte)'s': { Pop(); Pop(); Container(); break; }       // SETITEM
                    case (byte)'u': { if (PopMark().Count % 2 != 0) throw Bad("has an odd SETITEMS"); Container(); break; }
                    case (byte)'a': { Pop(); Container(); break; }              // APPEND
                    case (byte)'e': { PopMark(); Container(); break; }          // APPENDS
                    case (byte)'.':                                             // STOP
                        if (_stack.Count != 1 || _stack[0] is not Dict) throw Bad("does not hold a dict of tensors");
                        return;
                    default: throw Bad($"uses pickle opcode 0x{op:x2}, which a state_dict never needs");
                }
            }
        }

        object? Call(object? f, object? args)
        {
            if (f is not Global g) throw Bad("calls something that is not a known function");
            if (args is not object?[] a) throw Bad($"calls {g} without an argument tuple");
            switch (g.Name)
            {
                case "OrderedDict": return new Dict();
                case "_rebuild_tensor_v2" or "_rebuild_tensor":
                {
                    if (a.Length < 4 || a[0] is not Storage st || a[1] is not long offset || a[2] is not object?[] size || a[3] is not object?[] stride || size.Length != stride.Length)
                        throw Bad($"calls {g} with unexpected arguments");
                    double last = offset;
                    for (int i = 0; i < size.Length; i++)
                    {
                        if (size[i] is not long n || n < 0 || stride[i] is not long s || s < 0) throw Bad($"rebuilds a tensor with a bad size or stride");
                        if (n == 0) { last = -1; break; }
                        last += (n - 1) * (double)s;
                    }
                    if (offset < 0 || last >= st.Numel) throw Bad($"rebuilds a tensor that reaches element {last:0} of a storage of {st.Numel} elements");
                    return new TensorValue();
                }
                default: throw Bad($"calls {g}");
            }
        }

        object PersistentLoad(object? pid)
        {
            if (pid is not object?[] { Length: 5 } t || t[0] as string != "storage" || t[1] is not Global { Module: "torch" } type || t[2] is not string key || t[4] is not long numel)
                throw Bad("has a persistent id that is not a tensor storage");
            if (!Storages.TryGetValue(type.Name, out var size)) throw Bad($"uses storage type {type}, which is not supported");
            var bytes = entryLength(key) ?? throw Bad($"refers to storage data/{key}, which is not in the archive");
            if (numel < 0 || numel * (double)size != bytes) throw Bad($"declares {numel} elements of {type.Name} for data/{key}, which holds {bytes} bytes");
            return new Storage(numel);
        }

        Global Allowed(Global g)
        {
            bool ok = g is { Module: "collections", Name: "OrderedDict" } or { Module: "torch._utils", Name: "_rebuild_tensor_v2" or "_rebuild_tensor" }
                || g.Module == "torch" && Storages.ContainsKey(g.Name);
            if (!ok) throw Bad($"refers to {g}: only tensors, storages and OrderedDict are allowed (refused before anything was loaded)");
            return g;
        }

        void Container() { if (Top() is not (Dict or List<object?>)) throw Bad("adds items to something that is not a dict or list"); }
        object? Memo(long k) => _memo.TryGetValue(k, out var v) ? v : throw Bad($"reads memo {k}, which was never stored");
        void Push(object? v) { if (_stack.Count >= MaxStack) throw Bad("nests too deeply"); _stack.Add(v); }
        object? Top() => _stack.Count > 0 ? _stack[^1] : throw Bad("pops an empty stack");
        object? Pop() { var v = Top(); _stack.RemoveAt(_stack.Count - 1); if (v is Mark) throw Bad("pops a MARK"); return v; }
        List<object?> PopMark()
        {
            int i = _stack.FindLastIndex(v => v is Mark);
            if (i < 0) throw Bad("has no MARK to pop to");
            var items = _stack.GetRange(i + 1, _stack.Count - i - 1);
            _stack.RemoveRange(i, _stack.Count - i);
            return items;
        }
        ReadOnlySpan<byte> Take(long n)
        {
            if (n < 0 || n > p.Length - _pos) throw Bad("is truncated");
            var s = p.AsSpan(_pos, (int)n);
            _pos += (int)n;
            return s;
        }
        long Len(int width) => width switch
        {
            1 => Take(1)[0],
            4 => BinaryPrimitives.ReadUInt32LittleEndian(Take(4)),
            _ => BinaryPrimitives.ReadInt64LittleEndian(Take(8)),
        };
        string Text(long n) => Encoding.UTF8.GetString(Take(n));
        string Line()
        {
            int end = Array.IndexOf(p, (byte)'\n', _pos);
            if (end < 0) throw Bad("is truncated in a GLOBAL");
            var s = Encoding.UTF8.GetString(p, _pos, end - _pos);
            _pos = end + 1;
            return s;
        }
    }
}
