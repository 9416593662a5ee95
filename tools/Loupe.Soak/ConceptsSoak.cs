using System.Diagnostics;
using System.Globalization;
using Loupe.Abstractions.Toolkit;
using Loupe.Core;
using Loupe.Testing;

/// <summary>The 60,000-image soak of the concept techniques (issue 21): dissection, concept-discovery and tcav in one
/// run over <c>count</c> inputs (the 60 planted images of samples/concepts cycled by the <c>repeated-idx</c> source,
/// tests/Shared/RepeatedIdx.cs). RSS is recorded as every batch is handed out (per dataset pass) and every 250 ms (for
/// the peak). Passes when, in every complete dataset pass, the median RSS of the last quarter of the pass is at most
/// 1.1× that of its first quarter, the peak stays under 1.5× the largest first-quarter median of a pass, and the live
/// tensors are back at their count before the run. The whole run's first and last quarters are printed but not judged:
/// they are different passes with different working sets (the first is forward-only, the last two run backward
/// passes), so they compare steps, not growth; until 2026-12-03 they were judged, and the peak against the first pass. The host's per-input
/// predictions (settings.top_k; streamed to predictions.jsonl, so they do not grow the process) are off unless
/// <c>--top-k</c> is given, as in the recorded runs. <c>--steps a,b</c> keeps only those of the three steps.</summary>
static class ConceptsSoak
{
    public static int Run(string root, long count, int batch, int topK, string? csv, IReadOnlyCollection<string>? steps = null)
    {
        string Y(string p) => Path.Combine(root, p).Replace("\\", "/");
        var work = Path.Combine(Path.GetTempPath(), $"loupe-soak-concepts-{Guid.NewGuid():N}");
        Directory.CreateDirectory(work);
        var pipeline = Path.Combine(work, "soak.yaml");
        File.WriteAllText(pipeline, $$"""
            version: 1
            name: concepts-soak
            model:
              uses: torchvision
              with: { architecture: fashion-cnn, num_classes: 3, weights: {{Y("samples/concepts/planted-cnn.safetensors")}} }
              labels: {{Y("samples/concepts/labels.txt")}}
            data:
              uses: repeated-idx
              with: { images: {{Y("samples/concepts/data/images-idx3-ubyte.gz")}}, labels: {{Y("samples/concepts/data/labels-idx1-ubyte.gz")}}, count: {{count}}, tag: soak }
            settings: { batch_size: {{batch}}, top_k: {{topK}} }
            steps:
              - { id: dissection, uses: dissection, with: { layer: relu2, masks: {{Y("samples/concepts/masks")}}, quantile: 0.005 } }
              - { id: concept-discovery, uses: concept-discovery, with: { layer: relu2, concepts: 4, iterations: 100, heatmaps: 2 } }
              - { id: tcav, uses: tcav, with: { layer: pool2, concepts: {{Y("samples/concepts/concepts")}}, random: {{Y("samples/concepts/random")}} } }
            """);
        if (steps is not null)
        {
            // --steps: only these of the three steps (to find which pass grows); the other lines of the pipeline stay.
            var known = new[] { "dissection", "concept-discovery", "tcav" };
            if (steps.FirstOrDefault(s => !known.Contains(s)) is { } unknown) { Console.Error.WriteLine($"--steps: unknown step '{unknown}' (one of {string.Join(", ", known)})"); return 2; }
            File.WriteAllLines(pipeline, File.ReadAllLines(pipeline).Where(l => !known.Any(k => l.Contains($"{{ id: {k},")) || steps.Any(s => l.Contains($"{{ id: {s},"))));
        }
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long tensorsBefore = TensorAccounting.Live;
        long peak = ProcessMemory.Rss();
        using var stop = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                peak = Math.Max(peak, ProcessMemory.Rss());
                try { await Task.Delay(250, stop.Token); } catch (TaskCanceledException) { }
            }
        });
        var sw = Stopwatch.StartNew();
        Console.WriteLine($"concepts soak: dissection + concept-discovery + tcav over {count} inputs, batch {batch}, top_k {topK}; RSS before {ProcessMemory.Rss() / 1048576.0:F1} MiB");
        RunResult result;
        try
        {
            result = PipelineRunner.Run(new RunRequest(pipeline) { OutDir = Path.Combine(work, "out"), Registrars = [new RepeatedIdx.Registrar()] });
        }
        finally
        {
            stop.Cancel();
            sampler.Wait();
        }
        sw.Stop();
        try { Directory.Delete(work, true); } catch (IOException) { }
        if (result.ExitCode != 0)
        {
            Console.Error.WriteLine($"run failed (exit {result.ExitCode}): {string.Join("; ", result.Errors)} {result.Manifest?["steps"]?.ToJsonString()}");
            return 1;
        }
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long tensorsAfter = TensorAccounting.Live;
        var samples = RepeatedIdx.Samples["soak"];
        if (csv is not null)
            File.WriteAllLines(csv, ["read,row,rss_bytes,live_tensors,gc_committed_bytes", .. samples.Select(s => FormattableString.Invariant($"{s.Read},{s.Row},{s.Rss},{s.LiveTensors},{s.GcCommitted}"))]);
        int perPass = (int)((count + batch - 1) / batch);
        bool ok = true;
        double? reference = null;
        static (double First, double Last) Quarters(IReadOnlyList<MemorySample> s)
        {
            int q = Math.Max(1, s.Count / 4);
            return (RepeatedIdx.Median(s.Skip(1).Take(q).Select(x => x.Rss)), RepeatedIdx.Median(s.Skip(s.Count - q).Select(x => x.Rss)));
        }
        foreach (var pass in samples.GroupBy(s => s.Read).Select(g => g.ToList()))
        {
            if (pass.Count < perPass) { Console.WriteLine($"pass {pass[0].Read}: partial read of {pass.Count} batch(es) (figure tiles), not judged"); continue; }
            var (first, last) = Quarters(pass);
            reference = Math.Max(reference ?? 0, first);
            bool flat = last <= 1.1 * first;
            ok &= flat;
            Console.WriteLine(FormattableString.Invariant($"pass {pass[0].Read}: {count} inputs, RSS median first quarter {first / 1048576:F1} MiB, last quarter {last / 1048576:F1} MiB ({last / first - 1:+0.0%;-0.0%}) {(flat ? "flat" : "GROWS")}; .NET GC committed {pass[1].GcCommitted / 1048576.0:F1} → {pass[^1].GcCommitted / 1048576.0:F1} MiB"));
        }
        var (f, l) = Quarters(samples);
        bool peakOk = reference is { } r0 && peak <= 1.5 * r0, tensorsOk = tensorsAfter == tensorsBefore;
        Console.WriteLine(FormattableString.Invariant($"whole run ({samples.Count} batches): RSS median first quarter {f / 1048576:F1} MiB, last quarter {l / 1048576:F1} MiB ({l / f - 1:+0.0%;-0.0%}; different passes, not judged); peak {peak / 1048576.0:F1} MiB ({(reference is { } r1 ? peak / r1 : double.NaN):F2}× the largest first-quarter median of a pass)"));
        Console.WriteLine($"live tensors {tensorsBefore} before, {tensorsAfter} after; {sw.Elapsed.TotalSeconds:F0} s");
        ok &= peakOk && tensorsOk;
        Console.WriteLine(ok ? "PASS: RSS flat in every pass, peak bounded, live tensors at baseline" : "FAIL");
        return ok ? 0 : 1;
    }
}
