using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Core;

namespace Loupe;

/// <summary>Metrics from code (Quantus's <c>metric(model, x, y, a)</c>): a method's maps, or maps given as an array,
/// scored by a metric step, as a pipeline's <c>of:</c> does.</summary>
public sealed partial class LoupeModel
{
    /// <summary>Evaluates explanations you already have with a metric — Quantus's <c>metric(model, x_batch, y_batch,
    /// a_batch)</c>: <paramref name="maps"/> (N×H×W or N×C×H×W, row i the map of row i of <paramref name="input"/>, any
    /// resolution) explain <paramref name="input"/> (N×C×H×W model input) for <paramref name="target"/> (null: top-1;
    /// <c>"label"</c> with <paramref name="labels"/>: the ground truth). <paramref name="options"/> are the metric's
    /// <c>with:</c> (its <c>of:</c> is set). The maps go through the <c>given-maps</c> technique, so a metric that
    /// explains again (robustness, randomisation) is refused with <see cref="LoupeValidationException"/>: give it a
    /// method (<see cref="Evaluate(string, NdArray, string, object?, object?, object?, IReadOnlyList{long}?, CancellationToken, NdArray?)"/>).
    /// The result is the metric step's: <see cref="Explanation.Metrics"/> (e.g. <c>pixel_flipping_mean</c>) and its
    /// per-input values and curves in <see cref="Explanation.Artifacts"/>. <paramref name="masks"/> (N×H×W or N×1×H×W at
    /// the input's size, non-zero = object; Quantus's <c>s_batch</c>) are the objects the localisation metrics and the
    /// pointing game compare the maps with.</summary>
    public Explanation Evaluate(string metric, NdArray input, NdArray maps, object? options = null, object? target = null,
        IReadOnlyList<long>? labels = null, CancellationToken cancellation = default, NdArray? masks = null)
    {
        ArgumentNullException.ThrowIfNull(maps);
        if (maps.Shape.Length is not (3 or 4) || input.Shape.Length == 0 || maps.Shape[0] != input.Shape[0])
            throw new ArgumentException($"expected one map per input (N×H×W or N×C×H×W with N = {(input.Shape.Length > 0 ? input.Shape[0] : 0)}), got shape ({string.Join(",", maps.Shape)})", nameof(maps));
        using var folder = NpyFolder(input, labels, masks);
        var ids = Enumerable.Range(0, (int)input.Shape[0]).Select(i => i.ToString("D5")).ToList();
        var file = Path.Combine(folder.Folder, "maps.npy");   // row i: input i's map (given-maps' file)
        File.WriteAllBytes(file, Npy.Encode(maps));
        return RunEvaluation(metric, "given-maps", new { file }, options, target, folder.Data, ids, cancellation);
    }

    /// <summary>Evaluates a method with a metric: <paramref name="method"/> (e.g. <c>"saliency"</c>, with
    /// <paramref name="methodOptions"/>) explains <paramref name="input"/> for <paramref name="target"/>, then
    /// <paramref name="metric"/> (with <paramref name="options"/>) scores its maps, re-running the method where the metric
    /// needs it (noisy copies, another class, randomised models) — what a pipeline's <c>of:</c> does; with
    /// <paramref name="masks"/> as the other overload's.</summary>
    public Explanation Evaluate(string metric, NdArray input, string method, object? methodOptions = null, object? options = null, object? target = null,
        IReadOnlyList<long>? labels = null, CancellationToken cancellation = default, NdArray? masks = null)
    {
        using var folder = NpyFolder(input, labels, masks);
        var ids = Enumerable.Range(0, (int)input.Shape[0]).Select(i => i.ToString("D5")).ToList();
        return RunEvaluation(metric, method, methodOptions, options, target, folder.Data, ids, cancellation);
    }

    /// <summary>As <see cref="Evaluate(string, NdArray, string, object?, object?, object?, IReadOnlyList{long}?, CancellationToken, NdArray?)"/>
    /// on images (read as <see cref="Explain(string, IReadOnlyList{ImageInput}, object?, object?, CancellationToken)"/>
    /// reads them; ids must differ).</summary>
    public Explanation Evaluate(string metric, IReadOnlyList<ImageInput> images, string method, object? methodOptions = null, object? options = null,
        object? target = null, CancellationToken cancellation = default)
    {
        using var folder = ImageFolder(images);
        return RunEvaluation(metric, method, methodOptions, options, target, folder.Data, images.Select(i => i.Id).ToList(), cancellation);
    }

    /// <summary>Two steps, the method (id <c>method</c>, with the target) and the metric (id <c>metric</c>, <c>of:
    /// method</c>, the method's target inherited), run in order; the metric's result.</summary>
    Explanation RunEvaluation(string metric, string method, object? methodOptions, object? options, object? target, string dataSection, IReadOnlyList<string> ids, CancellationToken cancellation)
    {
        var with = options is null ? new JsonObject() : JsonSerializer.SerializeToNode(options, options.GetType(), Snake) as JsonObject
            ?? throw new ArgumentException("the metric's options must be an object (anonymous object or dictionary)", nameof(options));
        with["of"] = "method";
        var steps = new StringBuilder("steps:\n  - id: method\n    uses: ").Append(Json(method)).Append('\n');
        if (methodOptions is not null) steps.Append("    with: ").Append(Json(methodOptions)).Append('\n');
        if (target is not null) steps.Append("    target: ").Append(Json(target)).Append('\n');
        steps.Append("  - id: metric\n    uses: ").Append(Json(metric)).Append("\n    with: ").Append(with.ToJsonString()).Append('\n');
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            using var run = Prepare(_header + dataSection + steps, requireSteps: true);
            RunPrepared(run, run.Steps[0], method, ids, null, cancellation);   // its maps stay in the run's map cache
            return RunPrepared(run, run.Steps[1], metric, ids, null, cancellation);
        }
    }
}
