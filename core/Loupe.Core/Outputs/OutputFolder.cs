using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Core;

/// <summary>A run's output folder, held for the run: taken exclusively (a lock file created with O_EXCL, so a second
/// run with the same <c>--out</c> is refused rather than mixing its files and losing a manifest), with a journal
/// that records each finished step in O(1) (one appended line) instead of rewriting the whole manifest.</summary>
public sealed class OutputFolder : IDisposable
{
    /// <summary>Name of the lock file, present while a run writes the folder.</summary>
    public const string LockName = ".loupe.lock";
    /// <summary>Name of the journal: one JSON line per finished step (its record and its artifacts).</summary>
    public const string JournalName = "journal.jsonl";

    readonly FileStream _lock;
    FileStream? _journal;

    OutputFolder(string dir, FileStream lockStream) { Directory = dir; _lock = lockStream; }

    /// <summary>The folder.</summary>
    public string Directory { get; }

    /// <summary>Takes <paramref name="dir"/>; null when another run holds it (or took it first).</summary>
    public static OutputFolder? TryTake(string dir)
    {
        System.IO.Directory.CreateDirectory(dir);
        try
        {
            var fs = new FileStream(Path.Combine(dir, LockName), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose);
            fs.Write(Encoding.UTF8.GetBytes($"{Environment.ProcessId}\n"));
            fs.Flush();
            return new OutputFolder(dir, fs);
        }
        catch (IOException) when (File.Exists(Path.Combine(dir, LockName))) { return null; }
    }

    /// <summary>Appends one finished step to the journal (flushed, so it survives a kill).</summary>
    public void Journal(JsonObject step, IEnumerable<ArtifactRecord> artifacts)
    {
        _journal ??= new FileStream(Path.Combine(Directory, JournalName), FileMode.Append, FileAccess.Write, FileShare.Read);
        var line = new JsonObject { ["step"] = step.DeepClone(), ["artifacts"] = JsonSerializer.SerializeToNode(artifacts, Manifest.JsonOptions) };
        _journal.Write(Encoding.UTF8.GetBytes(line.ToJsonString() + "\n"));
        _journal.Flush();
    }

    /// <summary>Removes the journal once the complete manifest is on disk.</summary>
    public void DropJournal()
    {
        _journal?.Dispose();
        _journal = null;
        try { File.Delete(Path.Combine(Directory, JournalName)); } catch (IOException) { /* it stays beside a complete manifest */ }
    }

    /// <summary>Null when the folder and every listed artifact still exist; else what is gone.</summary>
    public string? Missing(IReadOnlyList<ArtifactRecord> artifacts)
    {
        if (!System.IO.Directory.Exists(Directory)) return $"the output folder {Directory} was removed during the run";
        var gone = artifacts.Where(a => !File.Exists(Path.Combine(Directory, a.Path))).Select(a => a.Path).ToList();
        return gone.Count == 0 ? null : $"{gone.Count} artifact(s) listed in the manifest are missing from {Directory} (first: {gone[0]}); the folder was changed during the run";
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _journal?.Dispose();
        _lock.Dispose();
    }
}
