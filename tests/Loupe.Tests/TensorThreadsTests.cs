using System.Collections.Concurrent;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary><see cref="TensorThreads.For"/>: a parallel managed loop on libtorch's OpenMP team (the team's idle
/// workers spin after every parallel tensor call; a loop on them does not fight them for the cores).</summary>
public class TensorThreadsTests
{
    /// <summary>Makes libtorch's team busy the way an analysis does before its managed phase.</summary>
    static void ParallelTensorCall()
    {
        using var m = randn(300, 300);
        m.MatMul(m).Dispose();
    }

    [Fact]
    public void EveryIterationRunsOnceOnLibtorchsThreads()
    {
        Assert.True(TensorThreads.OnTensorTeam, "libtorch's GNU OpenMP team was not found on this Linux build");
        int threads = get_num_threads();
        ParallelTensorCall();
        var counts = new int[200];
        var seen = new ConcurrentDictionary<int, bool>();
        TensorThreads.For(counts.Length, i =>
        {
            Interlocked.Increment(ref counts[i]);
            seen[Environment.CurrentManagedThreadId] = true;
            Thread.SpinWait(20_000);   // long enough for every thread of the team to take iterations
        });
        Assert.All(counts, c => Assert.Equal(1, c));
        if (threads > 1) Assert.True(seen.Count > 1, $"one thread took all 200 iterations (libtorch has {threads})");
    }

    [Fact]
    public void AnIterationsExceptionReachesTheCallerAfterTheOthers()
    {
        ParallelTensorCall();
        int done = 0;
        var e = Assert.Throws<InvalidOperationException>(() => TensorThreads.For(50, i =>
        {
            if (i == 7) throw new InvalidOperationException("iteration 7");
            Interlocked.Increment(ref done);
        }));
        Assert.Equal("iteration 7", e.Message);
        Assert.Contains(nameof(AnIterationsExceptionReachesTheCallerAfterTheOthers), e.StackTrace);
        Assert.InRange(done, 0, 49);
        // The team is usable afterwards (nothing unwound into libgomp).
        int after = 0;
        TensorThreads.For(10, _ => Interlocked.Increment(ref after));
        Assert.Equal(10, after);
    }

    [Fact]
    public void NestedLoopsTensorCallsAndCollectionsInsideAnIteration()
    {
        var sums = new double[6];
        TensorThreads.For(sums.Length, i =>
        {
            // A nested loop (inside the team: the thread pool takes it), a tensor call (libgomp runs nested regions
            // serially) and a collection (the team's native thread is attached to the runtime) all complete.
            var inner = new int[4];
            TensorThreads.For(inner.Length, j => inner[j] = j + i);
            using (var t = ones(64, 64) * i) sums[i] = t.sum().item<float>() + inner.Sum();
            if (i == 2) GC.Collect();
        });
        for (int i = 0; i < sums.Length; i++) Assert.Equal(64 * 64 * i + 6 + 4 * i, sums[i]);
    }

    [Fact]
    public void ZeroAndOneIterations()
    {
        TensorThreads.For(0, _ => throw new InvalidOperationException("never"));
        int ran = -1, thread = -1;
        TensorThreads.For(1, i => (ran, thread) = (i, Environment.CurrentManagedThreadId));
        Assert.Equal((0, Environment.CurrentManagedThreadId), (ran, thread));
    }
}
