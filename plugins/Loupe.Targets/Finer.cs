using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Targets;

/// <summary>Options of the <c>finer</c> target.</summary>
public sealed record FinerTargetOptions
{
    /// <summary>The main class.</summary>
    [Description("the class explained (index or label name); default: each input's predicted class")]
    public string? Class { get; init; }
    /// <summary>Ranks of the compared classes.</summary>
    [Description("the compared classes, as ranks by |z_k − z_c| on the input (rank 0 is the class itself): pytorch-grad-cam FinerCAM's comparison_categories, default [1, 2, 3]")]
    public int[] Compare { get; init; } = [1, 2, 3];
    /// <summary>α.</summary>
    [Range(0.0, 1e6), Description("weight of the compared classes' logits (pytorch-grad-cam FinerCAM's alpha, default 1)")]
    public double Alpha { get; init; } = 1;
}

/// <summary>Finer-CAM's score as a target, for any method (Zhang et al. 2025; pytorch-grad-cam's FinerWeightedTarget,
/// which its FinerCAM hands to any base CAM — Score-CAM, Ablation-CAM, … — and which any attribution can explain):
/// Σ_r p_r (z_c − α z_r) / (Σ_r p_r + 1e-9) over the compared classes r (chosen on the unperturbed input by the rank of
/// |z_r − z_c|, and kept for its perturbed copies), p = softmax(z). What distinguishes class c from its nearest
/// competitors, rather than what makes it likely.</summary>
public sealed class FinerTargetFactory : TargetFactory<FinerTargetOptions>
{
    /// <inheritdoc/>
    public override ITarget Create(FinerTargetOptions options, TargetContext context)
    {
        if (options.Compare.Length == 0 || options.Compare.Any(r => r < 1))
            throw new LoupeException("finer: compare must list ranks ≥ 1 (rank 0 is the explained class itself)");
        if (options.Compare.Max() >= context.OutputSize)
            throw new LoupeException($"finer: compare rank {options.Compare.Max()} needs more than the model's {context.OutputSize} outputs");
        long? fixedClass = options.Class is { } c ? ClassTargetFactory.Resolve(c, context.Labels, context.OutputSize) : null;
        return new Finer(fixedClass, options.Compare, options.Alpha, context.Labels);
    }

    sealed class Finer(long? fixedClass, int[] compare, double alpha, IReadOnlyList<string> labels) : ClassTarget(labels), ITarget
    {
        protected override long[] Choose(Tensor output)
        {
            if (fixedClass is { } c) return Enumerable.Repeat(c, (int)output.shape[0]).ToArray();
            using var idx = output.detach().argmax(1);
            return idx.ToArray<long>();
        }

        public new TargetSelection Select(TargetInput original)
        {
            if (original.Output.dim() != 2) throw new LoupeException($"target '{Describe()}': the model output has shape ({string.Join("×", original.Output.shape)}); finer needs N×classes");
            var classes = Choose(original.Output);
            using var scope = NewDisposeScope();
            var refs = FinerScore.Compared(original.Output, tensor(classes), compare);
            var rows = Enumerable.Range(0, classes.Length).Select(i => (object?)refs[i].ToArray<long>()).ToArray();
            return new TargetSelection(classes, classes.Select(k => $"{Name(k)} vs its {compare.Length} nearest").ToArray()) { State = rows };
        }

        TargetSelection ITarget.Select(TargetInput original) => Select(original);

        public new Tensor Scores(TargetInput input, TargetSelection selection)
        {
            using var scope = NewDisposeScope();
            var z = input.Output;
            var refs = tensor(selection.State!.SelectMany(s => (long[])s!).ToArray()).view(z.shape[0], compare.Length);
            return scope.MoveToOuter(FinerScore.Of(z, tensor(selection.Classes!), refs, alpha));
        }

        Tensor ITarget.Scores(TargetInput input, TargetSelection selection) => Scores(input, selection);

        public override string Describe() => $"finer ({(fixedClass is { } c ? Name(c) : "top-1")} vs ranks {string.Join(", ", compare)}, α {alpha})";
    }
}
