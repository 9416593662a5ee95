using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Core;

/// <summary>The host's <see cref="IAnalysisContext"/>.</summary>
internal sealed class AnalysisContext(PreparedRun run, PreparedStep step, IArtifactSink sink, CancellationToken cancellation,
    IRunObserver? observer, List<string> warnings) : IAnalysisContext
{
    public string StepId => step.Spec.Id;
    public IModel Model { get; } = run.Model; // fixed: a step abandoned later keeps its own model
    /// <summary>Set when the step's thread is abandoned: its progress and warnings are no longer reported.</summary>
    public bool Detached { get; set; }
    public InputSpec Input => run.Input;
    public IReadOnlyList<string> Labels => run.Labels;
    public ITarget Target => step.Target;
    public long? InputCount => run.Data?.Count;
    public int BatchSize => step.Spec.BatchSize ?? run.Spec.BatchSize;
    public IArtifactSink Output => sink;
    public int Seed => StepSeed(run.Spec.Seed, step.Spec.Id);
    public CancellationToken Cancellation => cancellation;
    public long MemoryBudgetBytes => run.Spec.MemoryBudgetBytes;
    public IDictionary<string, object> RunCache => run.Cache;
    public ILayerConsumer RunLayerPass(LayerPass pass) => run.LayerPasses.Get(pass, this);
    public ShardInfo? Shard => run.Shard;
    public OverlayStyle? OverlayStyle => step.Display;
    public ReferencedStep Referenced(IStepReference reference) => step.Resolved.Of(reference);

    /// <summary>Run seed mixed with the step id (FNV-1a), so steps get independent, reproducible streams.</summary>
    public static int StepSeed(int seed, string stepId)
    {
        unchecked
        {
            uint h = 2166136261;
            foreach (var c in stepId) { h ^= c; h *= 16777619; }
            return (int)(h ^ (uint)seed * 2654435761u) & int.MaxValue;
        }
    }

    public IEnumerable<InputBatch> Batches()
    {
        if (run.Data is null) throw new LoupeException($"step '{StepId}' needs data, but the pipeline has no 'data' section");
        return Read(run, BatchSize, cancellation);
    }

    /// <summary>The run's data as model-ready batches (normalised input, display pixels); each batch is disposed when
    /// the enumeration moves on.</summary>
    internal static IEnumerable<InputBatch> Read(PreparedRun run, int batchSize, CancellationToken cancellation)
    {
        bool first = true;
        foreach (var b in run.Data!.Read(run.Input, batchSize, cancellation))
        {
            cancellation.ThrowIfCancellationRequested();
            BackwardErrors.ThrowIfAny();   // the previous batch's guarded backward pass failed: stop here
            // Between two batches of the pass (the previous batch's work is done and its tensors are freed): hand the
            // freed native heap back when it has piled up. Not after the last batch: the step's working set stays
            // for the next step instead of being faulted in again — trimming after every step (an aggressive
            // collection and malloc_trim each time its passes grew the resident set by 64 MiB) cost the 164
            // single-batch steps of configs/metrics-suite.yaml 26 s of 81 (docs/benchmarks.md); the run trims at its end.
            if (!first) NativeHeap.TrimIfGrown();
            first = false;
            using (b)
            {
                var input = run.Data.Preprocessed ? b.Pixels.alias() : run.Input.Normalize(b.Pixels);
                var pixels = run.Data.Preprocessed ? run.Input.Denormalize(b.Pixels) : b.Pixels.alias();
                // A model with side inputs reads the batch's rows of them; forwards use them while the batch is out.
                IReadOnlyDictionary<string, Tensor>? side = null;
                IDisposable? active = null;
                try
                {
                    if (SideInputs.Of(run.Model) is { } si)
                    {
                        side = si.Read(b.Ids);
                        active = si.Use(side);
                    }
                    yield return new InputBatch(b.Ids, input, pixels, b.Labels, b.Masks);
                }
                finally
                {
                    active?.Dispose();
                    if (side is not null) foreach (var t in side.Values) t.Dispose();
                    input.Dispose();
                    pixels.Dispose();
                }
            }
        }
    }

    public void Progress(double fraction, string? message = null)
    {
        if (!Detached) observer?.StepProgress(StepId, Math.Clamp(fraction, 0, 1), message);
    }

    public void Warn(string message)
    {
        if (Detached) return;
        lock (warnings)
        {
            if (warnings.Contains(message)) return;   // a batch-by-batch warning is recorded once
            warnings.Add(message);
        }
        observer?.Warning($"{StepId}: {message}");
    }
}
