using static TorchSharp.torch;

namespace Loupe.Abstractions;

/// <summary>One input of a model: its graph name, its shape without the batch axis, and whether it is the image that
/// the data source feeds (exactly one input is).</summary>
/// <param name="Name">Input name (an ONNX graph input).</param>
/// <param name="Shape">Shape per row (e.g. [3, 224, 224] for the image, [4] for a metadata vector).</param>
/// <param name="IsImage">True for the image input.</param>
public sealed record ModelInput(string Name, long[] Shape, bool IsImage);

/// <summary>Optional model feature: inputs besides the image (side inputs such as a metadata vector or a second image),
/// as Captum's tuple inputs. The model reads each side input's values per input id from where its options say
/// (<see cref="Read"/>); the host makes the values of a batch's rows <see cref="Active"/> while the batch is processed
/// (every <see cref="IAnalysisContext.Batches"/>, predictions, layer passes), so a forward of the batch uses them.
/// A forward of B rows uses an active value of B rows as is and one of 1 row for every row; any other count is an
/// error. Outside any batch (shape probes at load and validation) side inputs are zeros.</summary>
public interface IModelSideInputs
{
    /// <summary>Every input of the model, the image included, in the model's order.</summary>
    IReadOnlyList<ModelInput> Inputs { get; }
    /// <summary>The side inputs' values for the rows <paramref name="ids"/> (name → N×shape), read and checked
    /// (shape, size) from their sources; a <see cref="LoupeException"/> names the file when one is missing or wrong.</summary>
    IReadOnlyDictionary<string, Tensor> Read(IReadOnlyList<string> ids);
    /// <summary>The values forwards use now (the innermost <see cref="Use"/>); empty outside a batch.</summary>
    IReadOnlyDictionary<string, Tensor> Active { get; }
    /// <summary>While the handle lives, forwards use <paramref name="values"/> (name → R×shape; R = 1 or the forward's
    /// batch size). Handles nest; the caller keeps the tensors alive until it disposes the handle.</summary>
    IDisposable Use(IReadOnlyDictionary<string, Tensor> values);
}

/// <summary>Helpers over <see cref="IModelSideInputs"/> for analyses (a no-op on models without side inputs).</summary>
public static class SideInputs
{
    /// <summary>The model's side-input feature when it has at least one side input, else null.</summary>
    public static IModelSideInputs? Of(IModel model) =>
        model is IModelSideInputs s && s.Inputs.Any(i => !i.IsImage) ? s : null;

    /// <summary>Names of the side inputs (empty for single-input models).</summary>
    public static IReadOnlyList<string> Names(IModel model) =>
        Of(model)?.Inputs.Where(i => !i.IsImage).Select(i => i.Name).ToList() ?? [];

    /// <summary>The active values gathered to <paramref name="rows"/> (row r of the result is active row
    /// <c>rows[r]</c>): what the copies of original rows need, e.g. occlusion's occluded copies of row i.</summary>
    public static Dictionary<string, Tensor> Gather(IModel model, IReadOnlyList<int> rows)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        if (Of(model) is not { } s) return result;
        using var idx = tensor(rows.Select(r => (long)r).ToArray(), dtype: ScalarType.Int64);
        foreach (var (name, v) in s.Active) result[name] = v.index_select(0, idx.to(v.device));
        return result;
    }

    /// <summary>While the handle lives, forwards see the active values gathered to <paramref name="rows"/>
    /// (<see cref="Gather"/>); a no-op when the model has no side inputs or none are active.</summary>
    public static IDisposable ForRows(IModel model, IReadOnlyList<int> rows)
    {
        if (Of(model) is not { } s || s.Active.Count == 0) return Nothing.Instance;
        var values = Gather(model, rows);
        var handle = s.Use(values);
        return new Both(handle, values.Values.ToList());
    }

    /// <summary>While the handle lives, forwards use <paramref name="values"/> (a no-op on single-input models).</summary>
    public static IDisposable Use(IModel model, IReadOnlyDictionary<string, Tensor> values) =>
        Of(model) is { } s && values.Count > 0 ? s.Use(values) : Nothing.Instance;

    /// <summary>The validation error of a step whose technique does not declare
    /// <see cref="AnalysisRequirements.HandlesSideInputs"/> on a model that has side inputs (null when fine).</summary>
    public static string? Check(AnalysisRequirements requirements, IModel model, string step, string uses) =>
        Of(model) is null || requirements.HandlesSideInputs ? null
        : $"step '{step}' ({uses}) cannot explain a model with side inputs ({string.Join(", ", Names(model))}): it neither holds them fixed nor attributes to them";

    sealed class Nothing : IDisposable
    {
        public static readonly Nothing Instance = new();
        public void Dispose() { }
    }

    sealed class Both(IDisposable handle, List<Tensor> tensors) : IDisposable
    {
        public void Dispose()
        {
            handle.Dispose();
            foreach (var t in tensors) t.Dispose();
        }
    }
}
