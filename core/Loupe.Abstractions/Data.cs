using static TorchSharp.torch;

namespace Loupe.Abstractions;

/// <summary>A batch of inputs. Pixels are N×C×H×W float32: in [0,1] (not yet normalised), or already
/// normalised model input when <see cref="IDataSource.Preprocessed"/> is true.</summary>
public sealed class DataBatch(string[] ids, Tensor pixels, long[]? labels, Tensor? masks = null) : IDisposable
{
    /// <summary>Known object masks (N×1×H×W, 1 = object) when the source has them (e.g. segmentations, placed items);
    /// metrics such as the pointing game use them.</summary>
    public Tensor? Masks { get; } = masks;
    /// <summary>Stable input ids (file names, dataset indices).</summary>
    public string[] Ids { get; } = ids;
    /// <summary>Image tensor.</summary>
    public Tensor Pixels { get; } = pixels;
    /// <summary>Ground-truth labels, when the source has them.</summary>
    public long[]? Labels { get; } = labels;
    /// <inheritdoc/>
    public void Dispose()
    {
        Pixels.Dispose();
        Masks?.Dispose();
    }
}

/// <summary>An open data source: streams batches, never loads a whole dataset.</summary>
public interface IDataSource : IDisposable
{
    /// <summary>Number of items when known cheaply.</summary>
    long? Count { get; }
    /// <summary>True when the data is already normalised model input (e.g. <c>.npy</c> tensors).</summary>
    bool Preprocessed { get; }
    /// <summary>Streams batches shaped to <paramref name="spec"/>.</summary>
    IEnumerable<DataBatch> Read(InputSpec spec, int batchSize, CancellationToken cancellation);
    /// <summary>Files read (hashed into the manifest).</summary>
    IEnumerable<string> Files { get; }
    /// <summary>Whether every item carries a ground-truth class (<see cref="DataBatch"/>'s labels): the host refuses a
    /// target that reads labels (<see cref="IDataTarget"/>) at validation when false; null when the source cannot say
    /// before reading.</summary>
    bool? HasLabels => null;
}

/// <summary>Optional for sources that can read a contiguous range of items without reading the ones before it
/// (<c>--shard</c> uses it; other sources are sliced by streaming past the rows before the range).</summary>
public interface IRangeDataSource
{
    /// <summary>A source over items [<paramref name="start"/>, <paramref name="start"/> + <paramref name="count"/>),
    /// with the same ids those items have in the whole source. The caller disposes both sources.</summary>
    IDataSource Slice(long start, long count);
}

/// <summary>What a data adapter gets when opening.</summary>
/// <param name="BaseDirectory">Folder relative paths resolve against.</param>
/// <param name="Input">The model's effective input spec (sources check shapes against it).</param>
public sealed record DataOpenContext(string BaseDirectory, InputSpec Input)
{
    /// <summary>Warnings to put in the manifest.</summary>
    public Action<string> Warn { get; init; } = _ => { };
    /// <summary>Largest image (pixels) a decoder may allocate.</summary>
    public long MaxImagePixels { get; init; } = 64L * 1024 * 1024;
}

/// <summary>Opens data sources from options. Derive from <see cref="DataAdapter{TOptions}"/>.</summary>
public interface IDataAdapter : IHasOptions
{
    /// <summary>Opens the source; throws <see cref="LoupeException"/> naming the file on bad input.</summary>
    IDataSource Open(object options, DataOpenContext context);
}

/// <summary>Base class of data adapters.</summary>
public abstract class DataAdapter<TOptions> : IDataAdapter, IHasOptions<TOptions> where TOptions : class, new()
{
    /// <inheritdoc/>
    public Type OptionsType => typeof(TOptions);
    /// <summary>Opens the source.</summary>
    public abstract IDataSource Open(TOptions options, DataOpenContext context);
    IDataSource IDataAdapter.Open(object options, DataOpenContext context) => Open((TOptions)options, context);
}
