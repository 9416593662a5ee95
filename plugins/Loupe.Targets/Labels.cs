using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Targets;

/// <summary>Explain each input's ground-truth class, as the data source gives it (<c>npy</c>'s and <c>idx</c>'s
/// <c>labels:</c> file): what Quantus evaluates when its <c>y_batch</c> holds the labels, and Captum's
/// <c>target=labels</c>. Unlike <c>top-1</c>, a misclassified input is explained for the class it should have had.
/// Options as <c>top-1</c>'s (<c>mode</c>: logit, softmax, log-softmax, sigmoid, rest).</summary>
public sealed class LabelTargetFactory : TargetFactory<ScoreOptions>
{
    /// <inheritdoc/>
    public override ITarget Create(ScoreOptions options, TargetContext context) => new Label(context.Labels, context.OutputSize).With(options.Mode);

    sealed class Label(IReadOnlyList<string> labels, long outputs) : ClassTarget(labels), IDataTarget
    {
        /// <summary>Only attribution steps select from the data; a technique selecting on its own output cannot.</summary>
        protected override long[] Choose(Tensor output) =>
            throw new LoupeException("target 'label': this technique chooses its target from the model's output, not from the data's labels; use top-1 or class with it");

        public TargetSelection Select(InputBatch batch, int slot)
        {
            var given = batch.Labels ?? throw new LoupeException(
                $"target 'label': the data source gives no labels (input '{batch.Ids.FirstOrDefault()}'); set the data's labels file (npy: labels:, idx: labels:) or use top-1 or class");
            if (given.Length != batch.Ids.Length)
                throw new LoupeException($"target 'label': {given.Length} labels for {batch.Ids.Length} inputs in a batch (data source bug)");
            for (int i = 0; i < given.Length; i++)
                if (given[i] < 0 || given[i] >= outputs)
                    throw new LoupeException($"target 'label': input '{batch.Ids[i]}' has label {given[i]}, outside the model's {outputs} outputs (0..{outputs - 1})");
            return new TargetSelection([.. given], [.. given.Select(Name)]);
        }

        public override string Describe() => "label";
    }
}
