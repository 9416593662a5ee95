using Loupe.Core;
using Loupe.Testing;

namespace Loupe.Concepts.Tests;

/// <summary>In-suite version of the 60,000-image soak (tools/Loupe.Soak --concepts): dissection, concept-discovery and
/// tcav over 2,000 inputs (the 60 planted images cycled). Every batch handed out records the live tensors and the
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
        // top_k: 0: the host's per-input predictions (one manifest record per input, about 1.8 KB of managed heap each)
        // are the host's output, not the techniques' working memory; they are left out of this check.
        File.WriteAllText(path, text[..start] + $"data:\n  uses: repeated-idx\n  with: {{ images: {P("images-idx3-ubyte.gz")}, labels: {P("labels-idx1-ubyte.gz")}, count: {count}, tag: memory, managed: true }}\n"
            + text[end..].Replace($"batch_size: {batch}", $"batch_size: {batch}, top_k: 0"));
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
        // tcav's gradient passes (units.png's partial read is not complete).
        Assert.Equal(4, passes.Count);
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
        }
    }
}
