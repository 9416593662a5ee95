using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Data;

/// <summary>Options of <c>npy</c>.</summary>
public sealed record NpyDataOptions
{
    /// <summary>The tensor file.</summary>
    [Required, FilePath, Description(".npy of shape N×C×H×W (N×H×W for a one-channel model; float32, or any numeric dtype: read as float32), already preprocessed (normalised) model input")]
    public string Path { get; init; } = "";

    /// <summary>Ground-truth labels.</summary>
    [FilePath, Description("optional .npy of the inputs' integer class labels (any integer dtype, or whole numbers; shape N or N×1): the classes the 'label' target explains")]
    public string? Labels { get; init; }

    /// <summary>Object masks.</summary>
    [FilePath, Description("optional .npy of the inputs' object masks, N×H×W or N×1×H×W at the model input's size (any dtype, non-zero = object; Quantus's s_batch): what the localisation metrics and the pointing game compare maps with")]
    public string? Masks { get; init; }
}

/// <summary>Preprocessed tensors from a <c>.npy</c> file (N×C×H×W; float32 or any dtype <see cref="Npy.ElementOf"/>
/// reads, converted), streamed batch by batch (a Fortran-order file is read whole, in C order).
/// No resizing or normalisation: results can be compared exactly with other tools on the same tensor.</summary>
public sealed class NpyDataAdapter : DataAdapter<NpyDataOptions>
{
    /// <inheritdoc/>
    public override IDataSource Open(NpyDataOptions options, DataOpenContext context)
    {
        Npy.Header h;
        long length;
        using (var s = File.OpenRead(options.Path)) { h = Npy.ReadHeader(s, options.Path); length = s.Length; }
        var type = Npy.ElementOf(h, options.Path);
        // Fortran order (np.asfortranarray, a saved transpose): an input's values are scattered over the whole file, so
        // the array is read once into memory in C order, up to FortranLimit elements (1 GB of float32).
        if (h.FortranOrder && h.Count > FortranLimit)
            throw new LoupeException($"{options.Path}: a Fortran-order array of {h.Count:N0} elements is read whole into memory, and that is more than {FortranLimit:N0}; save C-order (np.ascontiguousarray) to stream it by input");
        var spec = context.Input;
        // N×H×W for a one-channel model (MNIST-style arrays) is N×1×H×W: the same bytes.
        if (h.Shape.Length == 3 && spec.Channels == 1) h = h with { Shape = [h.Shape[0], 1, h.Shape[1], h.Shape[2]] };
        if (h.Shape.Length != 4) throw new LoupeException($"{options.Path}: expected 4 dimensions N×C×H×W{(spec.Channels == 1 ? " (or N×H×W)" : "")}, found shape ({string.Join(",", h.Shape)})");
        if (h.Shape[1] != spec.Channels || h.Shape[2] != spec.Height || h.Shape[3] != spec.Width)
            throw new LoupeException($"{options.Path}: shape ({string.Join(",", h.Shape)}) does not match the model input N×{spec.Channels}×{spec.Height}×{spec.Width}");
        Npy.CheckLength(h, type, length, options.Path);
        var whole = h.FortranOrder ? Npy.Read(options.Path, FortranLimit).Data : null;
        return new NpySource(options.Path, h, type, options.Labels is null ? null : ReadLabels(options.Labels, h.Shape[0]), options.Labels,
            options.Masks is null ? null : OpenMasks(options.Masks, h.Shape[0], spec), whole);
    }

    /// <summary>Most elements of a Fortran-order array, which is read whole (C order) rather than streamed.</summary>
    public const long FortranLimit = 1L << 28;

    /// <summary>The masks file: one H×W (or 1×H×W) mask per input, at the model input's size.</summary>
    static Npy.Rows OpenMasks(string file, long n, InputSpec spec)
    {
        var rows = Npy.Rows.Open(file, (long)spec.Height * spec.Width);
        var shape = rows.Header.Shape;
        bool fits = shape.Length == 3 && shape[1] == spec.Height && shape[2] == spec.Width
            || shape.Length == 4 && shape[1] == 1 && shape[2] == spec.Height && shape[3] == spec.Width;
        if (!fits) throw new LoupeException($"{file}: masks of shape ({string.Join(",", shape)}); expected N×{spec.Height}×{spec.Width} or N×1×{spec.Height}×{spec.Width}, one mask per input at the model input's size");
        if (rows.Count != n) throw new LoupeException($"{file}: {rows.Count} masks for {n} inputs");
        return rows;
    }

    /// <summary>The labels file: N whole numbers (shape N or N×1, any dtype <see cref="Npy.Read"/> reads), for
    /// <paramref name="n"/> inputs.</summary>
    static long[] ReadLabels(string file, long n)
    {
        using (var s = File.OpenRead(file))
        {
            var h = Npy.ReadHeader(s, file);
            if (!(h.Shape.Length == 1 || h.Shape.Length == 2 && h.Shape[1] == 1))
                throw new LoupeException($"{file}: expected one label per input (shape N or N×1), found shape ({string.Join(",", h.Shape)})");
            if (h.Shape[0] != n) throw new LoupeException($"{file}: {h.Shape[0]} labels for {n} inputs");
        }
        var values = Npy.Read(file, n).Data;
        var labels = new long[n];
        for (int i = 0; i < n; i++)
            labels[i] = float.IsFinite(values[i]) && values[i] == MathF.Round(values[i]) ? (long)values[i]
                : throw new LoupeException($"{file}: label {i} ({values[i].ToString(System.Globalization.CultureInfo.InvariantCulture)}) is not a whole number; save integer class labels");
        return labels;
    }

    /// <param name="whole">The array in C order when the file holds it in Fortran order (read whole); null: streamed.</param>
    sealed class NpySource(string path, Npy.Header header, Npy.Element type, long[]? labels, string? labelsPath, Npy.Rows? masks, float[]? whole, long start = 0, long? count = null) : IDataSource, IRangeDataSource
    {
        public long? Count => count ?? header.Shape[0];
        public IDataSource Slice(long first, long rows) => new NpySource(path, header, type, labels, labelsPath, masks, whole, start + first, rows);
        public bool Preprocessed => true;
        public IEnumerable<string> Files => new[] { path, labelsPath, masks?.Path }.OfType<string>();
        public bool? HasLabels => labels is not null;

        public IEnumerable<DataBatch> Read(InputSpec spec, int batchSize, CancellationToken cancellation)
        {
            long item = header.Shape[1] * header.Shape[2] * header.Shape[3];
            using var s = whole is null ? File.OpenRead(path) : null;
            if (s is not null) s.Position = header.DataOffset + start * item * type.Size;
            var buf = new float[batchSize * item];
            long total = Count!.Value;
            for (long done = 0; done < total;)
            {
                cancellation.ThrowIfCancellationRequested();
                int n = (int)Math.Min(batchSize, total - done);
                if (whole is not null) whole.AsSpan((int)((start + done) * item), (int)(n * item)).CopyTo(buf);
                else Npy.ReadFloats(s!, buf.AsSpan(0, (int)(n * item)), type, path, (start + done) * item);
                var ids = Enumerable.Range(0, n).Select(i => (start + done + i).ToString("D5")).ToArray();
                Tensor? objects = null;
                if (masks is not null)
                {
                    var m = masks.ReadRows([.. Enumerable.Range(0, n).Select(i => start + done + i)]);
                    objects = tensor(m.Data.Select(v => v != 0 ? 1f : 0f).ToArray(), [n, 1, header.Shape[2], header.Shape[3]]);
                }
                yield return new DataBatch(ids, tensor(buf.AsSpan(0, (int)(n * item)).ToArray(), [n, header.Shape[1], header.Shape[2], header.Shape[3]]),
                    labels?[(int)(start + done)..(int)(start + done + n)], objects);
                done += n;
            }
        }

        public void Dispose() { }
    }
}

/// <summary>Registers the data sources.</summary>
public sealed class Registrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) => services
        .AddLoupeData<ImageFolderAdapter>("image-folder", "PNG/JPEG/BMP images from a folder, resized and normalised per the model's input spec")
        .AddLoupeData<IdxAdapter>("idx", "IDX files (MNIST / Fashion-MNIST), gzip or raw, streamed")
        .AddLoupeData<NpyDataAdapter>("npy", "preprocessed N×C×H×W tensors from a .npy file (float32 or any numeric dtype)");
}
