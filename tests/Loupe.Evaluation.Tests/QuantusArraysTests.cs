using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Evaluation.Tests;

/// <summary>Quantus's four arrays as four .npy files: x_batch (the npy source's <c>path</c>), y_batch (<c>labels</c>),
/// s_batch (<c>masks</c>: the inputs' object masks, row i for input i) and a_batch (given-maps' <c>file</c>: the maps,
/// row i for input i). Every localisation metric scores them exactly as the same masks and maps given one file per
/// input id, across batch boundaries (batches of 3 over 4 inputs: rows must follow the ids, not the batch).</summary>
public class QuantusArraysTests
{
    const int N = 4, H = 28, W = 28;

    /// <summary>Input i's mask: a box whose place depends on i (a row read for the wrong input scores differently).</summary>
    static float[] Mask(int i)
    {
        var m = new float[H * W];
        for (int y = 3 + 4 * i; y < 11 + 4 * i; y++) for (int x = 2 + 3 * i; x < 14 + 3 * i; x++) m[y * W + x] = 1;
        return m;
    }

    /// <summary>Input i's map: a smooth pattern peaking elsewhere for each input.</summary>
    static float[] Map(int i) =>
        [.. Enumerable.Range(0, H * W).Select(p => MathF.Sin(0.3f * (p / W) + i) * MathF.Cos(0.2f * (p % W) - 0.7f * i) + 0.05f * i)];

    static Loupe.Core.RunResult Run(string data, string maps, string masksOption) => Env.Run($$"""
        version: 1
        model: { uses: region-test }
        data: { uses: npy, with: { path: {{Env.QualityFixture("inputs.npy")}}{{data}} } }
        settings: { batch_size: 3 }
        steps:
          - { id: m, uses: given-maps, with: { {{maps}} } }
          - { id: al, uses: attribution-localisation, with: { of: m{{masksOption}} } }
          - { id: tk, uses: top-k-intersection, with: { of: m, k: 50{{masksOption}} } }
          - { id: rra, uses: relevance-rank-accuracy, with: { of: m{{masksOption}} } }
          - { id: rma, uses: relevance-mass-accuracy, with: { of: m{{masksOption}} } }
          - { id: auc, uses: auc, with: { of: m{{masksOption}} } }
          - { id: pg, uses: pointing-game, with: { of: m{{masksOption}} } }
        """);

    [Fact]
    public void MasksAndMapsAsOneArrayEachScoreAsOneFilePerInput()
    {
        var dir = Env.TempDir();
        string perId = Path.Combine(dir, "per-id"), masks = Path.Combine(dir, "masks");
        Directory.CreateDirectory(perId);
        Directory.CreateDirectory(masks);
        for (int i = 0; i < N; i++)
        {
            File.WriteAllBytes(Path.Combine(perId, $"{i:D5}.npy"), Npy.Encode(new NdArray(Map(i), [H, W])));
            File.WriteAllBytes(Path.Combine(masks, $"{i:D5}.npy"), Npy.Encode(new NdArray(Mask(i), [H, W])));
        }
        string aBatch = Path.Combine(dir, "a_batch.npy"), sBatch = Path.Combine(dir, "s_batch.npy");
        File.WriteAllBytes(aBatch, Npy.Encode(new NdArray([.. Enumerable.Range(0, N).SelectMany(Map)], [N, 1, H, W])));
        File.WriteAllBytes(sBatch, Npy.Encode(new NdArray([.. Enumerable.Range(0, N).SelectMany(Mask)], [N, H, W])));

        var files = Run("", $"folder: {Env.Yaml(perId)}", $", masks: {Env.Yaml(masks)}");
        var arrays = Run($", masks: {Env.Yaml(sBatch)}", $"file: {Env.Yaml(aBatch)}", "");
        Assert.True(files.ExitCode == 0, Env.Dump(files));
        Assert.True(arrays.ExitCode == 0, Env.Dump(arrays));
        foreach (var (step, key) in new[] { ("al", "attribution_localisation"), ("tk", "top_k_intersection"), ("rra", "relevance_rank_accuracy"),
                     ("rma", "relevance_mass_accuracy"), ("auc", "auc") })
        {
            var expected = Env.InputValues(files, step, key);
            Assert.Equal(expected, Env.InputValues(arrays, step, key));
            Assert.True(expected.Distinct().Count() > 1, $"{step}: every input scores the same, so misaligned rows would pass");
        }
        Assert.Equal(Env.Metric(files, "pg", "hit_rate"), Env.Metric(arrays, "pg", "hit_rate"));

        // Shards read their own rows of both files: two shards merged give the unsharded values.
        var pipeline = Directory.GetFiles(Path.GetDirectoryName(arrays.OutDir!)!, "pipeline.yaml").Single();
        var shards = Enumerable.Range(0, 2).Select(i => Loupe.Core.PipelineRunner.Run(new Loupe.Core.RunRequest(pipeline)
        {
            OutDir = Path.Combine(dir, $"shard{i}"), PluginDirectories = [Env.BuiltInPlugins], Registrars = [new TestComponents()], Shard = new Loupe.Core.ShardRequest(i, 2),
        })).ToList();
        Assert.All(shards, r => Assert.True(r.ExitCode == 0, Env.Dump(r)));
        var merged = Loupe.Core.ShardMerger.Merge(new Loupe.Core.MergeRequest([.. shards.Select(r => r.OutDir!)], Path.Combine(dir, "merged"))
            { PluginDirectories = [Env.BuiltInPlugins], Registrars = [new TestComponents()] });
        Assert.True(merged.ExitCode == 0, Env.Dump(merged));
        foreach (var (step, key) in new[] { ("al", "attribution_localisation"), ("rma", "relevance_mass_accuracy"), ("auc", "auc") })
            Assert.Equal(Env.InputValues(arrays, step, key), Env.InputValues(merged, step, key));
    }

    [Fact]
    public void ArraysThatDoNotFitAreNamedBeforeAnythingRuns()
    {
        var dir = Env.TempDir();
        string Write(string name, float[] data, long[] shape)
        {
            var path = Path.Combine(dir, name);
            File.WriteAllBytes(path, Npy.Encode(new NdArray(data, shape)));
            return path;
        }
        var maps = Write("a.npy", new float[N * H * W], [N, H, W]);
        var three = Write("three.npy", new float[3 * H * W], [3, H, W]);
        var small = Write("small.npy", new float[N * 14 * 14], [N, 14, 14]);
        var flat = Write("flat.npy", new float[N * H * W], [N, H * W]);

        var masks3 = Run($", masks: {Env.Yaml(three)}", $"file: {Env.Yaml(maps)}", "");
        Assert.Contains(masks3.Errors, e => e.Message.Contains("three.npy: 3 masks for 4 inputs"));
        var masksSmall = Run($", masks: {Env.Yaml(small)}", $"file: {Env.Yaml(maps)}", "");
        Assert.Contains(masksSmall.Errors, e => e.Message.Contains("small.npy: masks of shape (4,14,14); expected N×28×28 or N×1×28×28"));

        var both = Run("", $"folder: {Env.Yaml(dir)}, file: {Env.Yaml(maps)}", "");
        Assert.Contains(both.Errors, e => e.Message.Contains("give 'folder' (one map per file) or 'file' (every map, a row each), not both"));
        var neither = Run("", "", "");
        Assert.Contains(neither.Errors, e => e.Message.EndsWith("give 'folder' (one map per file) or 'file' (every map, a row each)"));
        var fewer = Run("", $"file: {Env.Yaml(three)}", "");
        Assert.Contains(fewer.Errors, e => e.Message.Contains("three.npy holds 3 maps for 4 inputs"));
        var flatMaps = Run("", $"file: {Env.Yaml(flat)}", "");
        Assert.Contains(flatMaps.Errors, e => e.Message.Contains("flat.npy holds (4×784); expected one map per input"));
        Assert.All(new[] { masks3, masksSmall, both, neither, fewer, flatMaps }, r => Assert.Equal(2, r.ExitCode));
    }
}
