using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Core;

/// <summary>Runs pipelines: parse → resolve ids → bind options → validate everything → run each step.</summary>
public static partial class PipelineRunner
{
    static PipelineRunner() => NativeHeap.LimitArenas();

    /// <summary>Runs a pipeline end to end. Never throws for pipeline problems: they come back as errors.</summary>
    public static RunResult Run(RunRequest request, CancellationToken cancellation = default)
    {
        PreparedRun prepared;
        try { prepared = Prepare(request); }
        catch (PipelineException e) { return new RunResult(2, null, null, e.Errors); }
        try
        {
            using (prepared)
                return Execute(prepared, request, cancellation);
        }
        finally { NativeHeap.Trim(); }
    }

    /// <summary>Creates and takes the run's folder (exclusively: see <see cref="OutputFolder"/>); returns it and
    /// whether it was created (rather than an existing empty one).</summary>
    static (OutputFolder Folder, bool Created) CreateOutputDirectory(PipelineSpec spec, string? explicitDir)
    {
        static bool OnlyLock(string dir) => Directory.EnumerateFileSystemEntries(dir).All(e => Path.GetFileName(e) == OutputFolder.LockName);
        if (explicitDir is not null)
        {
            var full = CheckedOutputPath(spec, explicitDir);
            string Refusal(string why) => $"output folder {full} {why}; Loupe never overwrites a run — choose another --out";
            if (File.Exists(full) || Directory.Exists(full) && Directory.EnumerateFileSystemEntries(full).Any())
                throw new PipelineException([new(spec.File, 0, 0, Refusal(File.Exists(Path.Combine(full, OutputFolder.LockName)) ? "is in use by another run" : "already exists and is not empty"))]);
            var existed = Directory.Exists(full);
            var folder = OutputFolder.TryTake(full) ?? throw new PipelineException([new(spec.File, 0, 0, Refusal("is in use by another run"))]);
            if (!OnlyLock(full)) { folder.Dispose(); throw new PipelineException([new(spec.File, 0, 0, Refusal("already exists and is not empty"))]); }
            return (folder, !existed);
        }
        var name = string.Concat(spec.Name.Select(c => char.IsLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '_'));
        var baseDir = CheckedOutputPath(spec, spec.OutputDir.Replace("{name}", name).Replace("{timestamp}", DateTime.Now.ToString("yyyyMMdd-HHmmss")));
        for (int i = 1; ; i++)
        {
            var dir = i == 1 ? baseDir : $"{baseDir}-{i}";
            if (Directory.Exists(dir) || File.Exists(dir)) continue;
            // Two runs may pick the same free name at once: the one that takes the lock keeps it.
            if (OutputFolder.TryTake(dir) is not { } folder) continue;
            if (OnlyLock(dir)) return (folder, true);
            folder.Dispose();
        }
    }

    static RunResult Execute(PreparedRun run, RunRequest request, CancellationToken cancellation)
    {
        var spec = run.Spec;
        OutputFolder folder;
        bool created;
        try { (folder, created) = CreateOutputDirectory(spec, request.OutDir); }
        catch (PipelineException e) { return new RunResult(2, null, null, e.Errors); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return new RunResult(2, null, null, [new(spec.File, 0, 0, $"cannot create the output folder: {e.Message}")]);
        }
        using (folder) return new RunExecution(run, request, folder, cancellation).Run(created);
    }

    /// <summary>A step's body on its worker thread. libtorch keeps its intra-op thread count per native thread (OpenMP's
    /// setting), so <c>settings.threads</c>, applied while preparing, is applied again on the worker that runs the step.
    /// A guarded backward pass that failed in the step (<see cref="GuardedFunction{T}"/>) fails it, whatever the step
    /// made of the zeros it got.</summary>
    internal static void RunStepBody(PreparedRun run, PreparedStep step, IAnalysisContext context)
    {
        if (run.Spec.Threads > 0) torch.set_num_threads(Math.Min(run.Spec.Threads, MaxThreads));
        BackwardErrors.Take();   // a previous step's, on this worker thread: already reported (or its step was abandoned)
        try { step.Analysis.Run(step.Options, context); }
        catch (Exception e) when (e is not OperationCanceledException && BackwardErrors.Take() is { } backward)
        {
            // The step failed after a guarded backward pass did (its gradients were zeros): that error is the cause.
            throw new LoupeException(backward.Message, e);
        }
        BackwardErrors.ThrowIfAny();
    }

    /// <summary>Folders a run may never write into (nor below, but for '/' itself).</summary>
    static readonly string[] SystemFolders = ["/etc", "/dev", "/proc", "/sys", "/boot", "/bin", "/sbin", "/lib", "/lib64"];

    /// <summary>The absolute output path; refuses NUL characters, '/', '/usr' and system folders (links resolved).</summary>
    static string CheckedOutputPath(PipelineSpec spec, string dir)
    {
        PipelineException Refuse(string why) => new([new(spec.File, 0, 0, $"output folder '{SafeFile.Printable(dir)}' {why}; choose another --out or output.dir")]);
        if (dir.Contains('\0')) throw Refuse("contains a NUL character");
        if (dir.Any(SafeFile.Unsafe)) throw Refuse("contains control characters");
        var full = Path.GetFullPath(dir);
        var real = SafeFile.RealPath(full);
        if (real is "/" or "/usr" || SystemFolders.Any(f => SafeFile.IsUnder(real, f)))
            throw Refuse($"is {(real == full ? "" : $"(through links) ")}{real}, a system folder");
        return full;
    }

    /// <summary>Exit code of a run stopped by Ctrl+C (128 + SIGINT, as shells report it).</summary>
    public const int ExitCancelled = 130;

    sealed class NoTarget : ITarget
    {
        public static readonly NoTarget Instance = new();
        public IReadOnlyCollection<string> RequiredLayers => [];
        public TargetSelection Select(TargetInput original) => throw new LoupeException("this step has no target");
        public Tensor Scores(TargetInput input, TargetSelection selection) => throw new LoupeException("this step has no target");
        public string Describe() => "none";
    }
}
