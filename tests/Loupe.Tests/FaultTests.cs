using System.Diagnostics;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Core;
using Microsoft.Extensions.DependencyInjection;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Tests;

/// <summary>Faults injected during a run (issue 9, item 3): a step that hangs (cooperatively or not), runs out of memory,
/// a full disk, a read-only output folder, Ctrl+C. In every case the manifest on disk is valid JSON, finished steps keep
/// their outputs and the exit code is non-zero. (A step that throws: PluginHostTests.AThrowingPluginFails....)</summary>
public class FaultTests
{
    public sealed record HangOptions
    {
        /// <summary>Stop when the step's token is cancelled; otherwise wait for <see cref="Release"/> only.</summary>
        public bool Cooperative { get; init; } = true;
    }

    /// <summary>Released by the tests, so that a non-cooperative step thread ends with the test.</summary>
    public static readonly ManualResetEventSlim Release = new();
    /// <summary>Set when the abandoned step woke up and tried to write.</summary>
    public static readonly ManualResetEventSlim WroteAfterAbandon = new();

    /// <summary>Runs the model once, then hangs; a non-cooperative one ignores its token and later tries to write.</summary>
    public sealed class Hang : Analysis<HangOptions>
    {
        public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward, UsesTarget: false, UsesData: false);
        public override void Run(HangOptions o, IAnalysisContext ctx)
        {
            using (no_grad()) ctx.Model.Forward(zeros(1, 1, 28, 28)).Dispose();
            if (o.Cooperative)
            {
                ctx.Cancellation.WaitHandle.WaitOne();
                ctx.Cancellation.ThrowIfCancellationRequested();
            }
            Release.Wait();
            try { ctx.Output.Json("late", new { woke = true }); }
            finally { WroteAfterAbandon.Set(); }
        }
    }

    public enum OomKind { Managed, Native }
    public sealed record OomOptions { public OomKind Kind { get; init; } }

    /// <summary>Runs out of memory: a managed OutOfMemoryException, or a libtorch allocation of 4 PiB that fails.</summary>
    public sealed class Oom : Analysis<OomOptions>
    {
        public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward, UsesTarget: false, UsesData: false);
        public override void Run(OomOptions o, IAnalysisContext ctx)
        {
            if (o.Kind == OomKind.Managed) throw new OutOfMemoryException("Array dimensions exceeded supported range.");
            empty(1L << 50).Dispose();
        }
    }

    /// <summary>A custom autograd function whose backward throws, as a libtorch error there would.</summary>
    sealed class ThrowingBackward : Loupe.Abstractions.Toolkit.GuardedFunction<ThrowingBackward>
    {
        public override string Name => "FaultThrowingBackward";
        protected override Tensor Forward(TorchSharp.torch.autograd.AutogradContext ctx, object[] vars) => ((Tensor)vars[0]).alias();
        protected override List<Tensor> Backward(TorchSharp.torch.autograd.AutogradContext ctx, Tensor grad) => throw new InvalidOperationException("no rule for this layer");
    }

    /// <summary>A step that takes a gradient through <see cref="ThrowingBackward"/> with libtorch's own autograd.grad
    /// (as a plugin may, without the toolkit) and writes a map of it.</summary>
    public sealed class BackwardFault : Analysis<NoOptions>
    {
        public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Gradients, UsesTarget: false);
        public override void Run(NoOptions o, IAnalysisContext ctx)
        {
            foreach (var batch in ctx.Batches())
            {
                using var scope = NewDisposeScope();
                var x = batch.Input.detach().requires_grad_(true);
                var g = CheckedOps.Grad([ctx.Model.Forward(ThrowingBackward.apply(x)).sum()], [x])[0];
                ctx.Output.Raw("gradient", batch.Ids[0], NdArray.FromTensor(g[0]));
            }
        }
    }

    /// <summary>A step whose own checks throw something other than a <see cref="LoupeException"/> (a plugin's bug).</summary>
    public sealed class ThrowingCheck : Analysis<NoOptions>
    {
        public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward, UsesTarget: false, UsesData: false);
        public override IEnumerable<string> Validate(NoOptions options, AnalysisValidationContext context)
        {
            yield return "a first complaint";
            throw new InvalidOperationException("Sequence contains no elements");
        }
        public override void Run(NoOptions o, IAnalysisContext ctx) => throw new InvalidOperationException("never runs");
    }

    public sealed record CrashOptions
    {
        /// <summary>A file the adapter "parses" (named in the error, as a real parser's would be).</summary>
        public string Path { get; init; } = "";
    }

    /// <summary>A model backend whose parser fails on a hostile file with something other than a LoupeException.</summary>
    public sealed class CrashingModel : ModelAdapter<CrashOptions>
    {
        public override IModel Load(CrashOptions options, ModelLoadContext context) => throw new IndexOutOfRangeException("Index was outside the bounds of the array.");
    }

    /// <summary>A data source that fails the same way when opened.</summary>
    public sealed class CrashingData : DataAdapter<CrashOptions>
    {
        public override IDataSource Open(CrashOptions options, DataOpenContext context) => throw new InvalidCastException("Unable to cast object of type 'A' to type 'B'.");
    }

    sealed class Registrar : IPluginRegistrar
    {
        public void Register(IServiceCollection services)
        {
            services.AddLoupeModel<CrashingModel>("fault-model", "crashes on load");
            services.AddLoupeData<CrashingData>("fault-data", "crashes on open");
            services.AddLoupeAnalysis<ThrowingCheck>("fault-check", "throws in its checks");
            services.AddLoupeAnalysis<Hang>("fault-hang", "hangs");
            services.AddLoupeAnalysis<Oom>("fault-oom", "runs out of memory");
            services.AddLoupeAnalysis<BackwardFault>("fault-backward", "fails in its backward pass");
        }
    }

    const string Around = """
          - id: before
            uses: saliency
        {0}
          - id: after
            uses: grad-cam
            with: {{ layer: relu3 }}
        """;

    static string Pipeline(string middle) => TestEnv.FixturePipeline(string.Format(Around, middle));

    static RunResult Run(string pipeline, CancellationToken ct = default, IRunObserver? observer = null, params string[] overrides) =>
        PipelineRunner.Run(new RunRequest(pipeline)
        {
            Overrides = overrides,
            PluginDirectories = [TestEnv.PluginDirectory], Registrars = [new Registrar()], Observer = observer,
            OutDir = Path.Combine(Path.GetDirectoryName(pipeline)!, "out"),
        }, ct);

    /// <summary>The manifest on disk: valid JSON, with these step statuses.</summary>
    static JsonNode AssertManifest(string outDir, params string[] statuses)
    {
        var m = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "manifest.json")))!;
        Assert.Equal(statuses, m["steps"]!.AsArray().Select(s => s!["status"]!.GetValue<string>()));
        Assert.Empty(Directory.GetFiles(outDir, "*.tmp", SearchOption.AllDirectories));
        return m;
    }

    static void AssertOutputs(string outDir, params string[] steps)
    {
        var m = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "manifest.json")))!;
        foreach (var step in steps)
        {
            var listed = m["artifacts"]!.AsArray().Where(a => a!["step"]!.GetValue<string>() == step).ToList();
            Assert.NotEmpty(listed);
            Assert.All(listed, a => Assert.True(File.Exists(Path.Combine(outDir, a!["path"]!.GetValue<string>())), a!["path"]!.ToString()));
        }
    }

    /// <summary>A step's checks that throw are one validation error naming the step and the exception; the other steps'
    /// errors are reported with it, nothing runs and the exit code is non-zero.</summary>
    [Fact]
    public void AThrowingCheckIsAValidationErrorBesideTheOthers()
    {
        var r = Run(TestEnv.FixturePipeline("""
              - id: broken
                uses: fault-check
              - id: cam
                uses: grad-cam
                with: { layer: no_such_layer }
            """));
        Assert.NotEqual(0, r.ExitCode);
        var messages = r.Errors.Select(e => e.Message).ToList();
        Assert.Contains(messages, m => m == "step 'broken' (fault-check): a first complaint");
        Assert.Contains(messages, m => m == "step 'broken' (fault-check): its checks failed: InvalidOperationException: Sequence contains no elements");
        Assert.Contains(messages, m => m.Contains("no_such_layer"));
    }

    /// <summary>A model or data adapter that throws something other than a LoupeException on a stranger's file (a
    /// parser's bug) gives an error at the component's line naming it and the exception, exit code 2 — not a crash.</summary>
    [Fact]
    public void ACrashingModelOrDataAdapterIsAnErrorOfItsComponent()
    {
        var dir = TestEnv.TempDir();
        var model = Run(TestEnv.Pipeline("""
            version: 1
            model: { uses: fault-model, with: { path: hostile.bin } }
            steps:
              - { id: s, uses: saliency }
            """, dir));
        Assert.Equal(2, model.ExitCode);
        var error = Assert.Single(model.Errors);
        Assert.Equal("model 'fault-model': IndexOutOfRangeException: Index was outside the bounds of the array.", error.Message);
        Assert.Equal(2, error.Line);
        var data = Run(TestEnv.Pipeline($$"""
            version: 1
            model: { uses: torchvision, with: { architecture: fashion-cnn, weights: {{TestEnv.Yaml(TestEnv.Fixture("fashion_cnn_seed0.pt"))}} } }
            data: { uses: fault-data, with: { path: hostile.bin } }
            steps:
              - { id: s, uses: saliency }
            """, TestEnv.TempDir()));
        Assert.Equal(2, data.ExitCode);
        Assert.Contains(data.Errors, e => e.Message == "data 'fault-data': InvalidCastException: Unable to cast object of type 'A' to type 'B'.");
    }

    [Fact]
    public void AHangingStepTimesOutAndTheRunMovesOn()
    {
        var sw = Stopwatch.StartNew();
        var r = Run(Pipeline("""
              - id: hang
                uses: fault-hang
                timeout: 500ms
            """));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60));
        Assert.Equal(1, r.ExitCode);
        var m = AssertManifest(r.OutDir!, "succeeded", "timeout", "succeeded");
        var hang = m["steps"]![1]!;
        Assert.Equal(500, hang["timeoutMs"]!.GetValue<double>());
        Assert.Contains("timed out", hang["error"]!.GetValue<string>());
        Assert.Equal(0, hang["liveTensorDelta"]!.GetValue<long>());
        Assert.Equal("failed", m["status"]!.GetValue<string>());
        AssertOutputs(r.OutDir!, "before", "after");
    }

    [Fact]
    public void AStepThatIgnoresCancellationIsAbandonedAndLaterStepsGetAFreshModel()
    {
        Release.Reset(); WroteAfterAbandon.Reset();
        try
        {
            var r = Run(Pipeline("""
                  - id: hang
                    uses: fault-hang
                    with: { cooperative: false }
                """), overrides: "settings.step_timeout=300ms");
            Assert.Equal(1, r.ExitCode);
            var m = AssertManifest(r.OutDir!, "succeeded", "timeout", "succeeded");
            Assert.Contains("abandoned", m["steps"]![1]!["error"]!.GetValue<string>());
            Assert.Null(m["steps"]![1]!["liveTensorDelta"]);
            AssertOutputs(r.OutDir!, "before", "after");
            // The abandoned thread wakes up later: what it writes is refused and never listed.
            Release.Set();
            Assert.True(WroteAfterAbandon.Wait(TimeSpan.FromSeconds(30)));
            Assert.False(File.Exists(Path.Combine(r.OutDir!, "hang", "late.json")));
        }
        finally { Release.Set(); }
    }

    [Fact]
    public void AStepTimeoutOverridesThePipelineDefaultAndBadDurationsAreErrors()
    {
        var spec = PipelineParser.Parse(Pipeline("""
              - id: hang
                uses: fault-hang
                timeout: none
            """), ["settings.step_timeout=2m"]);
        Assert.Equal(TimeSpan.FromMinutes(2), spec.StepTimeout);
        Assert.Equal(TimeSpan.Zero, spec.Steps[1].Timeout);
        Assert.Null(spec.Steps[0].Timeout);
        var e = Assert.Throws<PipelineException>(() => PipelineParser.Parse(Pipeline("""
              - id: hang
                uses: fault-hang
                timeout: soon
            """)));
        Assert.Contains("'steps.hang.timeout' must be a duration such as 30s", Assert.Single(e.Errors).Message);
        Assert.True(Assert.Single(e.Errors).Line > 0);
    }

    [Theory]
    [InlineData("managed")]
    [InlineData("native")]
    public void OutOfMemoryFailsOnlyThatStep(string kind)
    {
        var r = Run(Pipeline($"""
              - id: oom
                uses: fault-oom
                with: {"{"} kind: {kind} {"}"}
            """));
        Assert.Equal(1, r.ExitCode);
        var m = AssertManifest(r.OutDir!, "succeeded", "failed", "succeeded");
        var oom = m["steps"]![1]!;
        Assert.Equal("out-of-memory", oom["fault"]!.GetValue<string>());
        Assert.StartsWith("out of memory: ", oom["error"]!.GetValue<string>());
        AssertOutputs(r.OutDir!, "before", "after");
    }

    /// <summary>An exception inside a backward callback used to end the process (libtorch's engine cannot unwind it):
    /// now that step fails with the callback's error, between its batches, and the steps around it keep their outputs.</summary>
    [Fact]
    public void ABackwardPassThatFailsFailsOnlyThatStep()
    {
        var r = Run(Pipeline("""
              - id: broken
                uses: fault-backward
            """));
        Assert.Equal(1, r.ExitCode);
        var m = AssertManifest(r.OutDir!, "succeeded", "failed", "succeeded");
        var broken = m["steps"]![1]!;
        Assert.Contains("the backward pass of FaultThrowingBackward failed: no rule for this layer", broken["error"]!.GetValue<string>());
        Assert.Equal(0, broken["liveTensorDelta"]!.GetValue<long>());
        AssertOutputs(r.OutDir!, "before", "after");
    }

    /// <summary>A real ENOSPC from the kernel: writes are redirected to /dev/full once the disk "fills up" (from the
    /// first output of step 'after'). When <paramref name="manifestFits"/>, only step outputs fail (a nearly full disk:
    /// the small manifest still fits); otherwise every later write fails, the manifest too.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ADiskFullOutputFolderStopsTheRunAndKeepsWhatFinished(bool manifestFits)
    {
        var pipeline = Pipeline("""
              - id: middle
                uses: occlusion
                with: { window: 14, stride: 14 }
            """);
        bool full = false;
        AtomicFile.Redirect.Value = path =>
        {
            var inStep = path.Contains($"{Path.DirectorySeparatorChar}middle{Path.DirectorySeparatorChar}");
            full |= inStep;
            return full && (inStep || !manifestFits) ? new FileStream("/dev/full", FileMode.Open, FileAccess.Write) : null;
        };
        RunResult r;
        try { r = Run(pipeline); }
        finally { AtomicFile.Redirect.Value = null; }
        Assert.Equal(1, r.ExitCode);
        var inMemory = r.Manifest!["steps"]!.AsArray();
        Assert.Equal(["succeeded", "failed", "not run"], inMemory.Select(s => s!["status"]!.GetValue<string>()));
        Assert.Equal("disk-full", inMemory[1]!["fault"]!.GetValue<string>());
        Assert.Contains("No space left on device", inMemory[1]!["error"]!.GetValue<string>());
        if (manifestFits)
        {
            AssertManifest(r.OutDir!, "succeeded", "failed", "not run");
            Assert.Empty(r.Errors);
        }
        else
        {
            // The disk-full manifest could not be written: the copy on disk is the last one that fit (valid JSON), the one
            // written at the start (finished steps go to the journal, not to a rewritten manifest: issue 26), and the
            // journal beside it records the step that finished.
            AssertManifest(r.OutDir!, "pending", "pending", "pending");
            var journal = File.ReadAllLines(Path.Combine(r.OutDir!, OutputFolder.JournalName)).Select(l => System.Text.Json.Nodes.JsonNode.Parse(l)!).ToList();
            Assert.Equal(["before/succeeded", "middle/failed"], journal.Select(j => $"{j["step"]!["id"]}/{j["step"]!["status"]}"));
            var kept = journal[0]["artifacts"]!.AsArray();
            Assert.NotEmpty(kept);
            Assert.All(kept, a => Assert.True(File.Exists(Path.Combine(r.OutDir!, (string)a!["path"]!))));
            Assert.Contains("manifest.json could not be updated", Assert.Single(r.Errors).Message);
        }
        if (manifestFits) AssertOutputs(r.OutDir!, "before");
        Assert.False(Directory.Exists(Path.Combine(r.OutDir!, "after")));
    }

    /// <summary>Makes a folder read-only for this process: chmod for a normal user; root ignores modes, so the
    /// immutable attribute (chattr +i) is used instead.</summary>
    static void ReadOnly(string dir, bool on)
    {
        if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException("folders are made read-only with Unix modes or chattr");
        if (Environment.UserName != "root") { File.SetUnixFileMode(dir, on ? UnixFileMode.UserRead | UnixFileMode.UserExecute : UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute); return; }
        using var p = Process.Start(new ProcessStartInfo("chattr", [on ? "+i" : "-i", dir]) { RedirectStandardError = true })!;
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, "chattr failed: " + p.StandardError.ReadToEnd());
    }

    [Fact]
    public void AReadOnlyOutputFolderIsRefusedBeforeAnyStepRuns()
    {
        var pipeline = Pipeline("");
        var ro = Path.Combine(Path.GetDirectoryName(pipeline)!, "readonly");
        Directory.CreateDirectory(ro);
        ReadOnly(ro, true);
        try
        {
            var started = 0;
            var observer = new Observer(() => started++);
            foreach (var outDir in new[] { ro, Path.Combine(ro, "run") })
            {
                var r = PipelineRunner.Run(new RunRequest(pipeline) { PluginDirectories = [TestEnv.PluginDirectory], OutDir = outDir, Observer = observer });
                Assert.Equal(2, r.ExitCode);
                var e = Assert.Single(r.Errors).Message;
                Assert.True(e.Contains("is not writable") || e.Contains("cannot create the output folder"), e);
                Assert.Contains(ro, e);
                Assert.Empty(Directory.EnumerateFileSystemEntries(ro));
            }
            Assert.Equal(0, started);
        }
        finally { ReadOnly(ro, false); }
    }

    sealed class Observer(Action started) : IRunObserver
    {
        public void StepStarted(string stepId, string uses, int index, int count) => started();
    }

    sealed class CancelOnStart(string stepId, CancellationTokenSource cts) : IRunObserver
    {
        public void StepStarted(string id, string uses, int index, int count) { if (id == stepId) cts.CancelAfter(300); }
    }

    [Fact]
    public void CancellingAStepThatIgnoresItAbandonsItAndSkipsTheRest()
    {
        Release.Reset();
        try
        {
            using var cts = new CancellationTokenSource();
            var r = Run(Pipeline("""
                  - id: hang
                    uses: fault-hang
                    with: { cooperative: false }
                """), cts.Token, new CancelOnStart("hang", cts));
            Assert.Equal(PipelineRunner.ExitCancelled, r.ExitCode);
            var m = AssertManifest(r.OutDir!, "succeeded", "cancelled", "not run");
            Assert.Equal("cancelled", m["status"]!.GetValue<string>());
            Assert.Contains("abandoned", m["steps"]![1]!["error"]!.GetValue<string>());
            AssertOutputs(r.OutDir!, "before");
        }
        finally { Release.Set(); }
    }

    /// <summary>Ctrl+C on the real CLI: SIGINT while a long step runs.</summary>
    [Fact]
    public async Task CtrlCMidStepLeavesAManifestThatSaysWhatFinished()
    {
        var pipeline = TestEnv.FixturePipeline("""
              - id: first
                uses: saliency
              - id: slow
                uses: activation-max
                with: { objective: 'class:0', steps: 1000000 }
              - id: last
                uses: grad-cam
                with: { layer: relu3 }
            """);
        var outDir = Path.Combine(Path.GetDirectoryName(pipeline)!, "out");
        var signal = InterruptSignal();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { TestEnv.CliDll, "run", pipeline, "--out", outDir }) psi.ArgumentList.Add(a);
        psi.Environment["NO_COLOR"] = "1";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = new System.Text.StringBuilder();
        var slowStarted = new ManualResetEventSlim();
        p.ErrorDataReceived += (_, e) => { lock (stderr) stderr.AppendLine(e.Data); if (e.Data?.Contains("[2/3] slow") == true) slowStarted.Set(); };
        p.BeginErrorReadLine();
        try
        {
            Assert.True(slowStarted.Wait(TimeSpan.FromSeconds(120)), "the slow step never started:\n" + stderr);
            Thread.Sleep(500); // mid-step
            using (var kill = Process.Start("kill", ["-" + signal, p.Id.ToString()])!) kill.WaitForExit();
            Assert.True(p.WaitForExit(60_000), $"loupe did not stop after SIG{signal}:\n{stderr}");
        }
        finally { if (!p.HasExited) p.Kill(true); }
        p.WaitForExit();
        var stdoutText = await stdout;
        Assert.True(p.ExitCode == PipelineRunner.ExitCancelled, $"exit {p.ExitCode}\n{stdoutText}\n{stderr}");
        var m = AssertManifest(outDir, "succeeded", "cancelled", "not run");
        Assert.Equal("cancelled", m["status"]!.GetValue<string>());
        Assert.NotNull(m["finishedAt"]);
        AssertOutputs(outDir, "first");
        Assert.Contains("SIG" + signal, stderr.ToString());
    }

    /// <summary>SIGINT when this process can pass it on; SIGTERM (the same handler in the CLI) when SIGINT is ignored
    /// here: a child inherits an ignored SIGINT (a shell starts background jobs that way) and .NET, like any Unix
    /// program, then never sees it. That made this test fail whenever the test run itself was started with <c>&amp;</c>.</summary>
    static string InterruptSignal()
    {
        var ignored = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:"));
        return ignored is not null && (Convert.ToUInt64(ignored["SigIgn:".Length..].Trim(), 16) & 0x2) != 0 ? "TERM" : "INT";
    }
}
