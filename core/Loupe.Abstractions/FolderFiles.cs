using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Loupe.Abstractions;

/// <summary>A file found in a data folder. <see cref="Id"/> is its path relative to the folder, as the manifest and
/// output names show it; a name that is not valid UTF-8 (Linux allows any bytes but '/' and NUL) has each invalid
/// byte written <c>%XX</c>, and is opened by its raw bytes (<see cref="RawPath"/>), since .NET decodes such a name to
/// U+FFFD and cannot open it again.</summary>
/// <param name="Path">The path to show (for a name that is not UTF-8: the folder joined with <see cref="Id"/>).</param>
/// <param name="Id">The relative path, escaped when not UTF-8; distinct across the folder.</param>
/// <param name="RawPath">The exact bytes of the path, when the name is not valid UTF-8; otherwise null.</param>
public sealed record FolderFile(string Path, string Id, byte[]? RawPath)
{
    /// <summary>Opens the file for reading after checking it is a regular file (a FIFO would block, a device never ends).</summary>
    public FileStream OpenRead(string? what = null)
    {
        if (RawPath is null)
        {
            SafeFile.RequireRegular(Path, what);
            return File.OpenRead(Path);
        }
        return FolderFiles.OpenRaw(RawPath, what ?? Path);
    }
}

/// <summary>Lists a folder's files with names exactly as stored (readdir on Linux), so names that are not UTF-8 are
/// kept apart and can be opened (issue 26 item 13).</summary>
public static class FolderFiles
{
    const int ORdOnly = 0, ONonBlock = 0x800, OCloExec = 0x80000;
    const byte DtUnknown = 0, DtDir = 4, DtReg = 8, DtLnk = 10;
    const int IfMt = 0xF000, IfDir = 0x4000, IfReg = 0x8000;

    [DllImport("libc", SetLastError = true)] static extern IntPtr opendir(byte[] path);
    [DllImport("libc", SetLastError = true)] static extern IntPtr readdir(IntPtr dir);
    [DllImport("libc")] static extern int closedir(IntPtr dir);
    [DllImport("libc", SetLastError = true)] static extern int open(byte[] path, int flags);
    [DllImport("libc")] static extern int close(int fd);
    [DllImport("libSystem.Native", EntryPoint = "SystemNative_Stat")] static extern int Stat(byte[] path, [Out] byte[] status);
    [DllImport("libSystem.Native", EntryPoint = "SystemNative_FStat")] static extern int FStat(IntPtr fd, [Out] byte[] status);

    static readonly UTF8Encoding Strict = new(false, true);

    /// <summary>The files under <paramref name="folder"/> (subfolders too when <paramref name="recursive"/>; links to
    /// folders are not followed), ordered by <see cref="FolderFile.Id"/> (ordinal).</summary>
    public static List<FolderFile> List(string folder, bool recursive)
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture is not (Architecture.X64 or Architecture.Arm64))
            return Directory.EnumerateFiles(folder, "*", recursive ? SearchOption.AllDirectories : SearchOption.TopDirectoryOnly)
                .Select(f => new FolderFile(f, System.IO.Path.GetRelativePath(folder, f), null)).OrderBy(f => f.Id, StringComparer.Ordinal).ToList();
        var raw = new List<byte[]>();
        Walk(Encoding.UTF8.GetBytes(folder.TrimEnd('/') + "/"), [], recursive, raw, 0);
        var files = new List<FolderFile>();
        var valid = new HashSet<string>(StringComparer.Ordinal);
        var invalid = new List<byte[]>();
        foreach (var rel in raw)
        {
            string? name = null;
            try { name = Strict.GetString(rel); }
            catch (DecoderFallbackException) { invalid.Add(rel); }
            if (name is not null && valid.Add(name)) files.Add(new FolderFile(System.IO.Path.Combine(folder, name), name, null));
        }
        // An escaped name may equal a real one ('a%FF.png' beside 'a\xff.png'): the real one keeps its name.
        var prefix = Encoding.UTF8.GetBytes(folder.TrimEnd('/') + "/");
        foreach (var rel in invalid.OrderBy(r => r, ByteOrder.Instance))
        {
            var id = Escape(rel);
            for (int k = 2; valid.Contains(id); k++) id = System.IO.Path.ChangeExtension(Escape(rel), null) + $"~{k}" + System.IO.Path.GetExtension(Escape(rel));
            valid.Add(id);
            files.Add(new FolderFile(System.IO.Path.Combine(folder, id), id, [.. prefix, .. rel]));
        }
        return files.OrderBy(f => f.Id, StringComparer.Ordinal).ToList();
    }

    static void Walk(byte[] root, byte[] rel, bool recursive, List<byte[]> found, int depth)
    {
        var dirPath = rel.Length == 0 ? root : [.. root, .. rel];
        var dir = opendir([.. dirPath, 0]);
        if (dir == IntPtr.Zero)
        {
            if (depth == 0) throw new LoupeException($"{Encoding.UTF8.GetString(root)}: cannot list the folder (errno {Marshal.GetLastPInvokeError()})");
            return; // an unreadable subfolder: skipped, as Directory.EnumerateFiles would fail on it anyway
        }
        try
        {
            IntPtr entry;
            while ((entry = readdir(dir)) != IntPtr.Zero)
            {
                // struct dirent (glibc, 64-bit): d_ino 8, d_off 8, d_reclen 2, d_type 1, then d_name (NUL-terminated).
                byte type = Marshal.ReadByte(entry, 18);
                var namePtr = entry + 19;
                int length = 0;
                while (Marshal.ReadByte(namePtr, length) != 0) length++;
                var name = new byte[length];
                Marshal.Copy(namePtr, name, 0, length);
                if (name is [(byte)'.'] or [(byte)'.', (byte)'.']) continue;
                byte[] childRel = rel.Length == 0 ? name : [.. rel, (byte)'/', .. name];
                if (type is DtUnknown or DtLnk)
                {
                    var status = new byte[512];
                    if (Stat([.. root, .. childRel, 0], status) != 0) continue; // a dangling link
                    int mode = BitConverter.ToInt32(status, 4) & IfMt;
                    // A link to a folder is not followed (no cycles); a link to anything else is listed like a file.
                    type = mode == IfDir ? (type == DtLnk ? DtLnk : DtDir) : DtReg;
                }
                if (type == DtDir) { if (recursive && depth < 64) Walk(root, childRel, true, found, depth + 1); }
                else if (type != DtLnk) found.Add(childRel);
            }
        }
        finally { closedir(dir); }
    }

    /// <summary>The relative path with every byte that is not part of valid UTF-8 written <c>%XX</c>.</summary>
    public static string Escape(byte[] rel)
    {
        var sb = new StringBuilder();
        var span = rel.AsSpan();
        while (span.Length > 0)
        {
            if (System.Text.Rune.DecodeFromUtf8(span, out var rune, out int used) == System.Buffers.OperationStatus.Done)
            {
                sb.Append(rune.ToString());
                span = span[used..];
            }
            else
            {
                sb.Append('%').Append(span[0].ToString("X2"));
                span = span[1..];
            }
        }
        return sb.ToString();
    }

    /// <summary>Opens a file by its raw path bytes: without blocking on a FIFO, then refused unless regular.</summary>
    internal static FileStream OpenRaw(byte[] path, string what)
    {
        int fd = open([.. path, 0], ORdOnly | ONonBlock | OCloExec);
        if (fd < 0) throw new LoupeException($"{what}: cannot open (errno {Marshal.GetLastPInvokeError()})");
        var status = new byte[512];
        if (FStat(fd, status) != 0 || (BitConverter.ToInt32(status, 4) & IfMt) != IfReg)
        {
            close(fd);
            throw new LoupeException($"{what}: is not a regular file; refused");
        }
        return new FileStream(new SafeFileHandle(fd, ownsHandle: true), FileAccess.Read);
    }

    sealed class ByteOrder : IComparer<byte[]>
    {
        public static readonly ByteOrder Instance = new();
        public int Compare(byte[]? a, byte[]? b) => a.AsSpan().SequenceCompareTo(b);
    }
}
