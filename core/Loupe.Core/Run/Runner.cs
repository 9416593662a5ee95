using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using TorchSharp;
using YamlDotNet.RepresentationModel;
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
        using (folder) return Execute(run, request, folder, created, cancellation);
    }

    static RunResult Execute(PreparedRun run, RunRequest request, OutputFolder folder, bool created, CancellationToken cancellation)
    {
        var spec = run.Spec;
        var outDir = folder.Directory;
        var observer = request.Observer;
        var artifacts = new List<ArtifactRecord>();
        var stepRecords = run.Steps.Select(s => new JsonObject { ["id"] = s.Spec.Id, ["uses"] = s.Spec.Uses, ["status"] = "pending" }).ToList();
        var started = DateTimeOffset.Now;
        var manifest = BuildManifest(run, request, started);
        manifest["steps"] = new JsonArray(stepRecords.Cast<JsonNode>().ToArray());
        if (run.Shard is { } shard)
            manifest["shard"] = new JsonObject { ["index"] = shard.Index, ["count"] = shard.Count, ["firstRow"] = shard.FirstRow, ["rows"] = shard.Rows };
        string? manifestError = null;
        void Save(string status)
        {
            manifest["status"] = status;
            manifest["finishedAt"] = status == "running" ? null : DateTimeOffset.Now.ToString("o");
            manifest["artifacts"] = JsonSerializer.SerializeToNode(artifacts, Manifest.JsonOptions);
            // Run-level warnings also arrive while steps run (e.g. a data source skipping an unreadable image).
            manifest["warnings"] = new JsonArray(run.Warnings.Distinct().Select(w => (JsonNode)JsonValue.Create(w)!).ToArray());
            // The manifest is replaced atomically: when it cannot be written, the copy on disk stays valid JSON.
            try { Manifest.Write(outDir, manifest); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { manifestError ??= e.Message; }
        }
        // The first write checks the folder is writable before any step runs.
        Save("running");
        if (manifestError is not null)
        {
            folder.Dispose();
            if (created) try { Directory.Delete(outDir); } catch (Exception) { /* leave it */ }
            return new RunResult(2, null, null, [new(spec.File, 0, 0, $"the output folder {outDir} is not writable: {manifestError}")]);
        }
        foreach (var w in run.Warnings) observer?.Warning(w);

        int failed = 0, artifactsJournaled = 0;
        string? stop = null; // why the remaining steps do not run
        bool outputFault = false;
        for (int i = 0; i < run.Steps.Count; i++)
        {
            var step = run.Steps[i];
            var rec = stepRecords[i];
            if (cancellation.IsCancellationRequested) stop ??= "not run: the run was cancelled";
            if (stop is not null) { rec["status"] = "not run"; rec["error"] = stop; failed++; continue; }
            observer?.StepStarted(step.Spec.Id, step.Spec.Uses, i, run.Steps.Count);
            var metrics = new Dictionary<string, double>();
            var warnings = new List<string>();
            var sink = new StepArtifactSink(outDir, step.Spec.Id, artifacts, metrics);
            var stepCancellation = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
            var ctx = new AnalysisContext(run, step, sink, stepCancellation.Token, observer, warnings);
            var timeout = step.Spec.Timeout ?? spec.StepTimeout;
            if (timeout == TimeSpan.Zero) timeout = null;
            rec["status"] = "running";
            rec["startedAt"] = DateTimeOffset.Now.ToString("o");
            rec["options"] = Manifest.ToNode(step.Options);
            rec["target"] = step.Target.Describe();
            if (step.Display is { } display) rec["display"] = Manifest.ToNode(display);
            if (LinkedStep(step) is { } of) rec["of"] = of;
            if (timeout is { } t) rec["timeoutMs"] = t.TotalMilliseconds;
            var sw = Stopwatch.StartNew();
            int runWarnings = run.Warnings.Count;
            var outcome = StepThread.Run(() => RunStepBody(run, step, ctx), stepCancellation, timeout, cancellation);
            sw.Stop();
            var (status, error) = (outcome.Status, outcome.Error);
            if (outcome.Abandoned)
            {
                ctx.Detached = true;
                sink.Close();
                run.Abandoned = true;
                // The abandoned thread keeps its model; later steps get a fresh copy.
                try { run.Model = run.Reload!(); }
                catch (Exception e) { stop = $"not run: the model could not be reloaded after step '{step.Spec.Id}' was abandoned: {e.Message}"; }
            }
            if (outcome.Exception is { } ex && status == "failed") rec["errorDetail"] = ex.ToString();
            if (outcome.Fault is { } fault) rec["fault"] = fault;
            if (outcome.Fault == "out-of-memory") GC.Collect();
            // A full or unwritable output folder stops the run: later steps could not keep their outputs either.
            if (sink.Fault is { } wf)
            {
                (status, error) = ("failed", wf.Message);
                rec["fault"] = wf.Fault;
                stop = $"not run: {wf.Message}";
                outputFault = true;
            }
            // expect: thresholds, checked after the step's outputs are written.
            if (status == "succeeded" && step.Spec.Expect.Count > 0 && run.Shard is not null)
                rec["expectations"] = new JsonArray(step.Spec.Expect.Select(e => (JsonNode)new JsonObject { ["expect"] = e.Text, ["passed"] = "after merge" }).ToArray());
            else if (status == "succeeded" && step.Spec.Expect.Count > 0)
            {
                var failures = step.Spec.Expect.Select(e => e.Check(metrics)).OfType<string>().ToList();
                rec["expectations"] = new JsonArray(step.Spec.Expect.Select(e => (JsonNode)new JsonObject
                {
                    ["expect"] = e.Text, ["passed"] = e.Check(metrics) is null,
                }).ToArray());
                if (failures.Count > 0) { status = "failed"; error = string.Join("; ", failures); }
            }
            if (status != "succeeded") failed++;
            rec["status"] = status;
            rec["durationMs"] = Math.Round(sw.Elapsed.TotalMilliseconds, 1);
            if (error != null) rec["error"] = error;
            lock (warnings)
                if (warnings.Count > 0) rec["warnings"] = new JsonArray(warnings.Select(w => (JsonNode)JsonValue.Create(w)!).ToArray());
            if (!outcome.Abandoned && metrics.Count > 0) rec["metrics"] = JsonSerializer.SerializeToNode(metrics, Manifest.JsonOptions);
            if (!outcome.Abandoned && sink.Directions.Count > 0) rec["directions"] = JsonSerializer.SerializeToNode(sink.Directions, Manifest.JsonOptions);
            // Tensors created on the step's thread and still alive after it (0 = no leak; absent when abandoned).
            if (outcome.LiveTensors is { } live) rec["liveTensorDelta"] = live;
            foreach (var w in run.Warnings.Skip(runWarnings).Distinct()) observer?.Warning(w);
            observer?.StepFinished(step.Spec.Id, status, sw.Elapsed, error);
            if (!outcome.Abandoned) stepCancellation.Dispose(); // an abandoned step may still read its token
            // A finished step is one journal line (O(1)); the whole manifest is rewritten only when something failed.
            int before = artifactsJournaled;
            artifactsJournaled = artifacts.Count;
            try { folder.Journal(rec, artifacts.Skip(before).Take(artifactsJournaled - before)); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* the final manifest (and its check of the outputs) report it */ }
            if (status != "succeeded") Save("running");
        }
        if (!outputFault && !cancellation.IsCancellationRequested && run.TopK > 0 && run.Data is not null)
        {
            try
            {
                if (Predictions.Compute(run, run.TopK, cancellation, out var skipped) is { } predictions) manifest["predictions"] = predictions;
                else if (skipped is not null) manifest["predictionsSkipped"] = skipped;
            }
            catch (Exception e) when (e is not OperationCanceledException) { observer?.Warning($"predictions not recorded: {e.Message}"); }
        }
        // A shard's run-level outputs are written by 'loupe merge', over all shards; none after a full disk.
        if (run.Shard is null && !outputFault)
        {
            try { RunOutputs.Write(outDir, stepRecords, artifacts, manifest, observer); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                observer?.Warning($"run-level outputs not written: {e.Message}");
            }
        }
        if (run.Shard is not null && run.Data is ShardedDataSource { Ids: { } ids }) manifest["shard"]!["ids"] = new JsonArray(ids.Select(i => (JsonNode)JsonValue.Create(i)!).ToArray());
        manifest["durationMs"] = Math.Round((DateTimeOffset.Now - started).TotalMilliseconds, 1);
        var cancelled = cancellation.IsCancellationRequested && failed > 0; // a run that finished anyway is not cancelled
        // The folder (or some outputs) may have been deleted while the run went on: then it did not succeed.
        if (folder.Missing(artifacts) is { } missing) { manifest["error"] = missing; failed++; observer?.Warning(missing); }
        Save(failed == 0 ? "succeeded" : cancelled ? "cancelled" : "failed");
        if (manifestError is null) folder.DropJournal();
        Report.RunReport.AfterRun(spec.Report, run.Data is { } data ? new Report.ReportData(data, run.Input, spec.BatchSize) : null, outDir, manifest, observer);
        var errors = new List<PipelineError>();
        if (manifest["error"] is { } lost) errors.Add(new(spec.File, 0, 0, (string)lost!));
        if (manifestError is not null)
            errors.Add(new(spec.File, 0, 0, $"manifest.json could not be updated ({manifestError}); the copy in {outDir} is valid but shows an earlier state of the run"));
        return new RunResult(cancelled ? ExitCancelled : failed == 0 && manifestError is null ? 0 : 1, outDir, manifest, errors);
    }

    /// <summary>A step's body on its worker thread. libtorch keeps its intra-op thread count per native thread (OpenMP's
    /// setting), so <c>settings.threads</c>, applied while preparing, is applied again on the worker that runs the step.</summary>
    internal static void RunStepBody(PreparedRun run, PreparedStep step, IAnalysisContext context)
    {
        if (run.Spec.Threads > 0) torch.set_num_threads(Math.Min(run.Spec.Threads, MaxThreads));
        step.Analysis.Run(step.Options, context);
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
