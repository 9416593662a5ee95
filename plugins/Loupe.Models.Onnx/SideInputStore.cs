using System.ComponentModel;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>Where one side input's values come from (option <c>side_inputs</c> of the onnx backends).</summary>
public sealed record SideInputSource
{
    /// <summary>The model input's name.</summary>
    [Description("the graph input's name (an input other than the image)")]
    public string Name { get; init; } = "";
    /// <summary>One .npy per input id.</summary>
    [FilePath(Directory = true), Description("a folder holding one <id>.npy per input id of the data source (ids with '/' are subfolders), each of the input's shape or 1×shape")]
    public string? Folder { get; init; }
    /// <summary>One .npy for every input.</summary>
    [FilePath, Description("a .npy of the input's shape or 1×shape, used for every input (a constant side input)")]
    public string? File { get; init; }
}

/// <summary>The side inputs of an ONNX model (every graph input but the image): their declared shapes, their sources,
/// the values the host made active for the batch (<see cref="IModelSideInputs"/>), and what a forward of B rows gets.
/// Files are untrusted: regular files only, inside their folder, element count capped at the input's size, shape checked.</summary>
internal sealed class SideInputStore : IDisposable
{
    readonly string _source;
    readonly Dictionary<string, long[]> _shapes = new(StringComparer.Ordinal);
    readonly Dictionary<string, SideInputSource> _sources = new(StringComparer.Ordinal);
    readonly Dictionary<string, Tensor> _constants = new(StringComparer.Ordinal);
    readonly List<IReadOnlyDictionary<string, Tensor>> _stack = new();
    readonly object _gate = new();

    /// <summary>Every input, the image included, in graph order.</summary>
    public IReadOnlyList<ModelInput> Inputs { get; }

    /// <summary>Names of the side inputs.</summary>
    public IReadOnlyCollection<string> Names => _shapes.Keys;

    SideInputStore(string source, IReadOnlyList<ModelInput> inputs) { _source = source; Inputs = inputs; }

    /// <summary>Checks the options' <c>side_inputs</c> against the graph: every side input needs exactly one source,
    /// every source names a side input, shapes are static; constant files are read now.</summary>
    public static SideInputStore Create(OnnxFile file, InputSpec image, OnnxOptions o)
    {
        var inputs = new List<ModelInput>();
        var store = new SideInputStore(file.Source, inputs);
        var given = o.SideInputs ?? [];
        foreach (var g in given.GroupBy(s => s.Name).Where(g => g.Count() > 1))
            throw new LoupeException($"side_inputs: input '{g.Key}' is listed {g.Count()} times");
        var sideNames = file.Inputs.Where(i => i.Name != file.Input.Name).Select(i => i.Name).ToList();
        foreach (var s in given.Where(s => !sideNames.Contains(s.Name)))
            throw new LoupeException($"side_inputs: '{s.Name}' is not a side input of {file.Source}{Suggest.DidYouMean(s.Name, sideNames)}; " +
                (sideNames.Count == 0 ? "the model has only its image input" : $"side inputs: {string.Join(", ", sideNames)}"));
        try
        {
            foreach (var v in file.Inputs)
            {
                if (v.Name == file.Input.Name)
                {
                    inputs.Add(new ModelInput(v.Name, [image.Channels, image.Height, image.Width], true));
                    continue;
                }
                var dims = OnnxFile.Dims(v);
                if (dims is null || dims.Length == 0 || dims.Skip(1).Any(d => d is null))
                    throw new LoupeException($"{file.Source}: side input '{v.Name}' has shape {OnnxFile.Describe(dims)}; side inputs need a static shape after the batch axis");
                var shape = dims.Skip(1).Select(d => d!.Value).ToArray();
                if (shape.Aggregate(1L, (a, b) => a * b) > 1L << 24)
                    throw new LoupeException($"{file.Source}: side input '{v.Name}' {OnnxFile.Describe(dims)} is over the limit of {1L << 24} elements per row");
                var src = given.FirstOrDefault(s => s.Name == v.Name)
                    ?? throw new LoupeException($"{file.Source}: the model has side input '{v.Name}' {OnnxFile.Describe(dims)} besides the image '{file.Input.Name}'; give its values with side_inputs: [{{ name: {v.Name}, folder: DIR }}] (one <id>.npy per input) or [{{ name: {v.Name}, file: X.npy }}] (one for all)");
                if ((src.Folder is null) == (src.File is null))
                    throw new LoupeException($"side_inputs: input '{v.Name}': give exactly one of 'folder' (one <id>.npy per input) or 'file' (one .npy for every input)");
                store._shapes[v.Name] = shape;
                store._sources[v.Name] = src;
                if (src.File is { } f) store._constants[v.Name] = store.Load(f, v.Name, null);
                inputs.Add(new ModelInput(v.Name, shape, false));
            }
        }
        catch
        {
            store.Dispose();
            throw;
        }
        return store;
    }

    /// <summary>A 1×shape tensor from <paramref name="path"/> (detached from dispose scopes).</summary>
    Tensor Load(string path, string name, string? id)
    {
        var shape = _shapes[name];
        long count = shape.Aggregate(1L, (a, b) => a * b);
        string what = id is null ? $"side input '{name}' ({path})" : $"side input '{name}' of input '{id}' ({path})";
        if (!System.IO.File.Exists(path)) throw new LoupeException($"{what}: file not found");
        SafeFile.RequireRegular(path, what);
        NdArray a;
        try
        {
            // The header first: a file of another shape is refused before its data is read (the cap is the input's size).
            long[] declared;
            using (var s = System.IO.File.OpenRead(path)) declared = Npy.ReadHeader(s, path).Shape;
            var rowShape = declared.Length == shape.Length + 1 && declared[0] == 1 ? declared.Skip(1).ToArray() : declared;
            if (!rowShape.SequenceEqual(shape))
                throw new LoupeException($"shape ({string.Join("×", declared)}) is not the input's shape ({string.Join("×", shape)}) or 1×that");
            a = Npy.Read(path, count);
        }
        catch (LoupeException e) { throw new LoupeException($"{what}: {e.Message}", e); }
        if (a.Data.Any(v => !float.IsFinite(v))) throw new LoupeException($"{what}: holds NaN or infinite values");
        var t = tensor(a.Data, [1, .. shape]);
        t.DetachFromDisposeScope();
        return t;
    }

    /// <inheritdoc cref="IModelSideInputs.Read"/>
    public IReadOnlyDictionary<string, Tensor> Read(IReadOnlyList<string> ids)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, src) in _sources)
        {
            Tensor value;
            if (_constants.TryGetValue(name, out var c)) value = c.expand([ids.Count, .. _shapes[name]]).contiguous();
            else
            {
                var rows = new List<Tensor>();
                try
                {
                    foreach (var id in ids)
                        rows.Add(Load(SafeFile.Inside(src.Folder!, id + ".npy", $"side input '{name}' of input '{id}'"), name, id));
                    value = cat(rows, 0);
                }
                finally { foreach (var r in rows) r.Dispose(); }
            }
            value.DetachFromDisposeScope();
            result[name] = value;
        }
        return result;
    }

    /// <inheritdoc cref="IModelSideInputs.Active"/>
    public IReadOnlyDictionary<string, Tensor> Active
    {
        get { lock (_gate) return _stack.Count > 0 ? _stack[^1] : new Dictionary<string, Tensor>(); }
    }

    /// <inheritdoc cref="IModelSideInputs.Use"/>
    public IDisposable Use(IReadOnlyDictionary<string, Tensor> values)
    {
        foreach (var name in values.Keys.Where(n => !_shapes.ContainsKey(n)))
            throw new LoupeException($"{_source}: '{name}' is not a side input; side inputs: {string.Join(", ", _shapes.Keys)}");
        lock (_gate) _stack.Add(values);
        return new Undo(() => { lock (_gate) _stack.Remove(values); });
    }

    /// <summary>The value of side input <paramref name="name"/> for a forward of <paramref name="batch"/> rows: the
    /// active value (its rows, or its one row for every row), or zeros outside any batch (shape probes).</summary>
    public Tensor ValueFor(string name, long batch)
    {
        var active = Active;
        var shape = _shapes[name];
        if (!active.TryGetValue(name, out var v)) return zeros([batch, .. shape]);
        if (!v.shape.Skip(1).SequenceEqual(shape))
            throw new LoupeException($"{_source}: side input '{name}' is ({string.Join("×", v.shape)}); the model takes N×{string.Join("×", shape)}");
        if (v.shape[0] == batch) return v.alias();
        if (v.shape[0] == 1) return v.expand([batch, .. shape]);
        throw new LoupeException($"{_source}: side input '{name}' has {v.shape[0]} rows but the forward has {batch}: a technique that forwards copies of rows must hold each row's side inputs (SideInputs.ForRows)");
    }

    public void Dispose()
    {
        foreach (var t in _constants.Values) t.Dispose();
        _constants.Clear();
    }

    sealed class Undo(Action undo) : IDisposable
    {
        int _done;
        public void Dispose() { if (Interlocked.Exchange(ref _done, 1) == 0) undo(); }
    }
}
