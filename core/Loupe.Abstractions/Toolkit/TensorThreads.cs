using System.Runtime.InteropServices;

namespace Loupe.Abstractions.Toolkit;

/// <summary>Parallel managed loops on libtorch's own threads. libtorch (CPU) runs its parallel operators on a GNU OpenMP
/// team; after every parallel operator the team's idle workers busy-wait for the next one (libgomp's default: 300,000
/// spins, ~10 ms of a core) before they sleep. Managed work that follows a tensor pass (an imputation, a segmentation,
/// a regression) then finds one core taken, and a <see cref="Parallel"/> loop stalls on the thread that shares it.
/// <see cref="For"/> runs the loop on that team instead (libgomp's <c>GOMP_parallel</c>, what a <c>#pragma omp
/// parallel</c> compiles to): the spinning worker takes iterations at once, no core is fought over and no thread is
/// started. Where libtorch runs no GNU OpenMP team (other platforms, other builds) it is a plain <see cref="Parallel"/>
/// loop.</summary>
public static class TensorThreads
{
    sealed unsafe class Gomp(delegate* unmanaged<delegate* unmanaged<nint, void>, nint, uint, uint, void> parallel, delegate* unmanaged<int> inParallel)
    {
        public readonly delegate* unmanaged<delegate* unmanaged<nint, void>, nint, uint, uint, void> Parallel = parallel;
        public readonly delegate* unmanaged<int> InParallel = inParallel;
    }

    static readonly Lazy<Gomp?> Team = new(Find, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Whether loops run on libtorch's OpenMP team (false: on the thread pool).</summary>
    public static bool OnTensorTeam => Team.Value is not null;

    /// <summary>Runs <paramref name="body"/>(i) for i in [0, <paramref name="count"/>), iterations handed out one at a
    /// time in index order (put the largest first), on libtorch's threads: the calling thread and its OpenMP team
    /// (<c>torch.get_num_threads()</c> in all). Iterations must be independent. The first exception any iteration throws
    /// is rethrown here after the others have finished (an exception cannot cross the native frames).</summary>
    public static unsafe void For(int count, Action<int> body)
    {
        if (count <= 0) return;
        if (count == 1 || Team.Value is not { } gomp || gomp.InParallel() != 0)
        {
            if (count == 1) body(0);
            else Parallel.For(0, count, body);
            return;
        }
        var loop = new Loop(count, body);
        var handle = GCHandle.Alloc(loop);
        try { gomp.Parallel(&Run, GCHandle.ToIntPtr(handle), 0, 0); }
        finally { handle.Free(); }
        if (loop.Error is { } e) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e);
    }

    sealed class Loop(int count, Action<int> body)
    {
        int _next = -1;
        public Exception? Error;

        public void Work()
        {
            for (int i; (i = Interlocked.Increment(ref _next)) < count;)
            {
                if (Volatile.Read(ref Error) is not null) return;
                try { body(i); }
                catch (Exception e) { Interlocked.CompareExchange(ref Error, e, null); }
            }
        }
    }

    /// <summary>Every thread of the team runs this with the loop's handle.</summary>
    [UnmanagedCallersOnly]
    static void Run(nint state)
    {
        try { ((Loop)GCHandle.FromIntPtr(state).Target!).Work(); }
        catch (Exception) { /* Work keeps its exceptions; nothing may unwind into libgomp */ }
    }

    /// <summary>The libgomp libtorch loaded (found in the process's mappings, so it is the same instance, not a second
    /// copy; the one beside libtorch_cpu when there are several), or null.</summary>
    static unsafe Gomp? Find()
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            _ = TorchSharp.torch.get_num_threads();   // libtorch (and with it libgomp) is loaded
            // libgomp beside libtorch_cpu when the process has more than one copy (another native library may carry its own).
            var files = File.ReadLines("/proc/self/maps").Select(line => line.IndexOf('/') is var slash and >= 0 ? line[slash..] : null)
                .OfType<string>().Distinct().ToList();
            var torchDirs = files.Where(f => Path.GetFileName(f).StartsWith("libtorch_cpu", StringComparison.Ordinal)).Select(Path.GetDirectoryName).ToHashSet();
            var gomps = files.Where(f => Path.GetFileName(f).StartsWith("libgomp", StringComparison.Ordinal)).ToList();
            var path = gomps.FirstOrDefault(f => torchDirs.Contains(Path.GetDirectoryName(f))) ?? gomps.FirstOrDefault();
            if (path is null || !NativeLibrary.TryLoad(path, out var lib)) return null;
            if (!NativeLibrary.TryGetExport(lib, "GOMP_parallel", out var parallel) || !NativeLibrary.TryGetExport(lib, "omp_in_parallel", out var inParallel))
                return null;
            return new Gomp((delegate* unmanaged<delegate* unmanaged<nint, void>, nint, uint, uint, void>)parallel, (delegate* unmanaged<int>)inParallel);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or DllNotFoundException or EntryPointNotFoundException or TypeInitializationException)
        {
            return null;
        }
    }
}
