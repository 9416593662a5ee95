using System.Text.Json.Nodes;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Core;

/// <summary>What the model predicts for each input: the top-k classes and their probabilities (softmax of the model's
/// output, or the output itself when its rows are already probabilities), with the true label when the data has one.
/// Recorded in the manifest (<c>predictions</c>), used to label <c>comparison.png</c>, the console summary and the
/// HTML report. Only for classifiers: a model whose output is not N × classes (e.g. a feature extractor) gets none.</summary>
public static class Predictions
{
    /// <summary>Default number of classes recorded per input (<c>settings.top_k</c>; 0 turns predictions off).</summary>
    public const int DefaultTopK = DisplayStyles.DefaultTopK;

    /// <summary>One no-grad forward pass over the run's data; null (with the reason) when the model is no classifier.</summary>
    internal static JsonObject? Compute(PreparedRun run, int topK, CancellationToken cancellation, out string? skipped)
    {
        skipped = null;
        if (topK <= 0 || run.Data is null) return null;
        var inputs = new JsonArray();
        string source = "softmax of the model output";
        foreach (var batch in AnalysisContext.Read(run, run.Spec.BatchSize, cancellation))
        {
            using var scope = NewDisposeScope();
            Tensor output;
            using (no_grad()) output = run.Model.Forward(batch.Input);
            if (output.dim() != 2 || output.shape[1] < 2)
            {
                skipped = $"no predictions recorded: the model's output is {string.Join("×", output.shape)}, not N × classes (a feature extractor?)";
                return null;
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
                inputs.Add(entry);
            }
        }
        return new JsonObject { ["topK"] = topK, ["source"] = source, ["inputs"] = inputs };
    }

    /// <summary>A class's name: its label, or <c>class N</c> when the model has no labels.</summary>
    public static string Name(IReadOnlyList<string> labels, long index) => index >= 0 && index < labels.Count ? labels[(int)index] : $"class {index}";

    /// <summary>The manifest's predictions by input id.</summary>
    public static Dictionary<string, JsonObject> ById(JsonNode? manifest) =>
        (manifest?["predictions"]?["inputs"] as JsonArray ?? []).OfType<JsonObject>()
            .GroupBy(e => (string?)e["id"] ?? "").ToDictionary(g => g.Key, g => g.First());

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
