using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Evaluation.Tests;

/// <summary>The second set of Quantus-style metrics (issue 22: irof, road, sufficiency, consistency, continuity, focus,
/// mprt, input-invariance, masks and boxes from files) against numpy (tests/fixtures/make_quality_more_fixtures.py)
/// and closed forms on the region CNN.</summary>
public class QualityMoreTests
{
    static string Fixture(string name) => Env.Yaml(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", name));

    static readonly JsonObject Expected = JsonNode.Parse(File.ReadAllText(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "expected_more.json")))!.AsObject();

    static double[] Want(string key) => Expected[key]!.AsArray().Select(v => v!.GetValue<double>()).ToArray();

    static double[] Values(Loupe.Core.RunResult r, string step, string key)
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, key + ".json")))!;
        // NaN is written as the string "NaN".
        return json["inputs"]!.AsArray().Select(i => i!["value"] is JsonValue v && v.TryGetValue<string>(out var t)
            ? double.Parse(t, System.Globalization.CultureInfo.InvariantCulture) : i["value"]!.GetValue<double>()).ToArray();
    }

    static string Failures(Loupe.Core.RunResult r) => string.Join("\n", r.Errors) + string.Join("\n",
        r.Manifest?["steps"]?.AsArray().Where(s => (string?)s!["status"] != "succeeded").Select(s => $"{s!["id"]}: {((string?)s["error"])?.Split('\n')[0]}") ?? []);

    static void Close(double[] want, double[] got, string what, double tol = 1e-6)
    {
        Assert.Equal(want.Length, got.Length);
        for (int i = 0; i < want.Length; i++)
            Assert.True(Math.Abs(got[i] - want[i]) <= tol + tol * Math.Abs(want[i]), $"{what}[{i}]: {got[i]} against numpy {want[i]}");
    }

    static Loupe.Core.RunResult Run(string data, int batch, string steps) => Env.Run($$"""
        version: 1
        model: { uses: region-test }
        data: { uses: npy, with: { path: {{Fixture(data)}} } }
        settings: { batch_size: {{batch}} }
        steps:
        {{steps}}
        """);

    [Fact]
    public void IrofRoadAndContinuityMatchTheNumpyReference()
    {
        // The numpy restatement (make_quality_more_fixtures.py) fills IROF's segments with the clean image's mean for
        // both scores: the Quantus-score steps say baseline: mean (score: quantus alone now defaults to Quantus's
        // running mean, checked against Quantus itself in QuantusReferenceTests).
        var r = Run("inputs.npy", 4, $$"""
              - { id: m, uses: fixture-map, with: { path: {{Fixture("maps.npy")}} } }
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: irof, uses: irof, with: { of: m, cell: 4 } }
              - { id: irof_quantus, uses: irof, with: { of: m, cell: 4, score: quantus, baseline: mean } }
              - { id: irof_slic, uses: irof, with: { of: m, score: quantus, baseline: mean } }
              - { id: road_morf, uses: road, with: { of: m, percentages: [5, 20, 40, 60, 80, 95], noise: 0 } }
              - { id: road_lerf, uses: road, with: { of: m, percentages: [5, 20, 40, 60, 80, 95], noise: 0, order: lerf } }
              - { id: continuity, uses: continuity, with: { of: sal, steps: 3, shift: 2 } }
              - { id: continuity_quantus, uses: continuity, with: { of: sal, sweep: quantus } }
              - { id: continuity_nan, uses: continuity, with: { of: sal, sweep: quantus, nan_when_prediction_changes: true } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        Close(Want("irof"), Values(r, "irof", "irof"), "irof");
        Close(Want("irof_quantus"), Values(r, "irof_quantus", "irof"), "irof, Quantus's score");
        Close(Want("irof_slic_quantus"), Values(r, "irof_slic", "irof"), "irof on skimage's superpixels, Quantus's score");
        Close(Want("road_morf"), Values(r, "road_morf", "road"), "road morf");
        Close(Want("road_lerf"), Values(r, "road_lerf", "road"), "road lerf");
        // The curves: each input's hit at every percentage (Quantus's per-input booleans), and their means over the
        // inputs as the series road_p5 … (Quantus's ROAD result, accuracy per percentage).
        int[] pct = [5, 20, 40, 60, 80, 95];
        foreach (var order in new[] { "morf", "lerf" })
        {
            var hits = Expected[$"road_{order}_hits"]!.AsArray().Select(row => row!.AsArray().Select(v => v!.GetValue<double>()).ToArray()).ToArray();
            var curve = Loupe.Testing.HostRuns.Artifact(r, $"road_{order}/road_curve.npy");
            Assert.Equal([4L, 6], curve.Shape);
            Assert.Equal(hits.SelectMany(h => h).Select(v => (float)v).ToArray(), curve.Data);
            for (int j = 0; j < pct.Length; j++)
                Assert.Equal(hits.Average(h => h[j]), Loupe.Testing.HostRuns.Metric(r, $"road_{order}", $"road_p{pct[j]}_mean"), 1e-12);
            Assert.True(File.Exists(Path.Combine(r.OutDir!, $"road_{order}", "road_curve.png")), "the curve's plot");
        }
        Close(Want("continuity"), Values(r, "continuity", "continuity"), "continuity", 1e-5);
        Close(Want("continuity_quantus"), Values(r, "continuity_quantus", "continuity"), "continuity (Quantus's sweep)", 1e-5);
        // Shifting the region's content out of it changes the class: every input changed (numpy), so every one is NaN.
        Assert.All(Expected["continuity_quantus_changed"]!.AsArray(), c => Assert.True(c!.GetValue<bool>()));
        Assert.All(Values(r, "continuity_nan", "continuity"), v => Assert.True(double.IsNaN(v)));
        // Quantus 0.6's shifts: −W + k·⌊(2W + 1)/steps⌋, k = 1..steps.
        var quantus = new Loupe.Analysis.Evaluation.ContinuityOptions { Sweep = Loupe.Analysis.Evaluation.ContinuitySweep.Quantus };
        Assert.Equal(Enumerable.Range(1, 28).Select(k => -28L + 2 * k), Loupe.Analysis.Evaluation.Continuity.Shifts(quantus, 28));
        Assert.Equal(new long[] { -17, -6, 5, 16, 27 }, Loupe.Analysis.Evaluation.Continuity.Shifts(quantus with { Steps = 5 }, 28));
        Assert.Equal(new long[] { 2, 4, 6 }, Loupe.Analysis.Evaluation.Continuity.Shifts(new() { Steps = 3, Shift = 2 }, 28));
        Assert.Contains("\"higher_is_better\": true", File.ReadAllText(Path.Combine(r.OutDir!, "road_lerf", "road.json")));
        Assert.Contains("\"higher_is_better\": false", File.ReadAllText(Path.Combine(r.OutDir!, "road_morf", "road.json")));
    }

    [Fact]
    public void SufficiencyAndConsistencyCompareTheWholeRunWhateverTheBatches()
    {
        foreach (var batch in new[] { 3, 8 })
        {
            var r = Run("inputs8.npy", batch, $$"""
                  - { id: m, uses: fixture-map, with: { path: {{Fixture("maps8.npy")}} } }
                  - { id: suf, uses: sufficiency, with: { of: m } }
                  - { id: suf08, uses: sufficiency, with: { of: m, threshold: 0.8 } }
                  - { id: con, uses: consistency, with: { of: m } }
                """);
            Assert.True(r.ExitCode == 0, Failures(r));
            Close(Want("sufficiency"), Values(r, "suf", "sufficiency"), $"sufficiency (batch {batch})");
            Close(Want("sufficiency_t08"), Values(r, "suf08", "sufficiency"), $"sufficiency 0.8 (batch {batch})");
            Close(Want("consistency"), Values(r, "con", "consistency"), $"consistency (batch {batch})");
        }
    }

    [Fact]
    public void QuantusBatchSizeComparesWithinEachGroupOfInputs()
    {
        // quantus_batch_size: 4 over the 8 inputs: each half is scored on its own, as Quantus scores each of its batches
        // — the numbers of two runs on the halves alone (both metrics are invariant to the run-wide max normalisation
        // the grouped run applies); 8 or more is the whole run.
        var dir = Env.TempDir();
        var inputs = Npy.Read(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "inputs8.npy"));
        var maps = Npy.Read(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "maps8.npy"));
        NdArray Half(NdArray a, int h)
        {
            long row = a.Data.Length / a.Shape[0];
            return new NdArray(a.Data.AsSpan((int)(h * 4 * row), (int)(4 * row)).ToArray(), [4, .. a.Shape[1..]]);
        }
        string Steps(string m, string extra) => $$"""
              - { id: m, uses: fixture-map, with: { path: {{m}} } }
              - { id: suf, uses: sufficiency, with: { of: m{{extra}} } }
              - { id: seu, uses: sufficiency, with: { of: m, distance: euclidean{{extra}} } }
              - { id: con, uses: consistency, with: { of: m{{extra}} } }
            """;
        var grouped = Run("inputs8.npy", 3, Steps(Fixture("maps8.npy"), ", quantus_batch_size: 4"));
        Assert.True(grouped.ExitCode == 0, Failures(grouped));
        var whole = Run("inputs8.npy", 3, Steps(Fixture("maps8.npy"), ", quantus_batch_size: 8"));
        Assert.True(whole.ExitCode == 0, Failures(whole));
        Close(Want("sufficiency"), Values(whole, "suf", "sufficiency"), "sufficiency, one group of 8");
        Close(Want("consistency"), Values(whole, "con", "consistency"), "consistency, one group of 8");
        var halves = new[] { 0, 1 }.Select(h =>
        {
            File.WriteAllBytes(Path.Combine(dir, $"x{h}.npy"), Npy.Encode(Half(inputs, h)));
            File.WriteAllBytes(Path.Combine(dir, $"m{h}.npy"), Npy.Encode(Half(maps, h)));
            var r = Env.Run($$"""
                version: 1
                model: { uses: region-test }
                data: { uses: npy, with: { path: {{Env.Yaml(Path.Combine(dir, $"x{h}.npy"))}} } }
                steps:
                {{Steps(Env.Yaml(Path.Combine(dir, $"m{h}.npy")), "")}}
                """);
            Assert.True(r.ExitCode == 0, Failures(r));
            return r;
        }).ToArray();
        foreach (var (step, key) in new[] { ("suf", "sufficiency"), ("seu", "sufficiency"), ("con", "consistency") })
        {
            var want = halves.SelectMany(r => Values(r, step, key)).ToArray();
            Close(want, Values(grouped, step, key), $"{step}, groups of 4", 1e-12);
            Assert.NotEqual(want, Values(whole, step, key));   // the scope changes the numbers on these maps
        }
    }

    [Fact]
    public void SufficiencyDistancesAreScipysAndConsistencyDiscretisesAsQuantus()
    {
        // tests/fixtures/make_dataset_metric_fixtures.py: scipy's cdist, and Quantus's discretise functions restated.
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "expected_dataset.json")))!.AsObject();
        string[] distances = ["euclidean", "sqeuclidean", "cityblock", "chebyshev", "cosine", "correlation", "braycurtis", "canberra", "jensenshannon", "minkowski", "hamming"];
        string[] discretisations = ["top-n-sign", "sign", "floating-points", "rank"];
        var r = Run("inputs8.npy", 3, $$"""
              - { id: m, uses: fixture-map, with: { path: {{Fixture("maps8.npy")}} } }
              - { id: s, uses: fixture-map, with: { path: {{Fixture("maps8s.npy")}} } }
              - { id: suf_sm, uses: sufficiency, with: { of: m, distance: euclidean, normalise: second-moment } }
              - { id: suf_ham_signed, uses: sufficiency, with: { of: s, distance: hamming, abs: false } }
            {{string.Concat(distances.Select(d => $"  - {{ id: suf_{d}, uses: sufficiency, with: {{ of: m, distance: {d} }} }}\n"))}}
            {{string.Concat(discretisations.Select(d => $"  - {{ id: con_signed_{d}, uses: consistency, with: {{ of: s, abs: false, discretise: {d} }} }}\n"
                + $"  - {{ id: con_abs_{d}, uses: consistency, with: {{ of: s, discretise: {d} }} }}\n"))}}
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        double[] Of(string key) => expected[key]!.AsArray().Select(v => v!.GetValue<double>()).ToArray();
        foreach (var d in distances)
            Close(Of("sufficiency_" + d), Values(r, "suf_" + d, "sufficiency"), "sufficiency " + d);
        Close(Of("sufficiency_euclidean_second_moment"), Values(r, "suf_sm", "sufficiency"), "sufficiency, second moment");
        Close(Of("sufficiency_hamming_signed"), Values(r, "suf_ham_signed", "sufficiency"), "sufficiency, hamming, signed");
        Assert.Contains(Of("sufficiency_hamming_signed"), v => v > 0);
        foreach (var d in discretisations)
        {
            Close(Of("consistency_signed_" + d), Values(r, "con_signed_" + d, "consistency"), "signed consistency " + d);
            Close(Of("consistency_abs_" + d), Values(r, "con_abs_" + d, "consistency"), "consistency " + d);
        }
    }

    [Fact]
    public void LocalisationMasksComeFromAFolderOrABoxesFile()
    {
        var dir = Env.TempDir();
        var masks = Path.Combine(dir, "masks");
        Directory.CreateDirectory(masks);
        var region = new float[28 * 28];
        for (int y = RegionNet.Lo; y < RegionNet.Hi; y++) for (int x = RegionNet.Lo; x < RegionNet.Hi; x++) region[y * 28 + x] = 1;
        for (int i = 0; i < 4; i++) File.WriteAllBytes(Path.Combine(masks, $"{i:D5}.npy"), Npy.Encode(new NdArray(region, [28, 28])));
        var boxes = Path.Combine(dir, "boxes.csv");
        File.WriteAllText(boxes, "id,x0,y0,x1,y1\n" + string.Join("\n", Enumerable.Range(0, 4).Select(i => $"{i:D5},4,4,12,8\n{i:D5},4,8,12,12")) + "\n");
        var r = Run("inputs.npy", 4, $$"""
              - { id: m, uses: fixture-map, with: { path: {{Fixture("maps.npy")}} } }
              - { id: folder, uses: relevance-mass-accuracy, with: { of: m, masks: {{Env.Yaml(masks)}} } }
              - { id: box, uses: relevance-mass-accuracy, with: { of: m, boxes: {{Env.Yaml(boxes)}} } }
              - { id: pg, uses: pointing-game, with: { of: m, boxes: {{Env.Yaml(boxes)}}, tolerance: 0 } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        // Σ_region a / Σ a of the signed map (normalising by max |a| cancels), computed here from the fixture.
        var maps = Npy.Read(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "maps.npy"));
        var want = Enumerable.Range(0, 4).Select(i =>
        {
            double inside = 0, all = 0;
            for (int p = 0; p < 784; p++) { double v = maps.Data[i * 784 + p]; all += v; if (region[p] > 0) inside += v; }
            return inside / all;
        }).ToArray();
        Close(want, Values(r, "folder", "relevance_mass_accuracy"), "masks folder", 1e-5);
        Close(want, Values(r, "box", "relevance_mass_accuracy"), "boxes file", 1e-5);
        // Map 2 is one-hot at (6, 9), inside the box: a hit; map 1 is noise: its maximum decides.
        var pointing = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "pg", "pointing.json")))!["inputs"]!.AsArray();
        Assert.True(pointing[2]!["hit"]!.GetValue<bool>());
        foreach (var row in pointing)
        {
            int y = row!["y"]!.GetValue<int>(), x = row["x"]!.GetValue<int>();
            Assert.Equal(y is >= 4 and < 12 && x is >= 4 and < 12, row["hit"]!.GetValue<bool>());
        }
        // A missing mask names the folder and the input.
        File.Delete(Path.Combine(masks, "00003.npy"));
        var bad = Run("inputs.npy", 4, $$"""
              - { id: m, uses: fixture-map, with: { path: {{Fixture("maps.npy")}} } }
              - { id: folder, uses: auc, with: { of: m, masks: {{Env.Yaml(masks)}} } }
            """);
        Assert.Contains("no mask for input '00003'", Failures(bad));
    }

    [Fact]
    public void InputInvarianceMprtAndFocusClosedForms()
    {
        var r = Run("inputs8.npy", 4, """
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: gxi, uses: gradient-x-input }
              - { id: edges, uses: sobel-map }
              - { id: rnd, uses: random-map }
              - { id: ii-sal, uses: input-invariance, with: { of: sal } }
              - { id: ii-gxi, uses: input-invariance, with: { of: gxi, shift: -1 } }
              - { id: sm-edges, uses: mprt, with: { of: edges, samples: 3 } }
              - { id: em-edges, uses: mprt, with: { of: edges, variant: efficient } }
              - { id: sm-rnd, uses: mprt, with: { of: rnd, samples: 3 } }
              - { id: focus, uses: focus, with: { of: sal } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        // Gradients are invariant to the compensated shift; gradient × input changes by |s| Σ|g| / Σ|g x| = 64 / Σ_region x.
        Assert.All(Values(r, "ii-sal", "input_invariance"), v => Assert.True(v < 1e-6, $"saliency: {v}"));
        var x = Npy.Read(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "inputs8.npy"));
        var gxi = Values(r, "ii-gxi", "input_invariance");
        for (int i = 0; i < 8; i++)
        {
            double sum = 0; int count = 0;
            for (int y = RegionNet.Lo; y < RegionNet.Hi; y++) for (int c = RegionNet.Lo; c < RegionNet.Hi; c++)
                { double v = x.Data[i * 784 + y * 28 + c]; if (v > 0) { sum += v; count++; } }
            Assert.Equal(count / sum, gxi[i], 1e-4);
        }
        // A map that ignores the model: identical after randomisation (ρ = 1, no entropy rise); random maps: ρ ≈ 0.
        Assert.All(Values(r, "sm-edges", "mprt"), v => Assert.Equal(1.0, v, 9));
        Assert.All(Values(r, "em-edges", "mprt"), v => Assert.Equal(0.0, v, 9));
        Assert.All(Values(r, "sm-rnd", "mprt"), v => Assert.True(Math.Abs(v) < 0.3, $"random maps: ρ = {v}"));
        // The model reads only the top-left quadrant of a mosaic: class-0 inputs score 1 when a class-0 image lies there,
        // else 0; class-1 inputs have no positive relevance (NaN).
        var focus = Values(r, "focus", "focus");
        for (int i = 0; i < 8; i++)
            if (i % 2 == 0) Assert.True(focus[i] is 0 or 1, $"focus[{i}] = {focus[i]}");
            else Assert.True(double.IsNaN(focus[i]), $"focus[{i}] = {focus[i]}");
    }

    [Fact]
    public void NewRandomDrawsAreSeededPerInput()
    {
        const string steps = """
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: road, uses: road, with: { of: sal, percentages: [10, 50, 90] } }
              - { id: irof, uses: irof, with: { of: sal, segments: 20 } }
              - { id: focus, uses: focus, with: { of: sal } }
              - { id: mprt, uses: mprt, with: { of: sal, samples: 2 } }
            """;
        var a = Run("inputs8.npy", 8, steps);
        var b = Run("inputs8.npy", 3, steps);
        Assert.True(a.ExitCode == 0 && b.ExitCode == 0, Failures(a) + Failures(b));
        foreach (var (step, key) in new[] { ("road", "road"), ("irof", "irof"), ("focus", "focus"), ("mprt", "mprt") })
            Assert.Equal(Values(a, step, key), Values(b, step, key));
    }
    [Fact]
    public void TwoVariantsOfOneMetricShareAColumnAcrossMethods()
    {
        var r = Run("inputs.npy", 4, """
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: rnd, uses: random-map }
              - { id: sal.road, uses: road, with: { of: sal, percentages: [10, 50, 90] } }
              - { id: sal.road-lerf, uses: road, with: { of: sal, percentages: [10, 50, 90], order: lerf } }
              - { id: rnd.road, uses: road, with: { of: rnd, percentages: [10, 50, 90] } }
              - { id: rnd.road-lerf, uses: road, with: { of: rnd, percentages: [10, 50, 90], order: lerf } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        var cols = r.Manifest!["methodsTable"]!["metrics"]!.AsArray().Select(c => (c!["name"]!.GetValue<string>(), c["higherIsBetter"]!.GetValue<bool>())).ToList();
        Assert.Equal([("road", false), ("road [road-lerf]", true)], cols);
    }
}
