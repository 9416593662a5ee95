using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using System.Globalization;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Targets;

/// <summary>Explain the predicted class (the largest logit) of each input — the default target.</summary>
public sealed class TopOneTargetFactory : TargetFactory<NoOptions>
{
    /// <inheritdoc/>
    public override ITarget Create(NoOptions options, TargetContext context) => new TopOne(context.Labels);

    sealed class TopOne(IReadOnlyList<string> labels) : ClassTarget(labels)
    {
        protected override long[] Choose(Tensor output)
        {
            using var idx = output.detach().argmax(1);
            return idx.data<long>().ToArray();
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
}

/// <summary>Explain one fixed class, by index or by label name (<c>target: { class: sneaker }</c>).</summary>
public sealed class ClassTargetFactory : TargetFactory<ClassTargetOptions>
{
    /// <inheritdoc/>
    public override ITarget Create(ClassTargetOptions options, TargetContext context)
    {
        long index;
        if (long.TryParse(options.Class, NumberStyles.Integer, CultureInfo.InvariantCulture, out var i))
        {
            if (i < 0 || i >= context.OutputSize)
                throw new LoupeException($"class index {i} is out of range: the model has {context.OutputSize} outputs (0..{context.OutputSize - 1})");
            index = i;
        }
        else
        {
            var found = context.Labels.Select((l, k) => (l, k)).FirstOrDefault(p => string.Equals(p.l, options.Class, StringComparison.OrdinalIgnoreCase));
            if (found.l is null)
                throw new LoupeException(context.Labels.Count == 0
                    ? $"class name '{options.Class}' cannot be resolved: the model has no labels (set model.labels)"
                    : $"unknown class name '{options.Class}'{Suggest.DidYouMean(options.Class, context.Labels)}; labels: {string.Join(", ", context.Labels)}");
            index = found.k;
        }
        return new Fixed(index, context.Labels);
    }

    sealed class Fixed(long index, IReadOnlyList<string> labels) : ClassTarget(labels)
    {
        protected override long[] Choose(Tensor output) => Enumerable.Repeat(index, (int)output.shape[0]).ToArray();
        public override string Describe() => Name(index);
    }
}

/// <summary>Registers the built-in targets.</summary>
public sealed class Registrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) => services
        .AddLoupeTarget<TopOneTargetFactory>("top-1", "the predicted class (largest logit) of each input; the default")
        .AddLoupeTarget<ClassTargetFactory>("class", "a fixed class, by index or label name: { class: 3 } or { class: sneaker }");
}
