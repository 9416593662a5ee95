using System.Diagnostics;
using System.Globalization;

namespace Loupe.Testing;

/// <summary>What the memory tests and the opt-in memory tools (tools/Loupe.Soak, tools/Loupe.ExplorerLoad, which link
/// this file) read about their own process.</summary>
public static class ProcessMemory
{
    /// <summary>Two full collections around the pending finalizers: what is left is live.</summary>
    public static void Settle()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }

    /// <summary>VmRSS of this process in bytes (Linux), else the working set.</summary>
    public static long Rss()
    {
        const string status = "/proc/self/status";
        if (File.Exists(status))
            foreach (var line in File.ReadLines(status))
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        using var p = Process.GetCurrentProcess();
        return p.WorkingSet64;
    }
}
