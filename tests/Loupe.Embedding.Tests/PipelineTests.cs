using Loupe.Abstractions;

namespace Loupe.Embedding.Tests;

/// <summary>The techniques run through the real host (plugin loaded from its output folder, as a user would).</summary>
public class PipelineTests
{
    [Fact]
    public void AllTechniquesRunThroughTheHostFromThePluginFolder()
    {
        var path = Env.FashionPipeline("""
              - id: emb
                uses: embeddings
                with: { layer: relu3, pool: max }
              - id: nn
                uses: nearest-neighbours
                with: { layer: gap, k: 4, queries: ['00003', '7'], metric: cosine }
              - id: pca
                uses: pca
                with: { layer: flatten, components: 5 }
              - id: tsne
                uses: tsne
                with: { layer: gap, perplexity: 10, iterations: 300, map_size: 400 }
              - id: mp
                uses: max-patches
                with: { layer: relu3, channels: [1, 4], top: 5 }
            """, limit: 90, batchSize: 16);
        var r = Env.Run(path);
        foreach (var id in new[] { "emb", "nn", "pca", "tsne", "mp" })
            Assert.True(Env.StepStatus(r, id) == "succeeded", $"{id}: {Env.StepError(r, id)}");
        Assert.Equal(0, r.ExitCode);

        Assert.Equal([90L, 128], Env.Artifact(r, "emb/features.npy").Shape);
        Assert.Equal([90L], Env.Artifact(r, "emb/labels.npy").Shape);
        Assert.Equal("00000", System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "emb/ids.json"))).RootElement[0].GetString());

        var nnIdx = Env.Artifact(r, "nn/indices.npy");
        Assert.Equal([2L, 4], nnIdx.Shape);
        Assert.DoesNotContain(3f, nnIdx.Data.Take(4));                 // the query itself is excluded
        var nnD = Env.Artifact(r, "nn/distances.npy").Data;
        Assert.True(nnD.Take(4).Zip(nnD.Skip(1).Take(3)).All(p => p.First <= p.Second), "distances ascend");
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "nn/neighbours.png")));

        Assert.Equal([90L, 5], Env.Artifact(r, "pca/coordinates.npy").Shape);
        Assert.Equal([5L, 128], Env.Artifact(r, "pca/components.npy").Shape);

        Assert.Equal([90L, 2], Env.Artifact(r, "tsne/coordinates.npy").Shape);
        Assert.True(Env.Metric(r, "tsne", "kl_divergence") > 0);
        Assert.True(Env.Metric(r, "tsne", "trustworthiness_k10") > 0.85);
        foreach (var png in new[] { "tsne/scatter.png", "tsne/map.png", "pca/scatter.png", "mp/channel-0001.png", "mp/channel-0004.png" })
            Assert.True(new FileInfo(Path.Combine(r.OutDir!, png)).Length > 1000, png);

        Assert.Equal([2L, 5], Env.Artifact(r, "mp/top-values.npy").Shape);
        Assert.Equal([2L, 5, 3], Env.Artifact(r, "mp/top-positions.npy").Shape);
        var index = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "mp/index.json"))).RootElement;
        var first = index.GetProperty("channels").GetProperty("4")[0];
        Assert.Equal(4, first.GetProperty("box").GetArrayLength());
        // The values in index.json are the raw top-k values.
        Assert.Equal(Env.Artifact(r, "mp/top-values.npy").Data[5], first.GetProperty("value").GetSingle());
    }

    [Fact]
    public void TheCliLoadsThePluginWithScottPlotBesideTorchSharpsSkiaSharp()
    {
        // The CLI process carries SkiaSharp 2.88.6 (a TorchVision dependency); this plugin brings SkiaSharp 3.119 for
        // ScottPlot. A separate process is the real situation (the test process itself resolves one SkiaSharp).
        var path = Env.FashionPipeline("""
              - id: pca
                uses: pca
                with: { layer: gap, components: 2 }
            """, limit: 40);
        var outDir = Path.Combine(Path.GetDirectoryName(path)!, "cli-out");
        var (code, stdout, stderr) = Env.Cli(Path.GetDirectoryName(path)!, "run", path, "--out", outDir, "--quiet");
        Assert.True(code == 0, stdout + stderr + (File.Exists(Path.Combine(outDir, "manifest.json")) ? File.ReadAllText(Path.Combine(outDir, "manifest.json")) : ""));
        var png = File.ReadAllBytes(Path.Combine(outDir, "pca", "scatter.png"));
        Assert.True(png.Length > 5000);
        Assert.Equal((byte)0x89, png[0]);
    }
}
