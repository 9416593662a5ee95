using System.Runtime.InteropServices;
using System.Text;

namespace Loupe.Abstractions.Toolkit;

/// <summary>Reading files that come from elsewhere (models, data, shard and run folders): real paths with every link
/// resolved, confinement to a folder, refusal of special files (a FIFO blocks forever, a device never ends) and reads
/// capped by what was actually read rather than by the size a file reports.</summary>
public static class SafeFile
{
    const int IfMt = 0xF000, IfIfo = 0x1000, IfChr = 0x2000, IfDir = 0x4000, IfBlk = 0x6000, IfReg = 0x8000, IfSock = 0xC000;

    // The runtime's own portable stat (libSystem.Native ships with every .NET runtime; its FileStatus begins with
    // Flags and Mode on every OS, Mode using the POSIX S_IF* values). The buffer is larger than the struct.
    [DllImport("libSystem.Native", EntryPoint = "SystemNative_Stat")]
    static extern int NativeStat([MarshalAs(UnmanagedType.LPUTF8Str)] string path, [Out] byte[] status);

    /// <summary>The file type bits (S_IFMT) of <paramref name="path"/> after following links, or null when it cannot be
    /// examined (missing, or not on a POSIX system).</summary>
    static int? FileType(string path)
    {
        if (OperatingSystem.IsWindows()) return null;
        var buffer = new byte[512];
        try { return NativeStat(path, buffer) == 0 ? BitConverter.ToInt32(buffer, 4) & IfMt : null; }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
    }

    /// <summary>Throws unless <paramref name="path"/> is a regular file; names FIFOs, devices and sockets, which are
    /// refused before they are opened (opening a FIFO blocks until a writer comes; a device never ends).</summary>
    public static void RequireRegular(string path, string? what = null)
    {
        var kind = FileType(path) switch
        {
            null or IfReg => null,
            IfIfo => "a FIFO (named pipe)",
            IfChr => "a character device",
            IfBlk => "a block device",
            IfSock => "a socket",
            IfDir => "a folder",
            _ => "not a regular file",
        };
        if (kind is not null) throw new LoupeException($"{what ?? path}: is {kind}, not a regular file; refused");
    }

    /// <summary>True when <paramref name="path"/> exists and is a regular file (links followed).</summary>
    public static bool IsRegular(string path) => File.Exists(path) && FileType(path) is null or IfReg;

    /// <summary>The canonical absolute path: every symbolic link in every component resolved (as realpath(3) does,
    /// so <c>link/..</c> is the parent of the link's target). Components that do not exist are kept as written.</summary>
    public static string RealPath(string path)
    {
        // Not Path.GetFullPath: it would fold 'link/..' before the link is resolved.
        var absolute = Path.IsPathRooted(path) ? path : Path.Combine(Environment.CurrentDirectory, path);
        var pending = new Stack<string>(absolute.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse());
        var resolved = "/";
        int hops = 0;
        while (pending.Count > 0)
        {
            var part = pending.Pop();
            if (part == ".") continue;
            if (part == "..") { resolved = Path.GetDirectoryName(resolved) ?? "/"; continue; }
            var next = Path.Combine(resolved, part);
            string? target = null;
            try { target = new FileInfo(next).LinkTarget; }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* unreadable: keep as is */ }
            if (target is null) { resolved = next; continue; }
            if (++hops > 40) throw new LoupeException($"{path}: too many levels of symbolic links");
            var parts = target.Split('/', StringSplitOptions.RemoveEmptyEntries);
            for (int i = parts.Length - 1; i >= 0; i--) pending.Push(parts[i]);
            if (target.StartsWith('/')) resolved = "/";
        }
        return resolved;
    }

    /// <summary>True when <paramref name="path"/> is <paramref name="folder"/> or below it (both real paths).</summary>
    public static bool IsUnder(string path, string folder) =>
        path == folder || path.StartsWith(folder.EndsWith('/') ? folder : folder + "/", StringComparison.Ordinal);

    /// <summary>Resolves <paramref name="relative"/> (read from a file) inside <paramref name="folder"/>: absolute
    /// paths, <c>..</c> and links that lead outside the folder's real path are refused with a message starting
    /// with <paramref name="what"/>. Returns the real path.</summary>
    public static string Inside(string folder, string relative, string what)
    {
        if (relative.Contains('\0')) throw new LoupeException($"{what}: path '{Printable(relative)}' contains a NUL character; refused");
        var root = RealPath(folder);
        var real = RealPath(Path.Combine(root, relative));
        if (Path.IsPathRooted(relative) || !IsUnder(real, root) || real == root)
            throw new LoupeException($"{what}: path '{Printable(relative)}' points outside {Printable(root)} (it resolves to {Printable(real)}); refused");
        return real;
    }

    /// <summary>Reads a whole regular file, refusing it when it holds more than <paramref name="maxBytes"/>: the cap
    /// counts the bytes actually read, so a file that reports a wrong length (procfs, a device) cannot exhaust memory.</summary>
    public static byte[] ReadAllBytes(string path, long maxBytes, string? what = null)
    {
        RequireRegular(path, what);
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        using var ms = new MemoryStream();
        var buffer = new byte[81920];
        int n;
        while ((n = fs.Read(buffer)) > 0)
        {
            if (ms.Length + n > maxBytes)
                throw new LoupeException($"{what ?? path}: file is larger than {maxBytes} bytes; refused");
            ms.Write(buffer, 0, n);
        }
        return ms.ToArray();
    }

    /// <summary>Reads a whole UTF-8 text file with <see cref="ReadAllBytes"/>'s cap (invalid UTF-8 is replaced).</summary>
    public static string ReadAllText(string path, long maxBytes, string? what = null)
    {
        var bytes = ReadAllBytes(path, maxBytes, what);
        var start = bytes.AsSpan().StartsWith("\uFEFF"u8) ? 3 : 0;
        return Encoding.UTF8.GetString(bytes, start, bytes.Length - start);
    }

    /// <summary><paramref name="text"/> safe to print on a terminal: control characters (C0 but tab and newline, DEL,
    /// C1) and bidirectional overrides become '?', so a name read from a file cannot move the cursor, recolour,
    /// retitle the terminal or reorder what is shown.</summary>
    public static string Printable(string text)
    {
        int i = 0;
        while (i < text.Length && !Unsafe(text[i])) i++;
        if (i == text.Length) return text;
        var sb = new StringBuilder(text.Length);
        foreach (var c in text) sb.Append(Unsafe(c) ? '?' : c);
        return sb.ToString();
    }

    /// <summary>True for characters that <see cref="Printable"/> replaces.</summary>
    public static bool Unsafe(char c) =>
        c < 0x20 && c is not ('\n' or '\t') || c is >= '\u007f' and <= '\u009f' || c is >= '\u202a' and <= '\u202e' || c is >= '\u2066' and <= '\u2069';
}
