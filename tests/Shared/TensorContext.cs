using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Testing;

/// <summary>A minimal analysis context over an in-memory dataset (<paramref name="pixels"/>: N×C×H×W in [0,1], normalised
/// with the model's input spec), shared by the test projects that call an analysis or a toolkit helper without a host.
/// Ids are the row numbers (<c>00000</c>, ...); layer passes run standalone; no target, sink or step references unless
/// given (<paramref name="references"/>: what <see cref="Referenced"/> resolves, as the host's plan would).</summary>
public sealed class TensorContext(IModel model, Tensor pixels, int batchSize, ITarget? target = null, IArtifactSink? output = null,
    StepReferences? references = null) : IAnalysisContext
{
    public string StepId => "test";
    public IModel Model => model;
    public InputSpec Input => model.DefaultInput;
    public IReadOnlyList<string> Labels => [];
    public ITarget Target => target ?? throw new NotSupportedException("this test context has no target");
    public long? InputCount => pixels.shape[0];
    public int BatchSize => batchSize;
    public IArtifactSink Output => output ?? throw new NotSupportedException("this test context has no artifact sink");
    public int Seed => 0;
    public CancellationToken Cancellation => default;
    public long MemoryBudgetBytes => Explain.DefaultMemoryBudgetBytes;
    public IDictionary<string, object> RunCache { get; } = new Dictionary<string, object>();
    public ShardInfo? Shard => null;
    public OverlayStyle? OverlayStyle => null;
    public ILayerConsumer RunLayerPass(LayerPass pass) => Explain.StandaloneLayerPass(this, pass);
    public ReferencedStep Referenced(IStepReference reference) => (references ?? StepReferences.None).Of(reference);
    public void Progress(double fraction, string? message = null) { }
    public void Warn(string message) { }

    public IEnumerable<InputBatch> Batches()
    {
        for (long s = 0; s < pixels.shape[0]; s += batchSize)
        {
            long len = Math.Min(batchSize, pixels.shape[0] - s);
            using var p = pixels.narrow(0, s, len);
            using var input = Input.Normalize(p);
            yield return new InputBatch(Enumerable.Range((int)s, (int)len).Select(i => $"{i:D5}").ToArray(), input, p, null);
        }
    }
}
