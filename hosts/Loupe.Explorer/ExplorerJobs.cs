using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using Loupe.Abstractions;

namespace Loupe.Explorer;

/// <summary>One computation the page started (an explanation, a dataset map, max patches): it runs in the background,
/// reports the technique's progress, and stops when cancelled (its token goes through the library call into the
/// technique, which checks it between forward passes).</summary>
public sealed class ExplorerJob
{
    readonly CancellationTokenSource _cancel = new();
    readonly Stopwatch _clock = Stopwatch.StartNew();
    double _progress;
    string? _message;

    internal ExplorerJob(string id) { Id = id; }

    /// <summary>Random id (the page polls <c>/api/jobs/{id}</c>).</summary>
    public string Id { get; }
    /// <summary><c>running</c>, <c>done</c>, <c>failed</c> or <c>cancelled</c>.</summary>
    public string State { get; private set; } = "running";
    /// <summary>The result (JSON-serialisable) once done or failed.</summary>
    public object? Result { get; private set; }
    /// <summary>The error of a failed or cancelled job.</summary>
    public string? Error { get; private set; }
    internal CancellationToken Token => _cancel.Token;
    internal DateTime Finished { get; private set; } = DateTime.MaxValue;

    internal void Report(ExplainProgress p) { _progress = p.Fraction; _message = p.Message; }

    /// <summary>Asks the computation to stop; it ends as <c>cancelled</c> when the technique notices.</summary>
    public void Cancel()
    {
        try { _cancel.Cancel(); } catch (ObjectDisposedException) { /* already finished */ }
    }

    internal void End(string state, object? result, string? error)
    {
        Result = result; Error = error; State = state;
        _clock.Stop();
        Finished = DateTime.UtcNow;
        _cancel.Dispose();
    }

    /// <summary>What <c>GET /api/jobs/{id}</c> answers.</summary>
    public object Snapshot() => new
    {
        id = Id, state = State, progress = _progress, message = _message, error = Error,
        seconds = _clock.Elapsed.TotalSeconds, result = Result,
    };
}

/// <summary>The running and recently finished jobs; finished ones beyond <c>keep</c> are dropped (oldest first) so the
/// table stays small over any number of requests.</summary>
internal sealed class JobTable(int keep)
{
    readonly ConcurrentDictionary<string, ExplorerJob> _jobs = new();

    /// <summary>Starts <paramref name="work"/> on the thread pool. Its result is the job's result; a result that is
    /// an <see cref="ExplorerServer.Shown"/> with an error, or a <see cref="LoupeException"/>, fails the job (the error
    /// shown in place); cancellation ends it as cancelled.</summary>
    public ExplorerJob Start(Func<IProgress<ExplainProgress>, CancellationToken, object> work)
    {
        var job = new ExplorerJob(Convert.ToHexString(RandomNumberGenerator.GetBytes(8)).ToLowerInvariant());
        _jobs[job.Id] = job;
        Trim();
        // Progress is reported from the step's thread: a plain callback, not Progress<T> (no synchronisation context here).
        var progress = new Callback(job.Report);
        var token = job.Token;
        _ = Task.Run(() =>
        {
            try
            {
                var result = work(progress, token);
                job.End(result is ExplorerServer.Shown { Error: { } e } ? "failed" : "done", result, (result as ExplorerServer.Shown)?.Error);
            }
            catch (OperationCanceledException) { job.End("cancelled", null, "cancelled"); }
            catch (Exception e) when (e is LoupeException or ArgumentException or KeyNotFoundException or InvalidOperationException)
            {
                job.End("failed", null, e.Message);
            }
        });
        return job;
    }

    public ExplorerJob? Find(string id) => _jobs.TryGetValue(id, out var j) ? j : null;

    /// <summary>Cancels every running job (the server is stopping).</summary>
    public void CancelAll()
    {
        foreach (var j in _jobs.Values) j.Cancel();
    }

    void Trim()
    {
        var finished = _jobs.Values.Where(j => j.State != "running").OrderBy(j => j.Finished).ToList();
        foreach (var j in finished.Take(Math.Max(0, finished.Count - keep))) _jobs.TryRemove(j.Id, out _);
    }

    sealed class Callback(Action<ExplainProgress> report) : IProgress<ExplainProgress>
    {
        public void Report(ExplainProgress value) => report(value);
    }
}
