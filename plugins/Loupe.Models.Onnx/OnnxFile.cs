using Google.Protobuf;
using Loupe.Abstractions;
using Onnx;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

// Parsing: the ONNX protobuf classes come from OnnxSharp 0.3.2 (MIT). It is nothing more than the C# code that
// protoc generates from onnx.proto (ONNX 1.18: external data, float8 types) on top of Google.Protobuf, plus a few
// helpers we do not use. Taking it instead of running protoc on a vendored onnx.proto keeps the build free of a code
// generation step and of a 4,000-line generated file in the repository; the classes (Onnx.ModelProto, ...) are the
// standard generated ones, so switching to our own generated copy later is a namespace change.

/// <summary>A parsed, self-contained ONNX model: external data is inlined, the one real input is known.</summary>
public sealed class OnnxFile
{
    /// <summary>The model (external tensors already read into <c>raw_data</c>).</summary>
    public required ModelProto Model { get; init; }
    /// <summary>The file it came from (for messages).</summary>
    public required string Source { get; init; }
    /// <summary>Opset of the default (ai.onnx) domain.</summary>
    public required long Opset { get; init; }
    /// <summary>The graph input that takes the image (N×C×H×W).</summary>
    public required ValueInfoProto Input { get; init; }
    /// <summary>Every graph input that is not an initializer, in graph order (the image and any side inputs).</summary>
    public IReadOnlyList<ValueInfoProto> Inputs { get; init; } = [];

    /// <summary>Whether the image input is one C×H×W image without a batch dimension (torchvision's detectors exported as
    /// torchvision documents it, <c>torch.onnx.export(model, ([image],), ...)</c>).</summary>
    public bool Unbatched => Dims(Input)?.Length == 3;

    /// <summary>Refuses an unbatched graph with other inputs: side inputs are fed per batch row.</summary>
    public void CheckUnbatchedInputs()
    {
        if (Unbatched && Inputs.Count > 1)
            throw new LoupeException($"{Source}: input '{Input.Name}' is one image without a batch dimension and the graph has other inputs ({string.Join(", ", Inputs.Where(i => i.Name != Input.Name).Select(i => $"'{i.Name}'"))}); side inputs are supported on graphs that take N×C×H×W images only");
    }

    /// <summary>This file with the image input chosen: <paramref name="name"/> (option <c>image_input</c>), or the only
    /// N×C×H×W input when the model has several inputs.</summary>
    public OnnxFile WithImageInput(string? name)
    {
        if (name is null)
        {
            var images = Inputs.Where(i => Dims(i)?.Length == 4).ToList();
            if (Inputs.Count > 1 && images.Count > 1)
                throw new LoupeException($"{Source} has {images.Count} N×C×H×W inputs ({string.Join(", ", images.Select(i => $"'{i.Name}'"))}): set option image_input to the one the data source feeds");
            return this;
        }
        var chosen = Inputs.FirstOrDefault(i => i.Name == name)
            ?? throw new LoupeException($"{Source}: image_input '{name}' is not an input of the model{Suggest.DidYouMean(name, Inputs.Select(i => i.Name))}; inputs: {string.Join(", ", Inputs.Select(i => i.Name))}");
        return new OnnxFile { Model = Model, Source = Source, Opset = Opset, Input = chosen, Inputs = Inputs };
    }

    /// <summary>Largest input image (H×W) a model may declare: it is test-run on one such input at load.</summary>
    public const long MaxInputPixels = 4096L * 4096;

    /// <summary>Lowest and highest default-domain opsets this backend accepts.</summary>
    public const long MinOpset = 7, MaxOpset = 23;

    /// <summary>Reads and checks an ONNX file.</summary>
    public static OnnxFile Load(string path, long maxBytes)
    {
        var full = System.IO.Path.GetFullPath(path);
        if (!File.Exists(full)) throw new LoupeException($"ONNX file not found: {full}");
        SafeFile.RequireRegular(full, $"ONNX file {full}");
        var length = new FileInfo(full).Length;
        if (length > maxBytes)
            throw new LoupeException($"ONNX file {full} is {length / 1048576.0:F0} MB, above the limit of {maxBytes / 1048576.0:F0} MB (option max_file_mb)");
        if (length == 0) throw new LoupeException($"{full} is empty, not an ONNX model");
        ModelProto model;
        try
        {
            using var stream = File.OpenRead(full);
            var input = new CodedInputStream(stream);
            model = ModelProto.Parser.ParseFrom(input);
        }
        catch (Exception e) when (e is InvalidProtocolBufferException or InvalidOperationException or ArgumentException)
        {
            throw new LoupeException($"{full} is not a valid ONNX model (truncated or not an ONNX protobuf file): {e.Message}", e);
        }
        return FromProto(model, full, maxBytes);
    }

    /// <summary>Checks a model already in memory; <paramref name="source"/> names it and resolves external data.</summary>
    public static OnnxFile FromProto(ModelProto model, string source, long maxBytes)
    {
        var graph = model.Graph;
        if (graph is null || graph.Node.Count == 0 || graph.Output.Count == 0)
            throw new LoupeException($"{source} is not a valid ONNX model: it has no graph, no nodes or no outputs (truncated or not an ONNX file?)");
        if (model.IrVersion <= 0 || model.IrVersion > 100)
            throw new LoupeException($"{source} is not a valid ONNX model: ir_version {model.IrVersion} (truncated or not an ONNX file?)");
        var opsets = model.OpsetImport.Where(o => o.Domain is "" or "ai.onnx").Select(o => o.Version).ToList();
        long opset = opsets.Count == 0 ? 1 : opsets.Max();
        if (opset < MinOpset || opset > MaxOpset)
            throw new LoupeException($"{source} uses ONNX opset {opset}; the onnx backends support opsets {MinOpset}–{MaxOpset}");
        InlineExternalData(graph, source, maxBytes);
        OnnxFunctions.Inline(model, opset, source);
        OnnxContrib.Expand(model, opset, source);
        NameScopesFromMetadata(graph);
        var initNames = graph.Initializer.Select(t => t.Name).ToHashSet();
        var inputs = graph.Input.Where(i => !initNames.Contains(i.Name)).ToList();
        if (inputs.Count == 0)
            throw new LoupeException($"{source} has 0 inputs besides its initializers; Loupe image models take an N×C×H×W input");
        // Several inputs: the image is the only N×C×H×W one unless image_input says otherwise; the rest are side inputs.
        var image = inputs.Count == 1 ? inputs[0] : inputs.FirstOrDefault(i => Dims(i)?.Length == 4) ?? inputs[0];
        return new OnnxFile { Model = model, Source = source, Opset = opset, Input = image, Inputs = inputs };
    }

    /// <summary>The metadata key in which PyTorch 2's exporter (torch.onnx.export with dynamo) records each node's module
    /// scopes: the Python repr of a list of cumulative paths, <c>['', 'layer4', 'layer4.1', 'layer4.1.conv2', 'conv2d_7']</c>
    /// (the root, the modules outermost first, the FX node).</summary>
    public const string NameScopesKey = "pkg.torch.onnx.name_scopes";

    /// <summary>Gives each node that carries <see cref="NameScopesKey"/> the scoped name the TorchScript exporter writes
    /// (<c>/layer4/layer4.1/layer4.1.conv2/node_conv2d_7</c>), so module paths (<c>layer: layer4</c>, LRP's per-layer
    /// rules) resolve the same on graphs of both exporters (<see cref="Abstractions.ModuleScopes"/>).</summary>
    static void NameScopesFromMetadata(GraphProto graph)
    {
        foreach (var node in graph.Node)
        {
            if (node.Name.StartsWith('/')) continue;
            var entry = node.MetadataProps.FirstOrDefault(p => p.Key == NameScopesKey);
            if (entry is null || ParsePythonStrings(entry.Value) is not { Count: >= 3 } scopes || scopes[0].Length != 0) continue;
            var modules = scopes.Skip(1).Take(scopes.Count - 2).ToList();
            if (modules.Any(m => m.Length == 0 || m.Contains('/'))) continue;
            node.Name = "/" + string.Join("/", modules) + "/" + (node.Name.Length > 0 ? node.Name : node.OpType);
        }
    }

    /// <summary>The strings of a Python list repr (<c>['a', "b's"]</c>), or null when the text is not one (or is longer
    /// than 4,096 characters or 64 items: metadata comes from the file).</summary>
    public static List<string>? ParsePythonStrings(string text)
    {
        if (text.Length > 4096) return null;
        var t = text.Trim();
        if (t.Length < 2 || t[0] != '[' || t[^1] != ']') return null;
        var items = new List<string>();
        int i = 1;
        while (true)
        {
            while (i < t.Length - 1 && (t[i] == ' ' || t[i] == ',')) i++;
            if (i >= t.Length - 1) return items;
            char quote = t[i];
            if (quote is not ('\'' or '"')) return null;
            var sb = new System.Text.StringBuilder();
            for (i++; ; i++)
            {
                if (i >= t.Length - 1) return null;
                if (t[i] == '\\' && i + 1 < t.Length - 1) { sb.Append(t[++i]); continue; }
                if (t[i] == quote) { i++; break; }
                sb.Append(t[i]);
            }
            items.Add(sb.ToString());
            if (items.Count > 64) return null;
        }
    }

    /// <summary>Reads tensors stored outside the .onnx (data_location = EXTERNAL) into raw_data.</summary>
    static void InlineExternalData(GraphProto graph, string source, long maxBytes)
    {
        var dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(source)) ?? ".";
        long total = 0;
        IEnumerable<TensorProto> All() => graph.Initializer.Concat(graph.Node.SelectMany(n => n.Attribute).Where(a => a.T is not null).Select(a => a.T));
        foreach (var t in All())
        {
            if (t.DataLocation != TensorProto.Types.DataLocation.External) continue;
            if (t.ExternalData.GroupBy(e => e.Key).FirstOrDefault(g => g.Count() > 1) is { } twice)
                throw new LoupeException($"{source}: tensor '{Name(t)}' lists external data key '{SafeFile.Printable(twice.Key)}' {twice.Count()} times");
            var kv = t.ExternalData.ToDictionary(e => e.Key, e => e.Value);
            if (!kv.TryGetValue("location", out var location) || location.Length == 0)
                throw new LoupeException($"{source}: tensor '{Name(t)}' is stored externally but names no data file");
            if (System.IO.Path.IsPathRooted(location) || location.Split('/', '\\').Contains(".."))
                throw new LoupeException($"{source}: tensor '{Name(t)}' points outside the model's folder ('{SafeFile.Printable(location)}'); refused");
            long offset = Number(kv, "offset", 0, t, source), length = Number(kv, "length", -1, t, source);
            // Links are resolved (a folder link to /etc with location etc/passwd must not read /etc/passwd).
            var file = SafeFile.Inside(dir, location, $"{source}: tensor '{Name(t)}' external data");
            if (!File.Exists(file))
                throw new LoupeException($"{source}: tensor '{Name(t)}' is stored in external data file '{SafeFile.Printable(location)}', which is missing (looked for {SafeFile.Printable(file)})");
            SafeFile.RequireRegular(file, $"{source}: tensor '{Name(t)}' external data file '{SafeFile.Printable(location)}'");
            var fileLength = new FileInfo(file).Length;
            long len = length >= 0 ? length : fileLength - Math.Min(offset, fileLength);
            if (offset > fileLength || len > fileLength - offset)
                throw new LoupeException($"{source}: tensor '{Name(t)}' needs {len} bytes from offset {offset} of '{SafeFile.Printable(location)}', which has {fileLength} bytes (truncated?)");
            total += len;
            if (total > maxBytes) throw new LoupeException($"{source}: external data exceeds the limit of {maxBytes / 1048576.0:F0} MB (option max_file_mb)");
            var bytes = new byte[len];
            using (var fs = File.OpenRead(file))
            {
                fs.Seek(offset, SeekOrigin.Begin);
                fs.ReadExactly(bytes);
            }
            t.RawData = ByteString.CopyFrom(bytes);
            t.DataLocation = TensorProto.Types.DataLocation.Default;
            t.ExternalData.Clear();
        }
    }

    /// <summary>A tensor's name as it may be printed.</summary>
    static string Name(TensorProto t) => SafeFile.Printable(t.Name);

    /// <summary>An external-data <c>offset</c>/<c>length</c>: a decimal integer ≥ 0 that fits 64 bits.</summary>
    static long Number(Dictionary<string, string> kv, string key, long fallback, TensorProto t, string source)
    {
        if (!kv.TryGetValue(key, out var text)) return fallback;
        if (!long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var v))
            throw new LoupeException($"{source}: tensor '{Name(t)}' external data '{key}' is '{SafeFile.Printable(text)}', not a whole number of bytes from 0 to {long.MaxValue}");
        return v;
    }

    /// <summary>The input spec (channels and size from the input's static shape or the options; mean/std from the
    /// options, default 0 and 1) and the static dims that every forward input must match (null = free).</summary>
    public (InputSpec Spec, long?[] Dims) InputSpecFor(OnnxOptions o)
    {
        var name = Input.Name;
        var declared = Dims(Input);
        if (declared is null || declared.Length is not (3 or 4))
            throw new LoupeException($"{Source}: input '{name}' has shape {Describe(declared)}; Loupe image models take N×C×H×W (rank 4), or one C×H×W image (rank 3, as torchvision's detectors export)");
        // An unbatched graph (one C×H×W image) is run image by image; its spec is that of the batched images.
        var dims = declared.Length == 3 ? [null, .. declared] : declared;
        long? Pick(long? fromFile, int? fromOptions, string what)
        {
            if (fromFile is { } f && fromOptions is { } v && f != v)
                throw new LoupeException($"{Source}: input '{name}' is {Describe(dims)}, but option {what} is {v}");
            return fromFile ?? fromOptions;
        }
        var c = Pick(dims[1], o.Channels, "channels");
        var h = Pick(dims[2], o.Height, "height");
        var w = Pick(dims[3], o.Width, "width");
        if (c is null || h is null || w is null)
            throw new LoupeException($"{Source}: input '{name}' has a symbolic shape {Describe(dims)}; set options channels, height and width");
        if (h * w > MaxInputPixels)
            throw new LoupeException($"{Source}: input '{name}' is {c}×{h}×{w}, over the limit of {MaxInputPixels} pixels per image (the model is test-run on one input at load)");
        if (c is not (1 or 3))
            throw new LoupeException($"{Source}: input '{name}' has {c} channels {Describe(dims)}; Loupe image models take 1 (grey) or 3 (RGB) channels");
        int ch = (int)c;
        var (mean, std) = OnnxSources.Normalisation(o);
        var spec = new InputSpec(ch, (int)h, (int)w, Expand(mean, ch, 0f, "mean"), Expand(std, ch, 1f, "std"));
        try { spec.Validate(); }
        catch (ArgumentException e) { throw new LoupeException($"{Source}: {e.Message}"); }
        return (spec, [null, c, dims[2], dims[3]]);
    }

    static float[] Expand(float[]? v, int channels, float fallback, string what)
    {
        if (v is null || v.Length == 0) return Enumerable.Repeat(fallback, channels).ToArray();
        if (v.Length == 1) return Enumerable.Repeat(v[0], channels).ToArray();
        if (v.Length != channels) throw new LoupeException($"option {what} has {v.Length} values; the model has {channels} input channels");
        return v;
    }

    /// <summary>"(1×3×224×224)", with ? for symbolic dims.</summary>
    public static string Describe(long?[]? dims) => dims is null ? "(unknown)" : "(" + string.Join("×", dims.Select(d => d?.ToString() ?? "?")) + ")";

    /// <summary>Checks a forward input against the static dims.</summary>
    public static void CheckInput(Tensor input, long?[] dims, string source)
    {
        if (input.dim() != 4 || Enumerable.Range(1, 3).Any(i => dims[i] is { } d && input.shape[i] != d))
            throw new LoupeException($"{source}: input must be N×{dims[1]}×{dims[2]?.ToString() ?? "H"}×{dims[3]?.ToString() ?? "W"}, got ({string.Join("×", input.shape)})");
    }

    /// <summary>Static dimensions of a value (null where symbolic or unknown).</summary>
    public static long?[]? Dims(ValueInfoProto v) =>
        v.Type?.TensorType?.Shape is { } s ? s.Dim.Select(d => d.HasDimValue && d.DimValue > 0 ? d.DimValue : (long?)null).ToArray() : null;

    /// <summary>Converts an ONNX tensor to a TorchSharp tensor: floating types become float32, integer types int64, bool stays bool.</summary>
    public static Tensor ToTensor(TensorProto t, string source)
    {
        var dims = t.Dims.ToArray();
        long n = 1, extent = 1;   // extent: the product of the non-zero dims, which libtorch's strides must hold even when n is 0
        foreach (var d in dims)
        {
            if (d < 0) throw new LoupeException($"{source}: tensor '{t.Name}' has a negative dimension");
            if (d > 0 && extent > (1L << 40) / d)
                throw new LoupeException($"{source}: tensor '{t.Name}' declares shape ({string.Join("×", dims)}), more elements than any model file holds");
            n *= d;
            if (d > 0) extent *= d;
        }
        var dt = (TensorProto.Types.DataType)t.DataType;
        var rawMem = t.RawData.Memory;
        var raw = rawMem.Span;
        void CheckRaw(int elemSize)
        {
            if (rawMem.Length != n * elemSize)
                throw new LoupeException($"{source}: tensor '{t.Name}' ({string.Join("×", dims)}, {dt}) has {rawMem.Length} bytes of data, expected {n * elemSize} (truncated?)");
        }
        void CheckCount(int count)
        {
            if (count != n)
                throw new LoupeException($"{source}: tensor '{t.Name}' ({string.Join("×", dims)}, {dt}) has {count} values, expected {n} (truncated?)");
        }
        switch (dt)
        {
            case TensorProto.Types.DataType.Float:
            {
                float[] v;
                if (raw.Length > 0) { CheckRaw(4); v = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(raw).ToArray(); }
                else { CheckCount(t.FloatData.Count); v = t.FloatData.ToArray(); }
                return tensor(v, dims);
            }
            case TensorProto.Types.DataType.Double:
            {
                double[] v;
                if (raw.Length > 0) { CheckRaw(8); v = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, double>(raw).ToArray(); }
                else { CheckCount(t.DoubleData.Count); v = t.DoubleData.ToArray(); }
                return tensor(v.Select(x => (float)x).ToArray(), dims);
            }
            case TensorProto.Types.DataType.Float16:
            {
                float[] v;
                if (raw.Length > 0) { CheckRaw(2); v = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(raw).ToArray().Select(h => (float)h).ToArray(); }
                else { CheckCount(t.Int32Data.Count); v = t.Int32Data.Select(b => (float)BitConverter.UInt16BitsToHalf((ushort)b)).ToArray(); }
                return tensor(v, dims);
            }
            case TensorProto.Types.DataType.Int64:
            {
                long[] v;
                if (raw.Length > 0) { CheckRaw(8); v = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(raw).ToArray(); }
                else { CheckCount(t.Int64Data.Count); v = t.Int64Data.ToArray(); }
                return tensor(v, dims);
            }
            case TensorProto.Types.DataType.Int32 or TensorProto.Types.DataType.Int16 or TensorProto.Types.DataType.Int8
                or TensorProto.Types.DataType.Uint8 or TensorProto.Types.DataType.Uint16 or TensorProto.Types.DataType.Bool:
            {
                int size = dt switch { TensorProto.Types.DataType.Int32 => 4, TensorProto.Types.DataType.Int16 or TensorProto.Types.DataType.Uint16 => 2, _ => 1 };
                long[] v;
                if (raw.Length > 0)
                {
                    CheckRaw(size);
                    var r = raw;
                    v = new long[n];
                    for (int i = 0; i < n; i++)
                        v[i] = dt switch
                        {
                            TensorProto.Types.DataType.Int32 => BitConverter.ToInt32(r.Slice(i * 4, 4)),
                            TensorProto.Types.DataType.Int16 => BitConverter.ToInt16(r.Slice(i * 2, 2)),
                            TensorProto.Types.DataType.Uint16 => BitConverter.ToUInt16(r.Slice(i * 2, 2)),
                            TensorProto.Types.DataType.Int8 => (sbyte)r[i],
                            _ => r[i],
                        };
                }
                else { CheckCount(t.Int32Data.Count); v = t.Int32Data.Select(x => (long)x).ToArray(); }
                if (dt == TensorProto.Types.DataType.Bool) return tensor(v.Select(x => x != 0).ToArray(), dims);
                return tensor(v, dims);
            }
            case TensorProto.Types.DataType.Uint32 or TensorProto.Types.DataType.Uint64:
            {
                long[] v;
                if (raw.Length > 0)
                {
                    int size = dt == TensorProto.Types.DataType.Uint32 ? 4 : 8;
                    CheckRaw(size);
                    var r = raw;
                    v = new long[n];
                    for (int i = 0; i < n; i++) v[i] = size == 4 ? BitConverter.ToUInt32(r.Slice(i * 4, 4)) : (long)BitConverter.ToUInt64(r.Slice(i * 8, 8));
                }
                else { CheckCount(t.Uint64Data.Count); v = t.Uint64Data.Select(x => (long)x).ToArray(); }
                return tensor(v, dims);
            }
            default:
                throw new LoupeException($"{source}: tensor '{t.Name}' has element type {dt}, which the onnx backend does not support");
        }
    }
}
