using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using System.Globalization;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Targets;

/// <summary>Explain the predicted class (the largest logit) of each input — the default target.</summary>
public sealed class TopOneTargetFactory : TargetFactory<ScoreOptions>
{
    /// <inheritdoc/>
    public override ITarget Create(ScoreOptions options, TargetContext context) => new TopOne(context.Labels).With(options.Mode);

    /// <summary>The logit of the predicted class (no options).</summary>
    public ITarget Create(NoOptions options, TargetContext context) => Create(new ScoreOptions(), context);

    sealed class TopOne(IReadOnlyList<string> labels) : ClassTarget(labels)
    {
        protected override long[] Choose(Tensor output)
        {
            using var idx = output.detach().argmax(1);
            return idx.ToArray<long>();
        }
        public override string Describe() => "top-1";
    }
}

/// <summary>Options of the <c>class</c> target.</summary>
public sealed record ClassTargetOptions
{
    /// <summary>Class index or label name.</summary>
    [Required, Shorthand, Description("class index (0-based) or class name from the model's labels")]
    public string Class { get; init; } = "";

    /// <summary>Score mode.</summary>
    [Description("what is explained: logit (raw output), softmax, log-softmax, sigmoid (multi-label heads), or rest (logit + log-softmax, pytorch-grad-cam's ClassifierOutputReST)")]
    public ScoreMode Mode { get; init; } = ScoreMode.Logit;
}

/// <summary>Explain one fixed class, by index or by label name (<c>target: { class: sneaker }</c>).</summary>
public sealed class ClassTargetFactory : TargetFactory<ClassTargetOptions>
{
    /// <inheritdoc/>
    public override ITarget Create(ClassTargetOptions options, TargetContext context) =>
        new Fixed(Resolve(options.Class, context.Labels, context.OutputSize), context.Labels).With(options.Mode);

    /// <summary>A class given as a 0-based index (below <paramref name="count"/>) or a label name.</summary>
    public static long Resolve(string text, IReadOnlyList<string> labels, long count, string what = "class")
    {
        if (long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var i))
        {
            if (i < 0 || i >= count)
                throw new LoupeException($"{what} index {i} is out of range: the model has {count} {(what == "class" ? "outputs" : "classes")} (0..{count - 1})");
            return i;
        }
        var found = labels.Select((l, k) => (l, k)).FirstOrDefault(p => string.Equals(p.l, text, StringComparison.OrdinalIgnoreCase));
        if (found.l is null)
            throw new LoupeException(labels.Count == 0
                ? $"{what} name '{text}' cannot be resolved: the model has no labels (set model.labels)"
                : $"unknown {what} name '{text}'{Suggest.DidYouMean(text, labels)}; labels: {string.Join(", ", labels)}");
        return found.k;
    }

    sealed class Fixed(long index, IReadOnlyList<string> labels) : ClassTarget(labels)
    {
        protected override long[] Choose(Tensor output) => Enumerable.Repeat(index, (int)output.shape[0]).ToArray();
        public override string Describe() => Name(index);
    }
}

/// <summary>Options of <c>top-k</c>.</summary>
public sealed record TopKOptions
{
    /// <summary>How many classes per input.</summary>
    [Shorthand, Range(1, 1000), Description("explain each of the k highest-scoring classes of every input")]
    public int K { get; init; } = 3;

    /// <summary>Score mode.</summary>
    [Description("what is explained: logit (raw output), softmax, log-softmax, sigmoid (multi-label heads), or rest (logit + log-softmax, pytorch-grad-cam's ClassifierOutputReST)")]
    public ScoreMode Mode { get; init; } = ScoreMode.Logit;
}

/// <summary>Explain each of the k largest logits of every input: one map per input and rank (artifacts <c>*.top1</c> … <c>*.topk</c>).</summary>
public sealed class TopKTargetFactory : TargetFactory<TopKOptions>
{
    /// <inheritdoc/>
    public override ITarget Create(TopKOptions options, TargetContext context)
    {
        if (options.K > context.OutputSize)
            throw new LoupeException($"top-k: k = {options.K} is larger than the number of outputs ({context.OutputSize})");
        return new TopK(options.K, context.Labels).With(options.Mode);
    }

    sealed class TopK(int k, IReadOnlyList<string> labels) : ClassTarget(labels), ITarget
    {
        public int Slots => k;
        protected override long[] Choose(Tensor output) => Rank(output, 0);
        long[] Rank(Tensor output, int slot)
        {
            using var scope = NewDisposeScope();
            var (_, idx) = output.detach().topk(k, 1);
            return idx[.., slot].ToArray<long>();
        }
        public TargetSelection Select(TargetInput original, int slot)
        {
            var classes = Rank(original.Output, slot);
            return new TargetSelection(classes, classes.Select(c => $"top-{slot + 1}: {Name(c)}").ToArray());
        }
        public override string Describe() => $"top-{k}";
    }
}

/// <summary>A reference to a layer unit written as <c>layer:channel</c> or <c>layer:channel:y:x</c>.</summary>
public sealed record UnitOptions
{
    /// <summary>The unit.</summary>
    [Required, Shorthand, Description("channel: layer:channel (its mean activation), e.g. relu3:12; neuron: layer and one index per dimension after the batch (Captum's neuron_selector): relu3:12:3:4 on N×C×H×W, fc:3 on a dense N×K layer, encoder.layers.encoder_layer_11:5:100 (token 5, feature 100) on N×T×C")]
    public string Unit { get; init; } = "";
}

/// <summary>Explain a channel's mean activation (<c>{ channel: "layer3:12" }</c>) or one neuron (<c>{ neuron: "layer3:12:4:4" }</c>).</summary>
public sealed class UnitTargetFactory(bool neuron) : TargetFactory<UnitOptions>
{
    /// <summary>Channel target.</summary>
    public UnitTargetFactory() : this(false) { }

    /// <inheritdoc/>
    public override ITarget Create(UnitOptions options, TargetContext context)
    {
        var parts = options.Unit.Split(':');
        if ((neuron ? parts.Length < 2 : parts.Length != 2) || parts.Skip(1).Any(p => !int.TryParse(p, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) || v < 0))
            throw new LoupeException($"'{options.Unit}' is not a {(neuron ? "neuron (layer:i:j:…, one index per dimension after the batch, e.g. relu3:12:3:4)" : "channel (layer:channel)")} with non-negative integer indices");
        if (!context.Layers.Contains(parts[0]))
            throw new LoupeException($"layer '{parts[0]}' does not exist{Suggest.DidYouMean(parts[0], context.Layers)}");
        var idx = parts.Skip(1).Select(int.Parse).ToArray();
        // Checked at validation where the host knows the layer's shape, else at the first batch (Select).
        if (context.LayerShape?.Invoke(parts[0]) is { } shape && Unit.Mismatch(parts[0], idx, options.Unit, neuron, shape) is { } error)
            throw new LoupeException(error);
        return new Unit(parts[0], idx, options.Unit, neuron);
    }

    sealed class Unit(string layer, int[] idx, string text, bool neuron) : ITarget
    {
        public IReadOnlyCollection<string> RequiredLayers => [layer];
        public TargetSelection Select(TargetInput original)
        {
            var a = original.Layer(layer);
            if (Mismatch(layer, idx, text, neuron, a.shape) is { } error) throw new LoupeException(error);
            return new TargetSelection(null, Enumerable.Repeat(Describe(), (int)a.shape[0]).ToArray());
        }
        public Tensor Scores(TargetInput input, TargetSelection selection)
        {
            using var scope = NewDisposeScope();
            var a = input.Layer(layer);
            var unit = a.select(1, idx[0]);
            if (neuron) foreach (var i in idx.Skip(1)) unit = unit.select(1, i);
            var s = neuron || unit.dim() == 1 ? unit : unit.flatten(1).mean([1]);
            return scope.MoveToOuter(s);
        }
        public string Describe() => (neuron ? "neuron " : "channel ") + text;

        /// <summary>Why the indices do not fit a layer of <paramref name="shape"/> (null when they do).</summary>
        public static string? Mismatch(string layer, int[] idx, string text, bool neuron, long[] shape)
        {
            if (shape.Length < 2 || idx[0] >= shape[1])
                return $"target '{text}': layer '{layer}' has {(shape.Length < 2 ? 0 : shape[1])} channels";
            if (!neuron) return null;
            if (shape.Length != idx.Length + 1)
                return $"target '{text}': layer '{layer}' has shape ({Shape(shape)}): give {shape.Length - 1} indices, one per dimension after the batch";
            return idx.Where((v, d) => v >= shape[d + 1]).Any()
                ? $"target '{text}': position ({string.Join(", ", idx)}) is outside layer '{layer}' of shape ({Shape(shape)})" : null;
        }

        /// <summary>N×C×… : the batch as N (validation probes one input, a run whole batches).</summary>
        static string Shape(long[] shape) => string.Join("×", shape.Skip(1).Prepend(0).Select((v, d) => d == 0 ? "N" : v.ToString(CultureInfo.InvariantCulture)));
    }
}

/// <summary>Registers the built-in targets.</summary>
public sealed class Registrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) => services
        .AddLoupeTarget<TopOneTargetFactory>("top-1", "the predicted class (largest logit) of each input; the default")
        .AddLoupeTarget<LabelTargetFactory>("label", "each input's ground-truth class from the data's labels file (npy or idx labels:): Quantus's y_batch, Captum's target=labels")
        .AddLoupeTarget<ClassTargetFactory>("class", "a fixed class, by index or label name: { class: 3 } or { class: sneaker }")
        .AddLoupeTarget<TopKTargetFactory>("top-k", "each of the k largest logits: { top-k: 3 } gives one map per input and rank")
        .AddLoupeTarget<UnitTargetFactory>("channel", "mean activation of a channel: { channel: \"relu3:12\" }")
        .AddLoupeTarget<NeuronTargetFactory>("neuron", "one neuron of a layer, an index per dimension after the batch (Captum's neuron_selector): { neuron: \"relu3:12:3:4\" }, { neuron: \"fc:3\" }")
        .AddLoupeTarget<FinerTargetFactory>("finer", "Finer-CAM's score for any method: the class against its nearest competitors, Σ p_r (z_c − α z_r) / Σ p_r (pytorch-grad-cam FinerWeightedTarget): { finer: { compare: [1, 2, 3] } }")
        .AddLoupeTarget<BinaryTargetFactory>("binary", "a binary head's positive or negative side (±logit, or sigmoid): { binary: positive }")
        .AddLoupeTarget<OutputTargetFactory>("output", "one output value or a weighted sum (regression heads): { output: 0 } or { output: { weights: [...] } }")
        .AddLoupeTarget<RegionTargetFactory>("region", "segmentation: the class-k output summed over a mask (the model's argmax, a file or a box): { region: { class: disc } }")
        .AddLoupeTarget<BoxTargetFactory>("box", "detection: IoU + score of the detection matching a box and class (default: the top detection): { box: { class: disc } }")
        .AddLoupeTarget<SimilarToTargetFactory>("similar-to", "cosine similarity to a reference image's embedding at a layer: { similar-to: { image: ref.png, layer: gap } }");
}

/// <summary>Neuron target (<c>layer:channel:y:x</c>; <c>layer:k</c> on a dense layer, <c>layer:t:c</c> on tokens).</summary>
public sealed class NeuronTargetFactory : TargetFactory<UnitOptions>
{
    readonly UnitTargetFactory _inner = new(neuron: true);
    /// <inheritdoc/>
    public override ITarget Create(UnitOptions options, TargetContext context) => _inner.Create(options, context);
}
