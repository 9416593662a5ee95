using System.ComponentModel;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Targets;

/// <summary>What a class target explains about its class: the raw score or a function of the output row.</summary>
public enum ScoreMode
{
    /// <summary>The raw output (pre-softmax logit): Captum's and pytorch-grad-cam's ClassifierOutputTarget default.</summary>
    Logit,
    /// <summary>softmax(z)_c over the classes (dim 1): the probability of a single-label head (ClassifierOutputSoftmaxTarget).</summary>
    Softmax,
    /// <summary>log softmax(z)_c: log-probability, the negative cross-entropy of the class.</summary>
    LogSoftmax,
    /// <summary>σ(z_c): the class's own probability in a multi-label (sigmoid) head; every class is an independent yes/no.</summary>
    Sigmoid,
    /// <summary>z_c + log softmax(z)_c = z_c − CE(z, c): ReST (Cai et al. 2025), pytorch-grad-cam's ClassifierOutputReST.</summary>
    Rest,
}

/// <summary>Options of <c>top-1</c>.</summary>
public sealed record ScoreOptions
{
    /// <summary>Score mode.</summary>
    [Shorthand, Description("what is explained: logit (raw output), softmax, log-softmax, sigmoid (multi-label heads), or rest (logit + log-softmax, pytorch-grad-cam's ClassifierOutputReST)")]
    public ScoreMode Mode { get; init; } = ScoreMode.Logit;
}

/// <summary>Wraps a class target so that its scores are read from softmax/log-softmax/sigmoid of the output
/// instead of the raw output. The selection (which class) is the inner target's, made on the raw output.</summary>
public static class ScoreModes
{
    /// <summary>The output transformed per <paramref name="mode"/> (over dim 1, the classes).</summary>
    public static Tensor Apply(Tensor output, ScoreMode mode) => mode switch
    {
        ScoreMode.Softmax => output.softmax(1),
        ScoreMode.LogSoftmax => output.log_softmax(1),
        ScoreMode.Sigmoid => output.sigmoid(),
        ScoreMode.Rest => output + output.log_softmax(1),
        _ => output.alias(),
    };

    /// <summary><paramref name="target"/> scored in <paramref name="mode"/> (itself for logit).</summary>
    public static ITarget With(this ITarget target, ScoreMode mode) =>
        mode == ScoreMode.Logit ? target : target is IDataTarget ? new ScoredData(target, mode) : new Scored(target, mode);

    /// <summary>kebab-case name of a mode (as written in YAML).</summary>
    public static string Name(ScoreMode mode) => mode switch { ScoreMode.LogSoftmax => "log-softmax", _ => mode.ToString().ToLowerInvariant() };

    class Scored(ITarget inner, ScoreMode mode) : ITarget
    {
        protected ITarget Inner => inner;
        public IReadOnlyCollection<string> RequiredLayers => inner.RequiredLayers;
        public int Slots => inner.Slots;
        public TargetSelection Select(TargetInput original) => Marked(inner.Select(original));
        public TargetSelection Select(TargetInput original, int slot) => Marked(inner.Select(original, slot));
        protected TargetSelection Marked(TargetSelection s) => s with { ScoresProbability = mode is ScoreMode.Softmax or ScoreMode.Sigmoid };
        public Tensor Scores(TargetInput input, TargetSelection selection)
        {
            using var scope = NewDisposeScope();
            if (input.Output.dim() < 2) throw new LoupeException($"target '{Describe()}': the model output has shape ({string.Join("×", input.Output.shape)}); {Name(mode)} needs N×classes");
            var transformed = Apply(input.Output, mode);
            return scope.MoveToOuter(inner.Scores(new TargetInput(transformed, input.Layer), selection));
        }
        public string Describe() => $"{inner.Describe()} ({Name(mode)})";
    }

    /// <summary>A scored target that selects from the data (its inner one does).</summary>
    sealed class ScoredData(ITarget target, ScoreMode mode) : Scored(target, mode), IDataTarget
    {
        public TargetSelection Select(InputBatch batch, int slot) => Marked(((IDataTarget)Inner).Select(batch, slot));
    }
}

/// <summary>Side of a binary head.</summary>
public enum BinarySide
{
    /// <summary>Per input, the side its logit falls on (positive when z &gt; 0).</summary>
    Predicted,
    /// <summary>The positive class: score z (or σ(z)).</summary>
    Positive,
    /// <summary>The negative class: score −z (or σ(−z) = 1 − σ(z)).</summary>
    Negative,
}

/// <summary>Options of <c>binary</c>.</summary>
public sealed record BinaryOptions
{
    /// <summary>Which side.</summary>
    [Shorthand, Description("predicted (per input), positive or negative: the score is ±z as pytorch-grad-cam's BinaryClassifierOutputTarget")]
    public BinarySide Class { get; init; } = BinarySide.Predicted;

    /// <summary>Logit or sigmoid.</summary>
    [Description("logit (±z) or sigmoid (σ(±z), the probability of that side)")]
    public ScoreMode Mode { get; init; } = ScoreMode.Logit;
}

/// <summary>A binary head (one output per input, a logit): explain the positive or the negative side.</summary>
public sealed class BinaryTargetFactory : TargetFactory<BinaryOptions>
{
    /// <inheritdoc/>
    public override ITarget Create(BinaryOptions options, TargetContext context)
    {
        if (context.OutputSize != 1)
            throw new LoupeException($"binary: the model has {context.OutputSize} outputs, a binary head has one (for a multi-label head use {{ class: {{ class: k, mode: sigmoid }} }})");
        if (options.Mode is not (ScoreMode.Logit or ScoreMode.Sigmoid))
            throw new LoupeException($"binary: mode '{ScoreModes.Name(options.Mode)}' is not defined for one output; use logit or sigmoid");
        return new Binary(options.Class, options.Mode);
    }

    sealed class Binary(BinarySide side, ScoreMode mode) : ITarget
    {
        public IReadOnlyCollection<string> RequiredLayers => [];
        public TargetSelection Select(TargetInput original)
        {
            using var z = original.Output.detach().reshape(original.Output.shape[0], -1);
            var logits = z[.., 0].to(ScalarType.Float32).cpu().ToArray<float>();
            var classes = logits.Select(v => side switch { BinarySide.Positive => 1L, BinarySide.Negative => 0L, _ => v > 0 ? 1L : 0L }).ToArray();
            return new TargetSelection(classes, classes.Select(c => c == 1 ? "positive" : "negative").ToArray()) { ScoresProbability = mode == ScoreMode.Sigmoid };
        }
        public Tensor Scores(TargetInput input, TargetSelection selection)
        {
            using var scope = NewDisposeScope();
            var z = input.Output.reshape(input.Output.shape[0], -1).select(1, 0);
            var sign = tensor(selection.Classes!.Select(c => c == 1 ? 1f : -1f).ToArray(), device: z.device).to(z.dtype);
            var s = z * sign;
            return scope.MoveToOuter(mode == ScoreMode.Sigmoid ? s.sigmoid() : s);
        }
        public string Describe() => $"binary {side.ToString().ToLowerInvariant()}{(mode == ScoreMode.Sigmoid ? " (sigmoid)" : "")}";
    }
}

/// <summary>Options of <c>output</c>.</summary>
public sealed record OutputOptions
{
    /// <summary>One output.</summary>
    [Shorthand, Description("index of the output value to explain (regression heads), 0-based")]
    public int? Index { get; init; }

    /// <summary>Weighted sum.</summary>
    [Description("explain Σ w_i · output_i instead (one weight per output value)")]
    public double[]? Weights { get; init; }
}

/// <summary>Regression heads: one output value, or a weighted sum of the outputs, taken as they are (no class choice).</summary>
public sealed class OutputTargetFactory : TargetFactory<OutputOptions>
{
    /// <inheritdoc/>
    public override ITarget Create(OutputOptions options, TargetContext context)
    {
        if ((options.Index is null) == (options.Weights is null))
            throw new LoupeException("output: give exactly one of 'index' (one output value) or 'weights' (a weighted sum)");
        if (options.Index is { } i && (i < 0 || i >= context.OutputSize))
            throw new LoupeException($"output: index {i} is out of range: the model has {context.OutputSize} outputs (0..{context.OutputSize - 1})");
        if (options.Weights is { } w && w.Length != context.OutputSize)
            throw new LoupeException($"output: {w.Length} weights for {context.OutputSize} outputs");
        return new Output(options.Index, options.Weights);
    }

    sealed class Output(int? index, double[]? weights) : ITarget
    {
        public IReadOnlyCollection<string> RequiredLayers => [];
        public TargetSelection Select(TargetInput original) =>
            new(null, Enumerable.Repeat(Describe(), (int)original.Output.shape[0]).ToArray());
        public Tensor Scores(TargetInput input, TargetSelection selection)
        {
            using var scope = NewDisposeScope();
            var y = input.Output.reshape(input.Output.shape[0], -1);
            if (index is { } i) return scope.MoveToOuter(y.select(1, i));
            var w = tensor(weights!, device: y.device).to(y.dtype);
            return scope.MoveToOuter(y.MatMul(w));
        }
        public string Describe() => index is { } i ? $"output {i}" : $"Σ w·output ({weights!.Length} weights)";
    }
}
