using System.Diagnostics;
using System.Globalization;

namespace Loupe.Tools;

/// <summary>What the opt-in memory tools (Loupe.Soak, Loupe.ExplorerLoad) read about their own process: one copy,
/// linked into each.</summary>
static class ToolProcess
{
    /// <summary>Two full collections around the pending finalizers: what is left is live.</summary>
    public static void Settle()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }

    /// <summary>VmRSS from /proc (Linux); elsewhere the working set.</summary>
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

    /// <summary>The repository root: the first folder above the tool's binaries that holds Framework.sln.</summary>
    public static string FindRoot(string hint = "")
    {
        var dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "Framework.sln"))) dir = Path.GetDirectoryName(dir);
        return dir ?? throw new InvalidOperationException("Framework.sln not found" + hint);
    }
}
