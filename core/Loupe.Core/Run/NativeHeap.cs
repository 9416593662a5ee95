using System.Runtime.InteropServices;

namespace Loupe.Core;

/// <summary>Keeps the native heap of a long-running process flat.
/// libtorch allocates activations with malloc; glibc keeps what is freed in per-thread arenas, and every step runs on
/// its own thread, so a process that runs many pipelines (a soak, a service, <c>loupe run a.yaml b.yaml …</c>) keeps
/// growing its resident set with memory it no longer uses. <c>malloc_trim(0)</c> returns the free pages of every arena.
/// glibc also gives threads up to 8 arenas per core, and libtorch's freed blocks stay spread over them: the resident set
/// of 200 quickstart runs in one process swung between 300 and 390 MB with trimming alone, and stayed at 255–265 MB
/// with two arenas (tools/Loupe.Soak). <see cref="LimitArenas"/> sets <c>M_ARENA_MAX</c> unless the user set
/// <c>MALLOC_ARENA_MAX</c>, and keeps freed blocks for reuse (<see cref="KeepBlocks"/>). All are no-ops where they do
/// not exist (not Linux, or a C library without them, such as musl).</summary>
public static class NativeHeap
{
    static bool _unavailable = !OperatingSystem.IsLinux();

    [DllImport("libc", EntryPoint = "malloc_trim")]
    static extern int MallocTrim(nuint pad);

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int MallOpt(int param, int value);

    const int M_TRIM_THRESHOLD = -1, M_MMAP_MAX = -4, M_ARENA_MAX = -8;

    /// <summary>Whether <see cref="LimitArenas"/> set glibc to keep freed blocks (see <see cref="KeepBlocks"/>).</summary>
    public static bool BlocksKept { get; private set; }

    /// <summary>Limits glibc to one malloc arena (unless <c>MALLOC_ARENA_MAX</c> is set) and keeps freed blocks
    /// (<see cref="KeepBlocks"/>); call before the work starts, before other threads allocate.</summary>
    public static void LimitArenas()
    {
        if (_unavailable) return;
        try
        {
            if (Environment.GetEnvironmentVariable("MALLOC_ARENA_MAX") is null) MallOpt(M_ARENA_MAX, 1);
            KeepBlocks();
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { _unavailable = true; }
    }

    /// <summary>Keeps the memory of freed tensors for the next ones, unless <c>LOUPE_MALLOC=keep</c> (glibc's defaults)
    /// or the user tuned glibc (<c>MALLOC_MMAP_MAX_</c>, <c>MALLOC_TRIM_THRESHOLD_</c>, <c>GLIBC_TUNABLES</c>).
    /// glibc serves a block above 32 MB (a secondary arena's above 64 MB) with its own <c>mmap</c> and unmaps it on
    /// <c>free</c>, and hands the heap's free top back past 128 KB: every new activation of that size then costs a
    /// page fault per 4 KB page on first touch — microseconds each on a virtual machine. On a 2-core AMD EPYC VM
    /// (2026-12-05) a 3×3 convolution of 40 images of 56² × 64 channels ran its forward and input gradient in
    /// 565–611 ms with glibc's defaults and 330 ms with its blocks kept; one of 112² in 2,970 and 961 ms. So: no
    /// <c>mmap</c>'d blocks (<c>M_MMAP_MAX = 0</c>: the heap grows instead) and no automatic trimming of the heap's top
    /// (<c>M_TRIM_THRESHOLD</c> 2 GB); with one arena, threads that start later share the main heap. The resident set
    /// stays at the run's peak between batches instead of following every tensor; <see cref="TrimIfGrown"/> and
    /// <see cref="Trim"/> still hand the main heap's free pages back where the host asks (a secondary arena's free
    /// top, at most 64 MB per heap, stays for reuse). Reported by <see cref="BlocksKept"/>.</summary>
    static void KeepBlocks()
    {
        if (Environment.GetEnvironmentVariable("LOUPE_MALLOC") == "keep" || Environment.GetEnvironmentVariable("MALLOC_MMAP_MAX_") is not null
            || Environment.GetEnvironmentVariable("MALLOC_TRIM_THRESHOLD_") is not null || Environment.GetEnvironmentVariable("GLIBC_TUNABLES") is not null)
            return;
        BlocksKept = (MallOpt(M_MMAP_MAX, 0) == 1) & (MallOpt(M_TRIM_THRESHOLD, int.MaxValue) == 1);
    }

    /// <summary>Resident set growth, since the last trim, that makes <see cref="TrimIfGrown"/> trim.</summary>
    public const long GrowthBeforeTrim = 64L << 20;

    static long _afterTrim = long.MaxValue;

    /// <summary>Between the batches of a dataset pass: trims the native heap when the resident set has grown by
    /// <see cref="GrowthBeforeTrim"/> since the last trim (read from <c>/proc/self/statm</c>, a few microseconds; the trim
    /// itself only when needed, since it hands pages back that the next batch faults in again). A pass that frees what
    /// it allocated then keeps a flat resident set even when glibc would keep the freed blocks: concept-discovery's
    /// gradient pass (forward, several <c>autograd.grad</c> calls and an NMF projection per batch) grew from 530 to
    /// 1,130 MiB over 6,000 inputs without it, with no live tensor and a flat managed heap (docs/benchmarks.md).
    /// When it trims, it first runs an aggressive full garbage collection, which hands the managed heap's free
    /// memory back as well. Returns true when it trimmed.</summary>
    public static bool TrimIfGrown()
    {
        if (_unavailable || Resident() is not { } rss) return false;
        long mark = Interlocked.Read(ref _afterTrim);
        // The first call, or a smaller resident set than after the last trim, sets the mark.
        if (rss < mark) { Interlocked.CompareExchange(ref _afterTrim, rss, mark); return false; }
        if (rss - mark < GrowthBeforeTrim) return false;
        // The managed heap first: over a long pass the GC lets its committed memory grow with garbage it has not
        // collected yet (concept-discovery's gradient pass over 60,000 inputs: 88 → 239 MiB committed while the native
        // part stayed flat); an aggressive collection decommits it. Only after 64 MiB of growth, so rarely.
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        if (!Trim()) return false;
        Interlocked.Exchange(ref _afterTrim, Resident() ?? rss);
        return true;
    }

    /// <summary>The resident set in bytes from <c>/proc/self/statm</c>; null where there is none.</summary>
    static long? Resident()
    {
        try
        {
            var fields = File.ReadAllText("/proc/self/statm").Split(' ');
            return long.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture) * Environment.SystemPageSize;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException) { return null; }
    }

    /// <summary>Releases free heap pages; returns false when nothing could be done.</summary>
    public static bool Trim()
    {
        if (_unavailable) return false;
        try { return MallocTrim(0) != 0; }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            _unavailable = true;
            return false;
        }
    }
}
