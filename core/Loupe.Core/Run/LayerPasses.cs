using System.Runtime.ExceptionServices;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Core;

/// <summary>The run's shared dataset passes (<see cref="IAnalysisContext.RunLayerPass"/>): every consumer planned by any
/// step (<see cref="IPlansLayerPasses"/>) is fed in the first pass that runs after it is planned, with all their layers
/// captured in one forward per batch. A planned consumer that throws is set aside and its error is raised only in the
/// step that asks for it, so one step's bad option never fails another.</summary>
internal sealed class LayerPasses(PreparedRun run) : IDisposable
{
    readonly Dictionary<string, ILayerConsumer> _done = [];
    readonly Dictionary<string, ExceptionDispatchInfo> _failed = [];
    List<LayerPass>? _planned;

    /// <summary>Number of dataset passes run so far (for tests and the manifest).</summary>
    public int PassCount { get; private set; }

    List<LayerPass> Planned => _planned ??= run.Steps
        .SelectMany(s => s.Analysis is IPlansLayerPasses p ? Safe(() => p.PlanLayerPasses(s.Options).ToList()) : [])
        .ToList();

    static List<LayerPass> Safe(Func<List<LayerPass>> plan)
    {
        try { return plan(); } catch (LoupeException) { return []; } // the step reports its own error when it runs
    }

    public ILayerConsumer Get(LayerPass request, IAnalysisContext ctx)
    {
        if (_done.TryGetValue(request.Key, out var ready)) { ctx.Progress(0.8, "activations reused from the run's shared pass"); return ready; }
        if (_failed.TryGetValue(request.Key, out var error)) error.Throw();

        var pending = new List<(LayerPass Pass, ILayerConsumer Consumer)> { (request, request.Create()) };
        foreach (var p in Planned)
            if (!_done.ContainsKey(p.Key) && !_failed.ContainsKey(p.Key) && pending.All(x => x.Pass.Key != p.Key))
                try { pending.Add((p, p.Create())); } catch (Exception e) { _failed[p.Key] = ExceptionDispatchInfo.Capture(e); }

        for (int i = pending.Count - 1; i >= 0; i--)
        {
            var (pass, consumer) = pending[i];
            try { consumer.Begin(ctx.InputCount); }
            catch (Exception e) when (pass.Key != request.Key)
            {
                _failed[pass.Key] = ExceptionDispatchInfo.Capture(e);
                pending.RemoveAt(i);
            }
        }
        var layers = pending.Select(p => p.Pass.Layer).Distinct().ToArray();
        long rows = 0;
        PassCount++;
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            using var capture = ctx.Model.Capture(layers, forGradients: false);
            using (no_grad())
            using (NewDisposeScope())
                ctx.Model.Forward(batch.Input);
            for (int i = pending.Count - 1; i >= 0; i--)
            {
                var (pass, consumer) = pending[i];
                try { consumer.Consume(batch, capture[pass.Layer]); }
                catch (Exception e) when (pass.Key != request.Key)
                {
                    _failed[pass.Key] = ExceptionDispatchInfo.Capture(e);
                    pending.RemoveAt(i);
                }
            }
            rows += batch.Ids.Length;
            if (ctx.InputCount is > 0)
                ctx.Progress(0.8 * rows / ctx.InputCount.Value, $"forward pass {rows}/{ctx.InputCount} ({pending.Count} consumer(s), {layers.Length} layer(s))");
        }
        foreach (var (pass, consumer) in pending) _done[pass.Key] = consumer;
        return _done[request.Key];
    }

    public void Dispose()
    {
        foreach (var c in _done.Values) (c as IDisposable)?.Dispose();
        _done.Clear();
    }
}
