using System.Text.Json.Nodes;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Core;

/// <summary>What the model predicts for each input: the top-k classes and their probabilities (softmax of the model's
/// output, or the output itself when its rows are already probabilities), with the true label when the data has one.
/// Recorded in the run folder (<see cref="FileName"/>, summarised by the manifest's <c>predictions</c>), used to label <c>comparison.png</c>, the console summary and the
/// HTML report. Only for classifiers: a model whose output is not N × classes (e.g. a feature extractor) gets none.</summary>
public static class Predictions
{
    /// <summary>Default number of classes recorded per input (<c>settings.top_k</c>; 0 turns predictions off).</summary>
    public const int DefaultTopK = DisplayStyles.DefaultTopK;

    /// <summary>The file, in the run folder, that holds one prediction record per input (JSON lines, dataset order).</summary>
    public const string FileName = "predictions.jsonl";

    /// <summary>One no-grad forward pass over the run's data; null (with the reason) when the model is no classifier.
    /// The per-input records are streamed to <see cref="FileName"/> in <paramref name="outDir"/> as they are computed
    /// (written under a temporary name, renamed when complete), so a run over many inputs does not hold them in memory;
    /// the returned summary (<c>topK</c>, <c>source</c>, <c>count</c>, <c>file</c>) goes into the manifest.</summary>
    internal static JsonObject? Compute(PreparedRun run, int topK, string outDir, CancellationToken cancellation, out string? skipped)
    {
        skipped = null;
        if (topK <= 0 || run.Data is null) return null;
        string source = "softmax of the model output";
        string path = Path.Combine(outDir, FileName), part = path + ".part";
        long count = 0;
        try
        {
            using (var writer = new StreamWriter(part, false, new System.Text.UTF8Encoding(false)))
            {
                foreach (var batch in AnalysisContext.Read(run, run.Spec.BatchSize, cancellation))
                {
                    using var scope = NewDisposeScope();
                    Tensor output;
                    using (no_grad()) output = run.Model.Forward(batch.Input);
                    if (output.dim() != 2 || output.shape[1] < 2)
                    {
                        skipped = $"no predictions recorded: the model's output is {string.Join("×", output.shape)}, not N × classes (a detector's boxes, a segmentation map, a feature extractor: the comparison names each row's target instead)";
                        break;
                    }
                    var o = output.to(ScalarType.Float32);
                    bool probabilities = o.min().item<float>() >= 0 && (o.sum(1) - 1).abs().max().item<float>() < 1e-4;
                    if (probabilities) source = "the model output (rows are probabilities)";
                    var p = probabilities ? o : nn.functional.softmax(o, 1);
                    int k = (int)Math.Min(topK, p.shape[1]);
                    var (values, indices) = p.topk(k, 1);
                    var v = values.contiguous().ToArray<float>();
                    var ix = indices.contiguous().ToArray<long>();
                    for (int i = 0; i < batch.Ids.Length; i++)
                    {
                        var top = new JsonArray();
                        for (int j = 0; j < k; j++)
                            top.Add(new JsonObject { ["class"] = ix[i * k + j], ["label"] = Name(run.Labels, ix[i * k + j]), ["p"] = Math.Round(v[i * k + j], 6) });
                        var entry = new JsonObject { ["id"] = batch.Ids[i], ["top"] = top };
                        if (batch.Labels is { } labels && labels[i] >= 0) { entry["label"] = labels[i]; entry["labelName"] = Name(run.Labels, labels[i]); }
                        writer.WriteLine(entry.ToJsonString());
                        count++;
                    }
                }
            }
            if (skipped is not null) { File.Delete(part); return null; }
            File.Move(part, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(part); } catch (IOException) { /* the folder is gone or read-only: nothing to clean */ }
            throw;
        }
        return new JsonObject { ["topK"] = topK, ["source"] = source, ["count"] = count, ["file"] = FileName };
    }

    /// <summary>The per-input records of a run, in dataset order, streamed: from the manifest's <c>predictions.file</c> in
    /// <paramref name="runDir"/> (one JSON object per line), or from <c>predictions.inputs</c> in manifests written before
    /// the records moved to their own file. Empty when the run has none.</summary>
    public static IEnumerable<JsonObject> Read(JsonNode? manifest, string runDir)
    {
        var predictions = manifest?["predictions"] as JsonObject;
        if (predictions?["inputs"] is JsonArray inline)
        {
            foreach (var e in inline.OfType<JsonObject>()) yield return e;
            yield break;
        }
        if (predictions?["file"] is not { } f) yield break;
        string name = (string?)f ?? "";
        if (name.Length == 0 || Path.GetFileName(name) != name)
            throw new LoupeException($"manifest.json: predictions.file '{name}' must be a file name in the run folder");
        var path = Path.Combine(runDir, name);
        if (!File.Exists(path)) throw new LoupeException($"{path}: the run's predictions file is missing (manifest.json names it in predictions.file)");
        int line = 0;
        foreach (var text in File.ReadLines(path))
        {
            line++;
            if (text.Length == 0) continue;
            JsonNode? node;
            try { node = JsonNode.Parse(text); }
            catch (System.Text.Json.JsonException e) { throw new LoupeException($"{path}, line {line}: not a JSON object ({e.Message})"); }
            yield return node as JsonObject ?? throw new LoupeException($"{path}, line {line}: not a JSON object");
        }
    }

    /// <summary>The records of the inputs in <paramref name="ids"/> (all inputs when null), by input id (first record
    /// wins); reads the predictions file once and keeps only those.</summary>
    public static Dictionary<string, JsonObject> ById(JsonNode? manifest, string runDir, IEnumerable<string>? ids = null)
    {
        var wanted = ids?.ToHashSet();
        var result = new Dictionary<string, JsonObject>();
        foreach (var e in Read(manifest, runDir))
        {
            var id = (string?)e["id"] ?? "";
            if (wanted is not null && !wanted.Contains(id)) continue;
            result.TryAdd(id, e);
            if (wanted is not null && result.Count == wanted.Count) break;
        }
        return result;
    }

    /// <summary>A class's name: its label, or <c>class N</c> when the model has no labels.</summary>
    public static string Name(IReadOnlyList<string> labels, long index) => index >= 0 && index < labels.Count ? labels[(int)index] : $"class {index}";

    /// <summary>One line about an input's prediction: <c>sneaker 97.1%</c>, plus <c>(true: sandal)</c> when the label
    /// differs and is known.</summary>
    public static string Describe(JsonObject entry, bool withTruth = true)
    {
        var top = entry["top"]?[0];
        if (top is null) return "";
        var s = $"{(string?)top["label"]} {((double)top["p"]! * 100).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture)}%";
        if (withTruth && entry["labelName"] is { } truth && (long?)entry["label"] != (long?)top["class"]) s += $" (true: {(string?)truth})";
        return s;
    }
}
