using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Testing;

/// <summary>A test target: the top-1 logit of each row, selected on the output it is shown (no layers, no softmax).</summary>
public sealed class Top1Target : ITarget
{
    /// <inheritdoc/>
    public IReadOnlyCollection<string> RequiredLayers => [];

    /// <inheritdoc/>
    public TargetSelection Select(TargetInput original)
    {
        var classes = original.Output.detach().argmax(1).data<long>().ToArray();
        return new TargetSelection(classes, classes.Select(c => c.ToString()).ToArray());
    }

    /// <inheritdoc/>
    public Tensor Scores(TargetInput input, TargetSelection selection) =>
        input.Output.gather(1, tensor(selection.Classes!).unsqueeze(1)).squeeze(1);

    /// <inheritdoc/>
    public string Describe() => "top-1";
}
