using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Core;

namespace Loupe;

/// <summary>What kind of result an <see cref="Artifact"/> is: the same kinds as in a run's manifest.</summary>
public enum ArtifactKind
{
    /// <summary>Raw float32 values (<see cref="Artifact.Array"/>), written as <c>.npy</c> by a pipeline run.</summary>
    Raw,
    /// <summary>A picture (<see cref="Artifact.Image"/>), written as <c>.png</c> by a pipeline run.</summary>
    Display,
    /// <summary>Structured data (<see cref="Artifact.Json"/>).</summary>
    Data,
}

/// <summary>One result of a technique, in memory.</summary>
/// <param name="Name">Artifact name (e.g. <c>cam</c>, <c>grid</c>).</param>
/// <param name="InputId">The input it is about; null for results about all inputs.</param>
/// <param name="Kind">Which of <paramref name="Array"/>, <paramref name="Image"/>, <paramref name="Json"/> is set.</param>
/// <param name="Array">Raw values (<see cref="ArtifactKind.Raw"/>).</param>
/// <param name="Image">The picture (<see cref="ArtifactKind.Display"/>).</param>
/// <param name="Json">Structured data (<see cref="ArtifactKind.Data"/>).</param>
/// <param name="Target">What was explained (e.g. <c>class 7 (sneaker)</c>), when the technique says.</param>
public sealed record Artifact(string Name, string? InputId, ArtifactKind Kind, NdArray? Array, RgbImage? Image, JsonNode? Json, string? Target)
{
    readonly RgbImage? _image = Image;
    readonly Lazy<RgbImage>? _figure;

    /// <summary>A figure the technique handed over undrawn (<see cref="IArtifactSink.Figure"/>): drawn the first time
    /// <see cref="Image"/> is read, once.</summary>
    internal Artifact(string name, string? inputId, Func<RgbImage> draw, string? target)
        : this(name, inputId, ArtifactKind.Display, null, null, null, target) => _figure = new(draw, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>The picture (<see cref="ArtifactKind.Display"/>); a figure (a plot) is drawn when first read.</summary>
    public RgbImage? Image { get => _image ?? _figure?.Value; init => _image = value; }
}

/// <summary>A top-k entry of <see cref="LoupeModel.Predict(ImageInput, int)"/>.</summary>
/// <param name="Index">Output index (class id).</param>
/// <param name="Label">Class name from the labels, or <c>class N</c>.</param>
/// <param name="Probability">Softmax of the output row (for single-label classifiers).</param>
/// <param name="Score">The raw output value (logit).</param>
public sealed record Prediction(int Index, string Label, double Probability, double Score);

/// <summary>Progress of a running technique: <paramref name="Fraction"/> in [0,1] and what it is doing.</summary>
public sealed record ExplainProgress(double Fraction, string? Message);

/// <summary>The results of one technique on some inputs.</summary>
public sealed class Explanation
{
    internal Explanation(string technique, IReadOnlyList<string> inputIds, IReadOnlyList<Artifact> artifacts,
        IReadOnlyDictionary<string, double> metrics, IReadOnlyList<string> warnings)
    {
        Technique = technique; InputIds = inputIds; Artifacts = artifacts; Metrics = metrics; Warnings = warnings;
    }

    /// <summary>The technique id.</summary>
    public string Technique { get; }
    /// <summary>Ids of the inputs, in order.</summary>
    public IReadOnlyList<string> InputIds { get; }
    /// <summary>Everything the technique produced.</summary>
    public IReadOnlyList<Artifact> Artifacts { get; }
    /// <summary>Scalar metrics the technique reported.</summary>
    public IReadOnlyDictionary<string, double> Metrics { get; }
    /// <summary>Warnings of the run and the technique.</summary>
    public IReadOnlyList<string> Warnings { get; }

    /// <summary>The raw map of an input (the only input when <paramref name="inputId"/> is null): the raw result named
    /// <paramref name="name"/>, by default the one named like the technique (e.g. <c>grad-cam</c>, at input resolution,
    /// rather than <c>grad-cam-layer</c>), else the first.</summary>
    public NdArray Map(string? inputId = null, string? name = null) => Find(inputId, ArtifactKind.Raw, name).Array!;

    /// <summary>A raw result about all inputs together (e.g. <c>features</c> of <c>embeddings</c>, <c>coordinates</c> of
    /// <c>pca</c>, <c>indices</c> of <c>nearest-neighbours</c>): rows in input order.</summary>
    public NdArray DatasetArray(string name) =>
        Artifacts.FirstOrDefault(a => a.InputId is null && a.Kind == ArtifactKind.Raw && a.Name == name)?.Array
            ?? throw new KeyNotFoundException($"{Technique} produced no raw result '{name}' about all inputs" +
                $" (it produced: {string.Join(", ", Artifacts.Where(a => a.InputId is null).Select(a => a.Name).Distinct().Take(8))})");

    /// <summary>The picture of an input (for attribution techniques, the map over the image).</summary>
    public RgbImage Overlay(string? inputId = null, string? name = null) => Find(inputId, ArtifactKind.Display, name).Image!;

    Artifact Find(string? inputId, ArtifactKind kind, string? name)
    {
        if (inputId is null)
        {
            if (InputIds.Count != 1) throw new ArgumentException($"{InputIds.Count} inputs were explained: name one ({string.Join(", ", InputIds.Take(5))})", nameof(inputId));
            inputId = InputIds[0];
        }
        var mine = Artifacts.Where(a => a.InputId == inputId && a.Kind == kind).ToList();
        return (name is null ? mine.FirstOrDefault(a => a.Name == Technique) ?? mine.FirstOrDefault() : mine.FirstOrDefault(a => a.Name == name))
            ?? throw new KeyNotFoundException($"{Technique} produced no {kind.ToString().ToLowerInvariant()} result{(name is null ? "" : $" named '{name}'")} for input '{inputId}'" +
                $" (it produced: {string.Join(", ", Artifacts.Select(a => $"{a.Name}[{a.InputId ?? "all"}]").Distinct().Take(8))})");
    }
}

/// <summary>Encoding helpers for results.</summary>
public static class ImageExtensions
{
    /// <summary>The image as PNG bytes.</summary>
    public static byte[] ToPng(this RgbImage image) => Png.Encode(image);
}

/// <summary>Collects a step's results in memory (the library's <see cref="IArtifactSink"/>; a pipeline run writes files instead).</summary>
internal sealed class MemorySink : IArtifactSink
{
    readonly object _gate = new();
    public List<Artifact> Artifacts { get; } = [];
    public Dictionary<string, double> Metrics { get; } = [];

    void Add(Artifact a) { lock (_gate) Artifacts.Add(a); }
    public void Raw(string name, string? inputId, NdArray array, string? target = null)
    {
        if (array.Shape.Aggregate(1L, (p, d) => p * d) != array.Data.Length)
            throw new ArgumentException($"artifact '{name}': shape ({string.Join(",", array.Shape)}) does not match {array.Data.Length} values");
        Add(new(name, inputId, ArtifactKind.Raw, array, null, null, target));
    }
    public void Display(string name, string? inputId, RgbImage image, string? target = null) => Add(new(name, inputId, ArtifactKind.Display, null, image, null, target));
    // Figures are drawn when a caller looks at them: a notebook that reads a metric's numbers pays for no plot.
    public void Figure(string name, string? inputId, Func<RgbImage> draw, string? target = null) => Add(new(name, inputId, draw, target));
    public void Json(string name, object value) => Add(new(name, null, ArtifactKind.Data, null, null, JsonSerializer.SerializeToNode(value, value.GetType(), Manifest.JsonOptions), null));
    public void Metric(string name, double value) { lock (_gate) Metrics[name] = value; }
}
