using System.Diagnostics;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Core;

namespace Loupe.Tests;

/// <summary>Issue 26: what an attacker can do with files and folders from elsewhere (model folders, data, shard and
/// run folders) — links out of a model's folder, FIFOs, paths in manifests, control characters — and the data-loss
/// cases around the output folder. Hostile inputs that are plain files live in tests/corpus (CorpusTests); those that
/// need links, FIFOs or a run in progress are made here.</summary>
public class SecurityTests
{
    static readonly string Corpus = Path.Combine(TestEnv.RepoRoot, "tests", "corpus");

    static void MkFifo(string path)
    {
        using var p = Process.Start("mkfifo", [path])!;
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
    }

    static PipelineException Refused(string pipeline)
    {
        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<PipelineException>(() => PipelineRunner.Prepare(new RunRequest(pipeline) { PluginDirectories = [TestEnv.PluginDirectory] }).Dispose());
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"took {sw.Elapsed}");
        return e;
    }

    static string OnnxPipeline(string backend, string model) => TestEnv.Pipeline(
        $"version: 1\nname: sec\nmodel:\n  uses: {backend}\n  with: {{ path: {TestEnv.Yaml(model)} }}\nsteps:\n  - uses: activations\n    with: {{ layer: fc }}\n");

    [Theory, InlineData("onnx"), InlineData("onnx-runtime")]
    public void External_data_cannot_leave_the_model_folder_through_a_link_nor_block_on_a_fifo(string backend)
    {
        // Hole 1: a folder link to /etc and location 'linked/passwd' read /etc/passwd.
        var dir = TestEnv.TempDir("loupe-sec-link");
        var model = Path.Combine(dir, "model.onnx");
        File.Copy(Path.Combine(Corpus, "onnx", "external-data-via-link.onnx"), model);
        File.CreateSymbolicLink(Path.Combine(dir, "linked"), "/etc");
        var e = Refused(OnnxPipeline(backend, model));
        Assert.Contains("external data: path 'linked/passwd' points outside", e.Message);
        Assert.Contains("resolves to /etc/passwd", e.Message);

        // A FIFO as the external data file is refused before it is opened (opening it would block forever).
        var fifoDir = TestEnv.TempDir("loupe-sec-fifo");
        File.Copy(Path.Combine(Corpus, "onnx", "external-data-missing.onnx"), Path.Combine(fifoDir, "model.onnx"));
        MkFifo(Path.Combine(fifoDir, "weights-that-do-not-exist.bin"));
        Assert.Contains("is a FIFO (named pipe), not a regular file; refused", Refused(OnnxPipeline(backend, Path.Combine(fifoDir, "model.onnx"))).Message);
        // ... and so is a FIFO (or a device, through a link) given as the model itself.
        MkFifo(Path.Combine(fifoDir, "fifo.onnx"));
        Assert.Contains("is a FIFO", Refused(OnnxPipeline(backend, Path.Combine(fifoDir, "fifo.onnx"))).Message);
    }

    [Fact]
    public void RealPath_resolves_every_link_like_realpath()
    {
        var dir = SafeFile.RealPath(TestEnv.TempDir("loupe-sec-real"));
        Directory.CreateDirectory(Path.Combine(dir, "a", "b"));
        File.CreateSymbolicLink(Path.Combine(dir, "l"), Path.Combine(dir, "a", "b"));
        File.CreateSymbolicLink(Path.Combine(dir, "rel"), "a/b");
        Assert.Equal(Path.Combine(dir, "a", "b", "x"), SafeFile.RealPath(Path.Combine(dir, "l", "x")));
        Assert.Equal(Path.Combine(dir, "a"), SafeFile.RealPath(Path.Combine(dir, "rel", "..")));   // '..' after the link's target
        Assert.Equal(Path.Combine(dir, "a", "b"), SafeFile.Inside(dir, "rel", "t"));
        File.CreateSymbolicLink(Path.Combine(dir, "loop"), Path.Combine(dir, "loop"));
        Assert.Contains("too many levels of symbolic links", Assert.Throws<LoupeException>(() => SafeFile.RealPath(Path.Combine(dir, "loop"))).Message);
        Assert.Throws<LoupeException>(() => SafeFile.Inside(dir, "/etc/passwd", "t"));
        Assert.Throws<LoupeException>(() => SafeFile.Inside(dir, "a/../../x", "t"));
    }

    static string ImageFolderPipeline(string dir, string onError = "fail") => TestEnv.Pipeline($$"""
        version: 1
        name: sec
        model:
          uses: torchvision
          with: { architecture: fashion-cnn, weights: {{TestEnv.Yaml(TestEnv.Fixture("fashion_cnn_seed0.pt"))}} }
        data:
          uses: image-folder
          with: { path: {{TestEnv.Yaml(dir)}}, on_error: {{onError}} }
        steps:
          - uses: saliency
        """);

    [Fact]
    public void A_fifo_in_an_image_folder_is_refused_or_skipped_never_opened()
    {
        var dir = TestEnv.TempDir("loupe-sec-images");
        File.Copy(Path.Combine(Corpus, "images", "ok-rgb.png"), Path.Combine(dir, "a.png"));
        MkFifo(Path.Combine(dir, "b.png"));
        Assert.Contains("b.png: is a FIFO (named pipe), not a regular file; refused", Refused(ImageFolderPipeline(dir)).Message);
        var r = TestEnv.Run(ImageFolderPipeline(dir, "skip"));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        Assert.Equal(1, (long)r.Manifest!["data"]!["count"]!);
        Assert.Contains(r.Manifest["warnings"]!.AsArray(), w => ((string)w!).Contains("b.png: is a FIFO"));
    }

    [Fact]
    public void Inputs_whose_names_collide_after_sanitising_get_distinct_outputs_and_long_names_work()
    {
        // Item 13 and item 10: 'a b', 'a_b', 'a?b' all became 'a_b'; a 230-character name failed as "not writable".
        var dir = TestEnv.TempDir("loupe-sec-names");
        var names = new[] { "a b.png", "a_b.png", "a?b.png", new string('n', 230) + ".png" };
        foreach (var n in names) File.Copy(Path.Combine(Corpus, "images", "ok-rgb.png"), Path.Combine(dir, n));
        var r = TestEnv.Run(ImageFolderPipeline(dir));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        var raw = r.Manifest!["artifacts"]!.AsArray().Where(a => (string?)a!["kind"] == "raw").ToList();
        Assert.Equal(names.Order(), raw.Select(a => (string)a!["input"]!).Order());
        var paths = raw.Select(a => (string)a!["path"]!).ToList();
        Assert.Equal(4, paths.Distinct().Count());
        Assert.All(paths, p => Assert.True(File.Exists(Path.Combine(r.OutDir!, p)) && Path.GetFileName(p).Length < 255, p));
        Assert.Contains("saliency/a_b.png.saliency.npy", paths); // a name that was already safe keeps its name
    }

    [Fact]
    public void File_names_that_are_not_utf8_run_with_distinct_escaped_ids()
    {
        // Item 13: names that are not UTF-8 (made at run time with raw bytes, never committed) are listed with readdir,
        // opened by their bytes and given escaped ids ('%XX'); an escaped id that equals a real name ('img%FF.png' is
        // also a file) gets a suffix, the real name keeps its own. Each output must come from its own file: the maps
        // equal those of the same images under plain names.
        var dir = TestEnv.TempDir("loupe-sec-latin1");
        var plain = TestEnv.TempDir("loupe-sec-latin1-ref");
        var images = new (string Raw, string Id, string Source)[]
        {
            ("img\\xff.png", "img%FF~2.png", "ok-rgb.png"), ("img\\xfe.png", "img%FE.png", "ok-1bit.png"),
            ("img%FF.png", "img%FF.png", "ok-palette.png"), ("caf\\xe8.png", "caf%E8.png", "ok-baseline.jpg"),
        };
        for (int i = 0; i < images.Length; i++)
        {
            var source = Path.Combine(Corpus, "images", images[i].Source);
            using (var p = Process.Start("bash", ["-c", $"cp '{source}' '{dir}/'$'{images[i].Raw}'"])!) p.WaitForExit();
            File.Copy(source, Path.Combine(plain, $"r{i}.png"));
        }
        Assert.Equal(4, Directory.GetFiles(dir).Length);
        Assert.Equal(3, Directory.GetFiles(dir).Count(f => f.Contains('\uFFFD'))); // what .NET itself sees: undecodable names

        var r = TestEnv.Run(ImageFolderPipeline(dir));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.Equal(4, (long)r.Manifest!["data"]!["count"]!);
        var raw = r.Manifest["artifacts"]!.AsArray().Where(a => (string?)a!["kind"] == "raw").ToDictionary(a => (string)a!["input"]!, a => (string)a!["path"]!);
        Assert.Equal(images.Select(i => i.Id).Order(StringComparer.Ordinal), raw.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(4, raw.Values.Distinct().Count());
        Assert.All(raw.Values, p => Assert.DoesNotContain('\uFFFD', p));

        var reference = TestEnv.Run(ImageFolderPipeline(plain));
        Assert.True(reference.ExitCode == 0, string.Join("\n", reference.Errors));
        var refRaw = reference.Manifest!["artifacts"]!.AsArray().Where(a => (string?)a!["kind"] == "raw").ToDictionary(a => (string)a!["input"]!, a => (string)a!["path"]!);
        for (int i = 0; i < images.Length; i++)
        {
            var got = File.ReadAllBytes(Path.Combine(r.OutDir!, raw[images[i].Id]));
            var want = File.ReadAllBytes(Path.Combine(reference.OutDir!, refRaw[$"r{i}.png"]));
            Assert.True(got.AsSpan().SequenceEqual(want), $"{images[i].Id}: its map is not the map of {images[i].Source}");
        }
        // The images differ, so a mix-up would show: no two reference maps are equal.
        Assert.Equal(4, refRaw.Values.Select(p => Convert.ToHexString(File.ReadAllBytes(Path.Combine(reference.OutDir!, p)))).Distinct().Count());
    }

    [Fact]
    public void The_output_folder_is_taken_exclusively()
    {
        // Item 11: a second run with the same --out while the first holds it is refused, and nothing is written.
        var dir = Path.Combine(TestEnv.TempDir("loupe-sec-out"), "run");
        using (var held = OutputFolder.TryTake(dir)!)
        {
            Assert.Null(OutputFolder.TryTake(dir));
            var r = TestEnv.Run(TestEnv.FixturePipeline("  - uses: saliency\n"), dir);
            Assert.Equal(2, r.ExitCode);
            Assert.Contains("is in use by another run", Assert.Single(r.Errors).Message);
            Assert.Equal([OutputFolder.LockName], Directory.GetFileSystemEntries(dir).Select(Path.GetFileName));
        }
        Assert.Empty(Directory.GetFileSystemEntries(dir)); // the lock goes with its holder
        Assert.Equal(0, TestEnv.Run(TestEnv.FixturePipeline("  - uses: saliency\n"), dir).ExitCode);
        Assert.False(File.Exists(Path.Combine(dir, OutputFolder.LockName)));
    }

    sealed class OnStep(int index, Action<string> act) : IRunObserver
    {
        int _seen;
        public void StepFinished(string stepId, string status, TimeSpan duration, string? error) { if (_seen++ == index) act(stepId); }
    }

    [Fact]
    public void An_output_folder_deleted_during_the_run_fails_the_run()
    {
        // Item 12: the run ended 'succeeded' although its outputs were gone.
        var dir = Path.Combine(TestEnv.TempDir("loupe-sec-gone"), "run");
        var r = PipelineRunner.Run(new RunRequest(TestEnv.FixturePipeline("  - { id: s1, uses: saliency }\n  - { id: s2, uses: saliency }\n"))
        {
            OutDir = dir, PluginDirectories = [TestEnv.PluginDirectory], Observer = new OnStep(0, _ => Directory.Delete(dir, true)),
        });
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("failed", (string?)r.Manifest!["status"]);
        Assert.Contains("missing from", (string?)r.Manifest["error"]);
        Assert.Contains(r.Errors, e => e.Message.Contains("the folder was changed during the run"));
    }

    [Fact]
    public void Finished_steps_go_to_a_journal_not_to_a_rewritten_manifest()
    {
        // Item 14: with thousands of steps, rewriting the manifest after each one is O(n²).
        var dir = Path.Combine(TestEnv.TempDir("loupe-sec-journal"), "run");
        var steps = string.Concat(Enumerable.Range(0, 4).Select(i => $"  - {{ id: s{i}, uses: saliency }}\n"));
        (int Lines, string? FirstStatus)? seen = null;
        var r = PipelineRunner.Run(new RunRequest(TestEnv.FixturePipeline(steps))
        {
            OutDir = dir, PluginDirectories = [TestEnv.PluginDirectory],
            Observer = new OnStep(2, _ => seen = (File.ReadAllLines(Path.Combine(dir, OutputFolder.JournalName)).Length,
                (string?)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "manifest.json")))!["steps"]![0]!["status"])),
        });
        Assert.Equal(0, r.ExitCode);
        // When step 2 finished: steps 0 and 1 were journalled; the manifest on disk was the one written at the start.
        Assert.Equal((2, "pending"), seen);
        Assert.False(File.Exists(Path.Combine(dir, OutputFolder.JournalName))); // dropped once the manifest is complete
        var m = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "manifest.json")))!;
        Assert.All(m["steps"]!.AsArray(), s => Assert.Equal("succeeded", (string?)s!["status"]));
        Assert.Equal(16, m["artifacts"]!.AsArray().Count(a => (string?)a!["kind"] == "raw"));
    }

    [Fact]
    public void Paths_options_and_limits_give_clear_errors_instead_of_crashes()
    {
        var pipeline = TestEnv.FixturePipeline("  - { id: cam, uses: saliency }\n");
        // --set nested tens of thousands deep (a stack overflow), and a key path deeper than the file's limit.
        var deep = new string('[', 50000) + new string(']', 50000);
        var e = Assert.Throws<PipelineException>(() => PipelineParser.Parse(pipeline, ["steps.cam.with.x=" + deep]));
        Assert.Contains("nesting deeper than 64 levels", e.Message);
        e = Assert.Throws<PipelineException>(() => PipelineParser.Parse(pipeline, [string.Join('.', Enumerable.Repeat("k", 100)) + "=1"]));
        Assert.Contains("key nesting deeper than 64 levels", e.Message);
        // /dev/zero as the pipeline: refused by type, never read to the end.
        Assert.Contains("is a character device", Assert.Throws<PipelineException>(() => PipelineParser.Parse("/dev/zero")).Message);
        // A NUL in --out, and --out under a system folder.
        var r = TestEnv.Run(pipeline, "/tmp/a\0b");
        Assert.Contains("contains a NUL character", Assert.Single(r.Errors).Message);
        Assert.Contains("a system folder", Assert.Single(TestEnv.Run(pipeline, "/sys/loupe").Errors).Message);
        // A probe that fails (the demo CNN takes 1 channel): an error at the model, not an unhandled exception.
        var rgb = TestEnv.Pipeline(File.ReadAllText(pipeline).Replace("data:", "  input: { channels: 3, mean: [0, 0, 0], std: [1, 1, 1] }\ndata:"));
        var probe = Refused(rgb).Message;
        Assert.Contains("model 'torchvision': the model cannot run on input 1×3×28×28: Given groups=1", probe);
        Assert.DoesNotContain("frame #", probe);
    }

    [Fact]
    public void Thread_counts_far_above_the_cores_are_capped_with_a_warning()
    {
        var pipeline = TestEnv.FixturePipeline("  - uses: saliency\n");
        File.WriteAllText(pipeline, File.ReadAllText(pipeline).Replace("batch_size: 16", "batch_size: 16, threads: 100000"));
        try
        {
            using var run = PipelineRunner.Prepare(new RunRequest(pipeline) { PluginDirectories = [TestEnv.PluginDirectory] });
            Assert.Contains(run.Warnings, w => w.Contains("settings.threads = 100000 is far above"));
            Assert.Equal(4 * Environment.ProcessorCount, TorchSharp.torch.get_num_threads());
        }
        finally { TorchSharp.torch.set_num_threads(1); }
    }

    [Fact]
    public void Names_from_files_reach_the_terminal_without_control_characters()
    {
        // Item 5: an ONNX tensor name or label with ESC/BEL could retitle, clear or recolour the user's terminal.
        Assert.Equal("?]0;pwned??[2J ok\tä\n", SafeFile.Printable("\u001b]0;pwned\u0007\u001b[2J ok\tä\n"));
        Assert.Equal("a?b?c", SafeFile.Printable("a\u202eb\u0085c"));
        var dir = TestEnv.TempDir("loupe-sec-term");
        var model = Path.Combine(dir, "model.onnx");
        File.Copy(Path.Combine(Corpus, "onnx", "control-chars-in-names.onnx"), model);
        var (code, stdout, stderr) = TestEnv.Cli(dir, "validate", OnnxPipeline("onnx", model));
        Assert.Equal(2, code);
        Assert.Contains("'?]0;pwned??[2J.bin', which is missing", stderr);
        Assert.DoesNotContain(stdout + stderr, c => SafeFile.Unsafe(c));
    }
}
