using System.Runtime.InteropServices;
using Loupe.Abstractions;
using TorchSharp;

namespace Loupe.Core;

/// <summary>How one step ended.</summary>
/// <param name="Status">succeeded, failed, timeout or cancelled.</param>
/// <param name="Error">Message for the manifest (null when it succeeded).</param>
/// <param name="Exception">The exception the step threw, if any.</param>
/// <param name="Fault">A machine-readable kind for faults the host recognises (out-of-memory, disk-full, output-not-writable).</param>
/// <param name="LiveTensors">Tensors created on the step's thread and still alive when it ended (null when abandoned).</param>
/// <param name="Abandoned">The step did not stop when cancelled: its thread still runs and may still use the model.</param>
internal sealed record StepOutcome(string Status, string? Error, Exception? Exception, string? Fault, long? LiveTensors, bool Abandoned);

/// <summary>Runs each step on a worker thread of its own so that a step that hangs (past its <c>timeout</c>, or after
/// Ctrl+C) can be left behind: the step's token is cancelled first, and a step that ignores it for <see cref="Grace"/>
/// is abandoned (a thread cannot be killed safely in .NET); the run records it and goes on without it.
/// Workers whose step ended are kept for the next step: a fresh thread per step spread libtorch's allocations over
/// glibc's per-thread arenas and let a long-lived process's resident set creep upwards (tools/Loupe.Soak).
/// An abandoned worker is never reused.</summary>
internal static class StepThread
{
    /// <summary>How long a cancelled step may take to stop before it is abandoned.</summary>
    public static TimeSpan Grace { get; set; } = TimeSpan.FromSeconds(2);

    static readonly System.Collections.Concurrent.ConcurrentBag<Worker> Idle = [];

    /// <summary>A long-lived thread that runs one step at a time.</summary>
    sealed class Worker
    {
        readonly System.Collections.Concurrent.BlockingCollection<Action> _work = [];

        public Worker() => new Thread(() =>
        {
            foreach (var item in _work.GetConsumingEnumerable()) item();
        }, 16 << 20) { IsBackground = true, Name = "loupe step" }.Start();

        /// <summary>Queues <paramref name="item"/> to run in the caller's execution context (async-locals flow to the
        /// step as they would to a new thread).</summary>
        public void Post(Action item)
        {
            var context = ExecutionContext.Capture();
            _work.Add(context is null ? item : () => ExecutionContext.Run(context, _ => item(), null));
        }

        /// <summary>Lets the thread end after its current item (used when it is abandoned).</summary>
        public void Retire() => _work.CompleteAdding();
    }

    /// <summary>Runs <paramref name="body"/> on a worker thread. <paramref name="stepCancellation"/> is the token the
    /// step sees; it is cancelled when <paramref name="timeout"/> passes or <paramref name="run"/> is cancelled.</summary>
    public static StepOutcome Run(Action body, CancellationTokenSource stepCancellation, TimeSpan? timeout, CancellationToken run)
    {
        Exception? error = null;
        long live = 0;
        var done = new ManualResetEventSlim(); // not disposed when abandoned: the thread may still set it
        if (!Idle.TryTake(out var worker)) worker = new Worker();
        worker.Post(() =>
        {
            long before = DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount;
            try
            {
                torch.set_grad_enabled(true); // a step that left autograd off must not change the next one
                using (torch.NewDisposeScope()) body();
            }
            catch (Exception e) { error = e; }
            finally
            {
                live = DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount - before;
                done.Set();
            }
        });
        StepOutcome Reuse(StepOutcome outcome)
        {
            done.Dispose();
            Idle.Add(worker);
            return outcome;
        }

        var limit = timeout is { } t ? (int)Math.Min(t.TotalMilliseconds, int.MaxValue - 1) : Timeout.Infinite;
        if (WaitHandle.WaitAny([done.WaitHandle, run.WaitHandle], limit) == 0)
            return Reuse(Finished(error, live, run.IsCancellationRequested ? "cancelled" : null));

        var why = run.IsCancellationRequested ? "cancelled" : "timeout";
        stepCancellation.Cancel();
        if (done.Wait(Grace)) return Reuse(Finished(error, live, why));
        worker.Retire();
        var message = why == "timeout"
            ? $"timed out after {Duration.Format(timeout!.Value)} and did not stop within {Duration.Format(Grace)} of being cancelled; its thread was abandoned"
            : $"cancelled by the user; the step did not stop within {Duration.Format(Grace)} and its thread was abandoned";
        return new StepOutcome(why, message, null, null, null, Abandoned: true);

        static StepOutcome Finished(Exception? e, long live, string? stoppedBecause)
        {
            if (e is null) return new StepOutcome("succeeded", null, null, null, live, false);
            if (stoppedBecause is not null && e is OperationCanceledException)
                return new StepOutcome(stoppedBecause, stoppedBecause == "timeout" ? "timed out; the step stopped when cancelled" : "cancelled by the user", e, null, live, false);
            var (fault, message) = Classify(e);
            return new StepOutcome("failed", message, e, fault, live, false);
        }
    }

    /// <summary>Recognises out-of-memory (managed or a libtorch allocation), a full disk and an unwritable output folder.</summary>
    public static (string? Fault, string Message) Classify(Exception e)
    {
        var inner = e is System.Reflection.TargetInvocationException or AggregateException && e.InnerException is { } i ? i : e;
        if (inner is OutOfMemoryException || inner is ExternalException && IsNativeOom(inner.Message))
            return ("out-of-memory", $"out of memory: {FirstLine(inner.Message)}");
        if (inner is OutputWriteException w) return (w.Fault, w.Message);
        return (null, inner is LoupeException ? inner.Message : $"{inner.GetType().Name}: {inner.Message}");
    }

    static bool IsNativeOom(string m) =>
        m.Contains("not enough memory", StringComparison.OrdinalIgnoreCase) || m.Contains("can't allocate memory", StringComparison.OrdinalIgnoreCase)
        || m.Contains("out of memory", StringComparison.OrdinalIgnoreCase) || m.Contains("DefaultCPUAllocator", StringComparison.Ordinal);

    static string FirstLine(string s) => s.Split('\n', 2)[0].Trim();
}

/// <summary>Writing into the run's output folder failed (disk full, read-only, permissions): the run stops.</summary>
public sealed class OutputWriteException(string path, Exception inner)
    : LoupeException($"{(IsDiskFull(inner) ? "disk full" : "output folder not writable")}: cannot write {path}: {inner.Message}", inner)
{
    /// <summary>disk-full or output-not-writable.</summary>
    public string Fault { get; } = IsDiskFull(inner) ? "disk-full" : "output-not-writable";

    /// <summary>ENOSPC (28) or EDQUOT (122) on Unix, ERROR_DISK_FULL / ERROR_HANDLE_DISK_FULL on Windows.</summary>
    public static bool IsDiskFull(Exception e) => e is IOException && (e.HResult & 0xFFFF) is 28 or 122 or 39 or 112;
}
