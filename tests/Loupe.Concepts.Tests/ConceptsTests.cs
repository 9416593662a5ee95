using Loupe.Abstractions;
using Loupe.Analysis.Concepts;
using TorchSharp;

namespace Loupe.Concepts.Tests;

/// <summary>dissection, concept-discovery, prototypes and counterfactual-neighbours on the planted model, against
/// tests/fixtures/make_concepts_fixtures.py (numpy / sklearn).</summary>
public class ConceptsTests
{
    static readonly Lazy<Loupe.Core.RunResult> Run = new(() => Env.Run(Env.PlantedPipeline($"""
          - id: dis
            uses: dissection
            with: {"{"} layer: relu2, masks: {Env.Planted}/masks, quantile: 0.04 {"}"}
          - id: cd
            uses: concept-discovery
            with: {"{"} layer: relu2, concepts: 4, iterations: 200, top: 8 {"}"}
          - id: proto
            uses: prototypes
            with: {"{"} layer: relu3 {"}"}
          - id: cf
            uses: counterfactual-neighbours
            with: {"{"} layer: relu3 {"}"}
        """)));

    [Fact]
    public void DissectionLabelsAStripeUnitAndMatchesNumpy()
    {
        var r = Run.Value;
        Env.Succeeded(r, "dis");
        var iou = Env.Artifact(r, "dis/iou.npy");
        var refIou = Npy.Read(Env.Fixture("dissection_iou.npy"));
        Assert.Equal(refIou.Shape, iou.Shape);
        for (int i = 0; i < iou.Data.Length; i++) Assert.True(Math.Abs(iou.Data[i] - refIou.Data[i]) < 2e-3, $"IoU[{i}] {iou.Data[i]} vs numpy {refIou.Data[i]}");
        Assert.True(Env.RelErr(Env.Artifact(r, "dis/thresholds.npy").Data, Npy.Read(Env.Fixture("dissection_thresholds.npy")).Data) < 1e-4);
        var units = Env.Json(r, "dis/units.json").GetProperty("units").EnumerateArray().ToList();
        Assert.Contains(units, u => u.GetProperty("label").ValueKind == System.Text.Json.JsonValueKind.String
            && u.GetProperty("label").GetString() == "stripes" && u.GetProperty("iou").GetDouble() >= 0.3);
        foreach (var png in new[] { "dis/summary.png", "dis/units.png" }) Assert.True(new FileInfo(Path.Combine(r.OutDir!, png)).Length > 3000, png);
    }

    [Fact]
    public void ConceptDiscoveryFindsAStripeConcept()
    {
        var r = Run.Value;
        Env.Succeeded(r, "cd");
        var crops = Env.Json(r, "cd/crops.json");
        // A concept whose top crops are centred on stripe pixels (exact masks of the planted data).
        double best = 0;
        foreach (var concept in crops.GetProperty("concepts").EnumerateArray())
        {
            var list = concept.GetProperty("crops").EnumerateArray().ToList();
            int inStripes = list.Count(c =>
            {
                var file = Path.Combine(Env.Planted, "masks", "stripes", c.GetProperty("id").GetString() + ".png");
                if (!File.Exists(file)) return false;
                var box = c.GetProperty("box").EnumerateArray().Select(v => v.GetInt32()).ToArray();
                var mask = ConceptImages.Mask(file, new InputSpec(1, 28, 28, [0f], [1f]));
                return mask[(box[0] + box[2]) / 2 * 28 + (box[1] + box[3]) / 2];
            });
            best = Math.Max(best, inStripes / (double)list.Count);
        }
        Assert.True(best >= 0.75, $"best stripe fraction of a concept's crops: {best}");
        Assert.Equal([3L, 4], Env.Artifact(r, "cd/importance.npy").Shape);
        foreach (var png in new[] { "cd/concepts.png", "cd/heatmaps.png", "cd/importance.png" }) Assert.True(new FileInfo(Path.Combine(r.OutDir!, png)).Length > 3000, png);
    }

    [Fact]
    public void NmfReachesSklearnsObjective()
    {
        var a = Npy.Read(Env.Fixture("nmf_input.npy"));
        using var x = a.ToTensor();
        var (u, w) = Nmf.Fit(x, 3, 500, 0);
        Assert.True(u.min().item<double>() >= 0 && w.min().item<double>() >= 0);
        double err = Nmf.Error(x, u, w), sk = Env.Facts.GetProperty("nmf").GetProperty("error").GetDouble();
        Assert.True(err <= sk * 1.03, $"‖A − UW‖ = {err}, sklearn's = {sk}");
        // The updates never increase the objective.
        var (u1, w1) = Nmf.Fit(x, 3, 20, 0);
        Assert.True(err <= Nmf.Error(x, u1, w1) + 1e-9);
    }

    [Fact]
    public void PrototypesAndCounterfactualsMatchNumpy()
    {
        var r = Run.Value;
        Env.Succeeded(r, "proto", "cf");
        Assert.Equal(Npy.Read(Env.Fixture("prototypes_rows.npy")).Data, Env.Artifact(r, "proto/prototypes.npy").Data);
        Assert.Equal(Npy.Read(Env.Fixture("criticisms_rows.npy")).Data, Env.Artifact(r, "proto/criticisms.npy").Data);
        Assert.Equal(Npy.Read(Env.Fixture("counterfactual_indices.npy")).Data, Env.Artifact(r, "cf/indices.npy").Data);
        Assert.True(Env.RelErr(Env.Artifact(r, "cf/distances.npy").Data, Npy.Read(Env.Fixture("counterfactual_distances.npy")).Data) < 1e-4);
        // Every counterfactual neighbour has another label than its query (labels: row mod 3 in the planted data).
        var idx = Env.Artifact(r, "cf/indices.npy").Data;
        for (int q = 0; q < 6; q++) for (int j = 0; j < 4; j++) Assert.NotEqual(q % 3, (int)idx[q * 4 + j] % 3);
        foreach (var png in new[] { "proto/prototypes.png", "cf/neighbours.png" }) Assert.True(new FileInfo(Path.Combine(r.OutDir!, png)).Length > 3000, png);
    }
}

/// <summary>configs/concepts.yaml runs as shipped (the guide's pictures come from it).</summary>
public class ConfigTests
{
    [Fact]
    public void ConceptsConfigRunsAndEveryStepSucceeds()
    {
        var outDir = Path.Combine(Loupe.Testing.RepoPaths.TempDir("loupe-concepts-config"), "run");
        var r = Loupe.Core.PipelineRunner.Run(new Loupe.Core.RunRequest(Path.Combine(Env.RepoRoot, "configs", "concepts.yaml"))
        {
            OutDir = outDir,
            PluginDirectories = [Env.BuiltInPlugins],
        });
        Env.Succeeded(r, "tcav", "dissection", "concept-discovery", "prototypes", "counterfactuals", "dff");
        Assert.Equal(0, r.ExitCode);
        foreach (var png in new[] { "tcav/tcav.png", "dissection/units.png", "dissection/summary.png", "concept-discovery/concepts.png",
                     "concept-discovery/heatmaps.png", "prototypes/prototypes.png", "counterfactuals/neighbours.png", "dff/dff-grid.png" })
            Assert.True(new FileInfo(Path.Combine(outDir, png)).Length > 3000, png);
    }
}
