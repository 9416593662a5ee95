using Loupe.Core;
using Loupe.Testing;

namespace Loupe.Concepts.Tests;

/// <summary>In-suite version of the 60,000-image soak (tools/Loupe.Soak --concepts): dissection, concept-discovery and
/// tcav over 2,000 inputs (the 60 planted images cycled), with the host's per-input predictions. Every batch handed out records the live tensors and the
/// managed heap after a full collection; within every complete dataset pass neither may grow from the first quarter of
/// the pass to the last, and after the run the live tensors are back at their count before it.</summary>
public class MemoryTests
{
    [Fact]
    public void LiveTensorsAndManagedHeapStayFlatOver2000Inputs()
    {
        const int count = 2000, batch = 50;
        var path = Env.PlantedPipeline($"""
              - {"{"} id: dis, uses: dissection, with: {"{"} layer: relu2, masks: {Env.Planted}/masks, quantile: 0.005 {"}"} {"}"}
              - {"{"} id: cd, uses: concept-discovery, with: {"{"} layer: relu2, concepts: 3, iterations: 20, max_rows: 2000, heatmaps: 2 {"}"} {"}"}
              - {"{"} id: tcav, uses: tcav, with: {"{"} layer: pool2, concepts: {Env.Planted}/concepts, random: {Env.Planted}/random {"}"} {"}"}
            """, batchSize: batch);
        var text = File.ReadAllText(path);
        int start = text.IndexOf("data:", StringComparison.Ordinal), end = text.IndexOf("settings:", StringComparison.Ordinal);
        string P(string f) => Path.Combine(Env.Planted, "data", f).Replace("\\", "/");
        // The host's per-input predictions (settings.top_k, on by default) are streamed to predictions.jsonl: their pass
        // must keep the managed heap flat too (held in the manifest they took about 1.8 KB each, 3.6 MB here).
        File.WriteAllText(path, text[..start] + $"data:\n  uses: repeated-idx\n  with: {{ images: {P("images-idx3-ubyte.gz")}, labels: {P("labels-idx1-ubyte.gz")}, count: {count}, tag: memory, managed: true }}\n"
            + text[end..]);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long before = Loupe.Abstractions.Toolkit.TensorAccounting.Live;
        var r = PipelineRunner.Run(new RunRequest(path)
        {
            OutDir = Path.Combine(Path.GetDirectoryName(path)!, "out"),
            PluginDirectories = [Env.BuiltInPlugins],
            Registrars = [new RepeatedIdx.Registrar()],
        });
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?["steps"]?.ToJsonString());
        Env.Succeeded(r, "dis", "cd", "tcav");
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Assert.Equal(before, Loupe.Abstractions.Toolkit.TensorAccounting.Live);

        var passes = RepeatedIdx.Samples["memory"].GroupBy(s => s.Read).Select(g => g.ToList()).Where(g => g.Count == count / batch).ToList();
        // dissection's threshold pass (shared with concept-discovery's sample), its IoU pass, concept-discovery's and
        // tcav's gradient passes, the host's predictions (units.png's partial read is not complete).
        Assert.Equal(5, passes.Count);
        Assert.Equal(count, (long)r.Manifest!["predictions"]!["count"]!);
        Assert.Equal(count, File.ReadLines(Path.Combine(r.OutDir!, Predictions.FileName)).Count());
        string all = string.Join("; ", passes.Select(p => $"pass {p[0].Read}: " + string.Join(" ", p.Where((_, i) => i % 4 == 0).Select(s => $"{s.Managed / 1048576.0:F1}/{s.LiveTensors}"))));
        foreach (var pass in passes)
        {
            int q = pass.Count / 4;
            var first = pass.Skip(1).Take(q).ToList();   // the first batch is before any state exists
            var last = pass.Skip(pass.Count - q).ToList();
            Assert.True(last.Max(s => s.LiveTensors) <= first.Max(s => s.LiveTensors),
                $"pass {pass[0].Read}: live tensors {first.Max(s => s.LiveTensors)} in the first quarter, {last.Max(s => s.LiveTensors)} in the last. {all}");
            double m0 = RepeatedIdx.Median(first.Select(s => s.Managed)), m1 = RepeatedIdx.Median(last.Select(s => s.Managed));
            Assert.True(m1 <= 1.05 * m0 + (1 << 19), $"pass {pass[0].Read}: managed heap median {m0 / 1048576:F2} MiB in the first quarter, {m1 / 1048576:F2} MiB in the last. Managed MiB/live tensors every 4th batch: {all}");
            if (pass == passes[^1])   // the predictions pass: the records go to disk, none stay behind
                Assert.True(m1 - m0 < 1 << 20, $"predictions pass: managed heap median {m0 / 1048576:F2} MiB in the first quarter, {m1 / 1048576:F2} MiB in the last (records held in memory?). {all}");
        }
    }
}
