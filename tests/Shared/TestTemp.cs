using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace Loupe.Testing;

/// <summary>
/// Keeps every test process's temporary files in one folder of its own and deletes it when the process ends, so a
/// test run leaves nothing behind in the machine's temp folder (runs used to leave gigabytes there, until a later
/// run found the disk full). TMPDIR is pointed at the folder, so Path.GetTempPath() in the tests, and every process
/// they start (the CLI, dotnet build, python), write there too. Folders of test processes that died without
/// cleaning up (killed runs) are swept at a later start, once untouched for half an hour.
/// </summary>
static class TestTemp
{
    const string Prefix = "loupe-tests-";

    /// <summary>The process's own temporary folder, deleted when the process ends.</summary>
    public static string Root { get; private set; } = Path.GetTempPath();

    /// <summary>The machine's temporary folder, for caches meant to outlive the run (opt-in suites).</summary>
    public static string Machine { get; private set; } = Path.GetTempPath();

    [ModuleInitializer]
    internal static void Install()
    {
        var parent = Path.GetTempPath();
        Machine = parent;
        if (Path.GetFileName(Path.TrimEndingDirectorySeparator(parent)).StartsWith(Prefix, StringComparison.Ordinal))
        {
            Machine = Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(parent)) ?? parent;
            return; // a child of a test process: its parent owns and cleans the folder
        }
        SweepDeadRuns(parent);
        Root = Path.Combine(parent, $"{Prefix}{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Root);
        Environment.SetEnvironmentVariable("TMPDIR", Root);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Remove(Root, wait: false);
    }

    /// <summary>
    /// Deletes a folder with rm on Unix: .NET cannot delete files whose names are not UTF-8 (the security tests make
    /// some), and at exit the test platform kills a host that takes more than a moment
    /// (VSTEST_TESTHOST_SHUTDOWN_TIMEOUT, 100 ms), too short to delete a large run's files, so there the rm is left
    /// to outlive the host. Whatever survives is swept by a later test process.
    /// </summary>
    static void Remove(string dir, bool wait)
    {
        if (!OperatingSystem.IsWindows())
        {
            try
            {
                using var rm = Process.Start(new ProcessStartInfo("rm", ["-rf", "--", dir]) { UseShellExecute = false });
                if (rm is not null)
                {
                    if (wait) rm.WaitForExit();
                    return;
                }
            }
            catch (System.ComponentModel.Win32Exception) { }
        }
        TryDelete(dir);
    }

    static void SweepDeadRuns(string parent)
    {
        IEnumerable<string> dirs;
        try { dirs = Directory.EnumerateDirectories(parent, Prefix + "*").ToList(); }
        catch (IOException) { return; }
        catch (UnauthorizedAccessException) { return; }
        foreach (var dir in dirs)
        {
            var rest = Path.GetFileName(dir)[Prefix.Length..];
            var dash = rest.IndexOf('-');
            // Dead, and untouched for a while: a process of another PID namespace sharing this folder may look dead.
            if (dash > 0 && int.TryParse(rest[..dash], out var pid) && !Alive(pid)
                && DateTime.UtcNow - Directory.GetLastWriteTimeUtc(dir) > TimeSpan.FromMinutes(30))
                Remove(dir, wait: true);
        }
    }

    static bool Alive(int pid)
    {
        try { using var p = Process.GetProcessById(pid); return !p.HasExited; }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    static void TryDelete(string dir)
    {
        try { Directory.Delete(dir, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
