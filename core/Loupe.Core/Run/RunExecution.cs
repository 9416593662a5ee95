using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Core;

public static partial class PipelineRunner
{
    /// <summary>One run in its output folder, in named steps: open the manifest, run each step on its worker (record,
    /// outcome, expectations, journal line), then predictions, the run-level outputs, the final manifest and the report.</summary>
    sealed class RunExecution(PreparedRun run, RunRequest request, OutputFolder folder, CancellationToken cancellation)
    {
        readonly PipelineSpec spec = run.Spec;
        readonly string outDir = folder.Directory;
        readonly IRunObserver? observer = request.Observer;
        readonly List<ArtifactRecord> artifacts = [];
        readonly List<JsonObject> stepRecords = run.Steps.Select(s => new JsonObject { ["id"] = s.Spec.Id, ["uses"] = s.Spec.Uses, ["status"] = "pending" }).ToList();
        readonly DateTimeOffset started = DateTimeOffset.Now;
        JsonObject manifest = null!;
        string? manifestError;
        int failed, artifactsJournaled;
        string? stop; // why the remaining steps do not run
        bool outputFault;

        public RunResult Run(bool created)
        {
            manifest = BuildManifest(run, request, started);
            manifest["steps"] = new JsonArray(stepRecords.Cast<JsonNode>().ToArray());
            if (run.Shard is { } shard)
                manifest["shard"] = new JsonObject { ["index"] = shard.Index, ["count"] = shard.Count, ["firstRow"] = shard.FirstRow, ["rows"] = shard.Rows };
            // The first write checks the folder is writable before any step runs.
            Save("running");
            if (manifestError is not null)
            {
                folder.Dispose();
                if (created) try { Directory.Delete(outDir); } catch (Exception) { /* leave it */ }
                return new RunResult(2, null, null, [new(spec.File, 0, 0, $"the output folder {outDir} is not writable: {manifestError}")]);
            }
            foreach (var w in run.Warnings) observer?.Warning(w);
            for (int i = 0; i < run.Steps.Count; i++) RunStep(run.Steps[i], stepRecords[i], i);
            RecordPredictions();
            // A shard's run-level outputs are written by 'loupe merge', over all shards; none after a full disk.
            if (run.Shard is null && !outputFault)
            {
                try { RunOutputs.Write(outDir, stepRecords, artifacts, manifest, observer); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { observer?.Warning($"run-level outputs not written: {e.Message}"); }
            }
            return Finish();
        }

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

        void RunStep(PreparedStep step, JsonObject rec, int index)
        {
            if (cancellation.IsCancellationRequested) stop ??= "not run: the run was cancelled";
            if (stop is not null) { rec["status"] = "not run"; rec["error"] = stop; failed++; return; }
            observer?.StepStarted(step.Spec.Id, step.Spec.Uses, index, run.Steps.Count);
            var metrics = new Dictionary<string, double>();
            var warnings = new List<string>();
            var sink = new StepArtifactSink(outDir, step.Spec.Id, artifacts, metrics);
            var stepCancellation = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
            var ctx = new AnalysisContext(run, step, sink, stepCancellation.Token, observer, warnings);
            var timeout = step.Spec.Timeout ?? spec.StepTimeout;
            if (timeout == TimeSpan.Zero) timeout = null;
            OpenRecord(rec, step, timeout);
            var sw = Stopwatch.StartNew();
            int runWarnings = run.Warnings.Count;
            var outcome = StepThread.Run(() => RunStepBody(run, step, ctx), stepCancellation, timeout, cancellation);
            sw.Stop();
            var (status, error) = Outcome(step, rec, outcome, ctx, sink);
            (status, error) = Expectations(step, rec, metrics, status, error);
            if (status != "succeeded") failed++;
            CloseRecord(rec, status, error, sw.Elapsed, warnings, metrics, sink, outcome);
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

        static void OpenRecord(JsonObject rec, PreparedStep step, TimeSpan? timeout)
        {
            rec["status"] = "running";
            rec["startedAt"] = DateTimeOffset.Now.ToString("o");
            rec["options"] = StepOptions(step);
            rec["target"] = step.Target.Describe();
            if (step.Display is { } display) rec["display"] = Manifest.ToNode(display);
            if (LinkedStep(step) is { } of) rec["of"] = of;
            if (timeout is { } t) rec["timeoutMs"] = t.TotalMilliseconds;
        }

        /// <summary>The worker's outcome: an abandoned step's model is replaced; a full or unwritable output folder stops
        /// the run (later steps could not keep their outputs either).</summary>
        (string Status, string? Error) Outcome(PreparedStep step, JsonObject rec, StepOutcome outcome, AnalysisContext ctx, StepArtifactSink sink)
        {
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
            if (sink.Fault is { } wf)
            {
                (status, error) = ("failed", wf.Message);
                rec["fault"] = wf.Fault;
                stop = $"not run: {wf.Message}";
                outputFault = true;
            }
            return (status, error);
        }

        /// <summary><c>expect:</c> thresholds, checked after the step's outputs are written (a shard's: after the merge).</summary>
        (string Status, string? Error) Expectations(PreparedStep step, JsonObject rec, Dictionary<string, double> metrics, string status, string? error)
        {
            if (status != "succeeded" || step.Spec.Expect.Count == 0) return (status, error);
            if (run.Shard is not null)
            {
                rec["expectations"] = new JsonArray(step.Spec.Expect.Select(e => (JsonNode)new JsonObject { ["expect"] = e.Text, ["passed"] = "after merge" }).ToArray());
                return (status, error);
            }
            var failures = step.Spec.Expect.Select(e => e.Check(metrics)).OfType<string>().ToList();
            rec["expectations"] = new JsonArray(step.Spec.Expect.Select(e => (JsonNode)new JsonObject
            {
                ["expect"] = e.Text, ["passed"] = e.Check(metrics) is null,
            }).ToArray());
            return failures.Count > 0 ? ("failed", string.Join("; ", failures)) : (status, error);
        }

        static void CloseRecord(JsonObject rec, string status, string? error, TimeSpan elapsed, List<string> warnings, Dictionary<string, double> metrics, StepArtifactSink sink, StepOutcome outcome)
        {
            rec["status"] = status;
            rec["durationMs"] = Math.Round(elapsed.TotalMilliseconds, 1);
            if (error != null) rec["error"] = error;
            lock (warnings)
                if (warnings.Count > 0) rec["warnings"] = new JsonArray(warnings.Select(w => (JsonNode)JsonValue.Create(w)!).ToArray());
            if (!outcome.Abandoned && metrics.Count > 0) rec["metrics"] = JsonSerializer.SerializeToNode(metrics, Manifest.JsonOptions);
            if (!outcome.Abandoned && sink.Directions.Count > 0) rec["directions"] = JsonSerializer.SerializeToNode(sink.Directions, Manifest.JsonOptions);
            // Tensors created on the step's thread and still alive after it (0 = no leak; absent when abandoned).
            if (outcome.LiveTensors is { } live) rec["liveTensorDelta"] = live;
        }

        void RecordPredictions()
        {
            if (outputFault || cancellation.IsCancellationRequested || run.TopK <= 0 || run.Data is null) return;
            try
            {
                if (Predictions.Compute(run, run.TopK, outDir, cancellation, out var skipped) is { } predictions) manifest["predictions"] = predictions;
                else if (skipped is not null) manifest["predictionsSkipped"] = skipped;
            }
            catch (Exception e) when (e is not OperationCanceledException) { observer?.Warning($"predictions not recorded: {e.Message}"); }
        }

        /// <summary>The final manifest (status, duration, a check that the outputs still exist) and the report.</summary>
        RunResult Finish()
        {
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
    }
}
