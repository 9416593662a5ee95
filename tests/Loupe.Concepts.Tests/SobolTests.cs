using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using Loupe.Analysis.Concepts;
using Loupe.Models.TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Concepts.Tests;

/// <summary>concept-discovery's Sobol importance (CRAFT) against tests/fixtures/make_concepts_sobol.py: the same
/// Halton/Saltelli masks as scipy, the same total indices as numpy's Jansen estimator on the planted model with fixed U, W.</summary>
public class SobolTests
{
    [Fact]
    public void DesignIsScipysHaltonInSaltelliLayout()
    {
        var reference = Npy.Read(Env.Fixture("sobol_design.npy"));
        var d = ConceptSobol.Design(3, 16);
        Assert.Equal(reference.Shape, new long[] { d.GetLength(0), d.GetLength(1) });
        var mine = d.Cast<double>().Select(v => (float)v).ToArray();
        for (int i = 0; i < mine.Length; i++) Assert.True(Math.Abs(mine[i] - reference.Data[i]) < 1e-7, $"design[{i}] {mine[i]} vs scipy {reference.Data[i]}");
    }

    [Fact]
    public void JansenMatchesClosedForms()
    {
        // y = 2·x1 (x2 ignored) on a design of nd = 4: C_1 changes x1 → all variance; C_2 changes nothing → 0.
        int nd = 4, r = 2;
        var design = ConceptSobol.Design(r, nd);
        var y = Enumerable.Range(0, design.GetLength(0)).Select(i => 2 * design[i, 0]).ToArray();
        var st = ConceptSobol.Jansen(y, nd, r);
        double[] a = y[..nd], c1 = y[(2 * nd)..(3 * nd)];
        double mean = a.Average(), var = a.Sum(v => (v - mean) * (v - mean)) / (nd - 1);
        Assert.Equal(a.Zip(c1).Sum(p => (p.First - p.Second) * (p.First - p.Second)) / (2 * nd * var), st[0], 1e-12);
        Assert.Equal(0, st[1], 1e-12);
    }

    [Fact]
    public void TotalIndicesMatchNumpyOnThePlantedModel()
    {
        using var scope = NewDisposeScope();
        var model = new TorchVisionAdapter().Load(new TorchVisionOptions
        {
            Architecture = "fashion-cnn", NumClasses = 3, Weights = Path.Combine(Env.Planted, "planted-cnn.safetensors"),
        }, new ModelLoadContext(Env.RepoRoot, 0));
        var x = Npy.Read(Env.Fixture("sobol_input.npy")).ToTensor();
        var u = Npy.Read(Env.Fixture("sobol_u.npy")).ToTensor().to(ScalarType.Float64);
        var w = Npy.Read(Env.Fixture("sobol_w.npy")).ToTensor().to(ScalarType.Float64);
        var classes = Npy.Read(Env.Fixture("sobol_classes.npy")).Data;
        var reference = Npy.Read(Env.Fixture("sobol_st.npy"));
        var design = ConceptSobol.Design(3, 16);
        for (int i = 0; i < classes.Length; i++)
        {
            // Chunks of 7 rows: the result does not depend on how the design is batched.
            var st = ConceptSobol.Importance(model, "relu2", x.narrow(0, i, 1), u[i], w, 14, 14, (long)classes[i], design, 7);
            for (int j = 0; j < 3; j++)
            {
                double want = reference.Data[i * 3 + j];
                Assert.True(Math.Abs(st[j] - want) < 1e-3 * Math.Max(1, want), $"input {i} concept {j}: S_T {st[j]} vs numpy {want}");
            }
        }
        (model as IDisposable)?.Dispose();
    }

    [Fact]
    public void SobolRanksEachClassesPlantedTextureFirst()
    {
        var r = Env.Run(Env.PlantedPipeline("""
              - { id: cd, uses: concept-discovery, with: { layer: relu2, concepts: 4, iterations: 200, importance: sobol, designs: 16, heatmaps: 2 } }
            """));
        Env.Succeeded(r, "cd");
        var imp = Env.Artifact(r, "cd/importance.npy");
        Assert.Equal([3L, 4], imp.Shape);
        // Total indices are non-negative and, for a class logit driven by its concepts, not all zero.
        Assert.All(imp.Data, v => Assert.True(v >= 0 && !float.IsNaN(v)));
        Assert.True(imp.Data.Max() > 0.05, string.Join(", ", imp.Data));
        var crops = Env.Json(r, "cd/crops.json");
        Assert.Equal("sobol", crops.GetProperty("importance_method").GetString());
        // For each class (labels.txt: striped, dotted, plain), the concept with the largest total index is its planted
        // texture: at least 6 of its 8 top crops come from images with that texture's mask.
        var concepts = crops.GetProperty("concepts").EnumerateArray().ToList();
        foreach (var (cls, mask) in new[] { (0, "stripes"), (1, "dots"), (2, "square") })
        {
            int best = Enumerable.Range(0, 4).MaxBy(j => imp.Data[cls * 4 + j]);
            var ids = concepts[best].GetProperty("crops").EnumerateArray().Select(c => c.GetProperty("id").GetString()!).ToList();
            int inMask = ids.Count(id => File.Exists(Path.Combine(Env.Planted, "masks", mask, id + ".png")));
            Assert.True(inMask >= 6, $"class {cls}: most important concept {best} (S_T {string.Join(", ", imp.Data.Skip(cls * 4).Take(4))}) has {inMask}/{ids.Count} crops with {mask}");
        }
    }
}
