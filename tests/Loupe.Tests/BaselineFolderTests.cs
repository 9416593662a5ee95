using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Tests;

/// <summary><c>baseline_folder</c>: Captum's per-example tensor baselines (an N×C×H×W baselines tensor, row i for input
/// i), as one <c>&lt;id&gt;.npy</c> per input. Input i of the demo CNN's four takes reference i mod 3 of
/// fam_gshap_baselines.npy; deeplift and integrated gradients against make_families_fixtures.py's PyTorch
/// implementations of Captum's methods with that N×C×H×W tensor; copies made from an input (noise-tunnel's noisy
/// copies, a metric's perturbed copies) take that input's baseline.</summary>
public class BaselineFolderTests
{
    static string Folder(int inputs = 4)
    {
        var dir = TestEnv.TempDir("loupe-baselines");
        var refs = Npy.Read(TestEnv.Fixture("fam_gshap_baselines.npy"));
        int d = refs.Data.Length / (int)refs.Shape[0];
        for (int i = 0; i < inputs; i++)
            File.WriteAllBytes(Path.Combine(dir, $"{i:D5}.npy"), Npy.Encode(new NdArray(refs.Data.AsSpan((i % 3) * d, d).ToArray(), [1, 28, 28])));
        return dir;
    }

    static JsonNode Step(Loupe.Core.RunResult r, string id) => r.Manifest!["steps"]!.AsArray().First(s => s!["id"]!.GetValue<string>() == id)!;

    [Fact]
    public void EachInputTakesItsOwnBaselineAsCaptumsPerExampleTensor()
    {
        var folder = TestEnv.Yaml(Folder());
        var r = TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: dl, uses: deeplift, with: { baseline_folder: {{folder}} } }
              - { id: ig, uses: integrated-gradients, with: { baseline_folder: {{folder}} } }
              - { id: lig, uses: layer-integrated-gradients, with: { layer: conv1, baseline_folder: {{folder}}, steps: 50 } }
              - { id: nt, uses: noise-tunnel, with: { inner: { uses: integrated-gradients, with: { baseline_folder: {{folder}} } }, samples: 3, stdevs: 0 } }
              - { id: ig.sensitivity-max, uses: sensitivity-max, with: { of: ig, samples: 2, radius: 0 } }
              - { id: ig.avg-sensitivity, uses: avg-sensitivity, with: { of: ig, samples: 2, radius: 0 } }
            """, batchSize: 3));
        // Batches of 3 over 4 inputs: the second batch's input 00003 takes reference 0 again, found by its id.
        Assert.Equal("succeeded", Step(r, "dl")["status"]!.GetValue<string>());
        TechniqueTests.Close(TechniqueTests.Stack(r, "dl", "deeplift"), "fam_cnn_deeplift_per_input.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "ig", "integrated-gradients"), "fam_cnn_ig_per_input.npy", 1e-4);
        // Layer IG at the first convolution, which every path crosses: its total is IG's (completeness, F(x) − F(x′)).
        for (int i = 0; i < 4; i++)
        {
            double layer = TestEnv.Artifact(r, $"lig/{i:D5}.layer-integrated-gradients-layer.npy").Data.Sum(v => (double)v);
            double input = TestEnv.Artifact(r, $"ig/{i:D5}.integrated-gradients.npy").Data.Sum(v => (double)v);
            Assert.True(Math.Abs(layer - input) <= 2e-3 * Math.Max(1, Math.Abs(input)), $"input {i}: layer {layer} vs input {input}");
        }
        // Noise-tunnel with σ = 0: each noisy copy is its input, with that input's baseline — IG's maps (to the float
        // rounding of passes of another size; another input's baseline moves a map by its whole size).
        Assert.True(TestEnv.RelL2(TechniqueTests.Stack(r, "nt", "noise-tunnel"), TechniqueTests.Stack(r, "ig", "integrated-gradients")) <= 1e-5);
        // Metrics' copies at radius 0 are their inputs: the same baseline gives the same map, a sensitivity of 0 to the
        // float rounding of passes of another size (a copy given another input's baseline would move its map by ~1).
        foreach (var id in new[] { "ig.sensitivity-max", "ig.avg-sensitivity" })
        {
            var m = Step(r, id);
            Assert.True(m["status"]!.GetValue<string>() == "succeeded", id + ": " + m["error"]);
            var key = m["metrics"]!.AsObject().First(p => p.Key.EndsWith("_mean", StringComparison.Ordinal));
            Assert.True(key.Value!.GetValue<double>() <= 1e-5, $"{id}: {key.Key} = {key.Value}");
        }
    }

    /// <summary>The perturbation methods fill with each input's baseline (Captum's Occlusion, FeatureAblation,
    /// ShapleyValueSampling, KernelShap, Lime with an N×C×H×W baselines tensor): with a constant image per input, row i
    /// equals the method run with that constant as its fill (already Captum's scalar baseline); feature ablation of the
    /// whole image with reference images gives F(x) − F(x′ᵢ), which DeepLift's summation to delta also gives.</summary>
    [Fact]
    public void PerturbationMethodsFillWithEachInputsBaseline()
    {
        var constants = TestEnv.TempDir("loupe-baselines-constant");
        for (int i = 0; i < 4; i++)
            File.WriteAllBytes(Path.Combine(constants, $"{i:D5}.npy"), Npy.Encode(new NdArray(Enumerable.Repeat(0.25f * (i + 1), 28 * 28).ToArray(), [1, 1, 28, 28])));
        var folder = TestEnv.Yaml(constants);
        string Each(string id, string uses, string with) =>
            $"  - {{ id: {id}, uses: {uses}, with: {{ {with}, baseline_folder: {folder} }} }}\n"
            + string.Concat(Enumerable.Range(0, 4).Select(i => $"  - {{ id: {id}-{i}, uses: {uses}, with: {{ {with}, fill: {0.25 * (i + 1)} }} }}\n"));
        var refs = TestEnv.Yaml(Folder());
        var r = TestEnv.Run(TestEnv.FixturePipeline(
            Each("occ", "occlusion", "window: 7, stride: 5")
            + Each("fa", "feature-ablation", "cell: 14")
            + Each("ss", "shapley-sampling", "cell: 14, exact: true")
            + $$"""
              - { id: whole, uses: feature-ablation, with: { cell: 28, baseline_folder: {{refs}} } }
              - { id: dl, uses: deeplift, with: { baseline_folder: {{refs}} } }
              - { id: ks, uses: kernel-shap, with: { cell: 14, samples: 32, baseline_folder: {{refs}} } }
              - { id: lime, uses: lime, with: { cell: 14, samples: 32, baseline_folder: {{refs}} } }
            """, batchSize: 3));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        foreach (var (id, artifact) in new[] { ("occ", "occlusion"), ("fa", "feature-ablation"), ("ss", "shapley-sampling") })
            for (int i = 0; i < 4; i++)
            {
                var folderRow = TestEnv.Artifact(r, $"{id}/{i:D5}.{artifact}.npy").Data;
                var constantRow = TestEnv.Artifact(r, $"{id}-{i}/{i:D5}.{artifact}.npy").Data;
                Assert.True(TestEnv.RelL2(folderRow, constantRow) <= 1e-6, $"{id}, input {i}");
                // The constants differ by input, so row i differs from the neighbouring constant's row.
                Assert.True(TestEnv.RelL2(folderRow, TestEnv.Artifact(r, $"{id}-{(i + 1) % 4}/{i:D5}.{artifact}.npy").Data) > 1e-3, $"{id}, input {i}: the constants' maps do not differ");
            }
        for (int i = 0; i < 4; i++)
        {
            double gap = TestEnv.Artifact(r, $"whole/{i:D5}.feature-ablation.npy").Data[0];
            double total = TestEnv.Artifact(r, $"dl/{i:D5}.deeplift.npy").Data.Sum(v => (double)v);
            Assert.True(Math.Abs(total - gap) <= 1e-4 * Math.Abs(gap) + 1e-5, $"input {i}: F(x) − F(x′) {gap} vs Σ DeepLift {total}");
        }
    }

    /// <summary>Focus's own mosaics are made of four inputs: no single input's baseline applies — said, and only that
    /// step fails.</summary>
    [Fact]
    public void RowsMadeOfSeveralInputsHaveNoInputsBaseline()
    {
        var dir = TestEnv.TempDir();
        var folder = TestEnv.Yaml(Folder(inputs: 16));
        var r = TestEnv.Run(TestEnv.Pipeline($$"""
            version: 1
            {{TestEnv.DemoModel}}
            data:
              uses: idx
              with: { images: {{TestEnv.Yaml(Path.Combine(TestEnv.Samples, "data", "fashion-mnist", "t10k-first500-images-idx3-ubyte.gz"))}}, limit: 16 }
            steps:
              - { id: ig, uses: integrated-gradients, with: { steps: 4, baseline_folder: {{folder}} } }
              - { id: ig.focus, uses: focus, with: { of: ig } }
              - { id: ig.sparseness, uses: sparseness, with: { of: ig } }
            """, dir));
        Assert.Equal("succeeded", Step(r, "ig")["status"]!.GetValue<string>());
        var focus = Step(r, "ig.focus");
        Assert.True(focus["status"]!.GetValue<string>() == "failed", focus.ToJsonString());
        Assert.Contains("baseline_folder", focus["error"]!.GetValue<string>());
        Assert.Contains("no single input", focus["error"]!.GetValue<string>());
        Assert.Equal("succeeded", Step(r, "ig.sparseness")["status"]!.GetValue<string>());
    }

    [Fact]
    public void AMissingOrMisshapenBaselineFailsThatStepNamingTheInput()
    {
        var dir = Folder(inputs: 3);   // no 00003.npy
        var misshapen = TestEnv.TempDir("loupe-baselines-bad");
        for (int i = 0; i < 4; i++)
            File.WriteAllBytes(Path.Combine(misshapen, $"{i:D5}.npy"), Npy.Encode(new NdArray(new float[3 * 28 * 28], [3, 28, 28])));
        var r = TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: missing, uses: integrated-gradients, with: { baseline_folder: {{TestEnv.Yaml(dir)}}, steps: 4 } }
              - { id: shape, uses: deeplift, with: { baseline_folder: {{TestEnv.Yaml(misshapen)}} } }
              - { id: fine, uses: saliency }
            """, batchSize: 4));
        Assert.NotEqual(0, r.ExitCode);
        var missing = Step(r, "missing")["error"]!.GetValue<string>();
        Assert.Contains("'00003'", missing);
        Assert.Contains("00003.npy", missing);
        var shape = Step(r, "shape")["error"]!.GetValue<string>();
        Assert.Contains("00000.npy", shape);
        Assert.Contains("3×28×28", shape);
        Assert.Equal("succeeded", Step(r, "fine")["status"]!.GetValue<string>());
    }

    [Fact]
    public void AFolderBesideAFileOrAConstantIsAValidationError()
    {
        var dir = TestEnv.Yaml(Folder(inputs: 1));
        var file = TestEnv.Yaml(TestEnv.Fixture("fam_dl_baseline_file.npy"));
        var r = TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: a, uses: integrated-gradients, with: { baseline_folder: {{dir}}, baseline_file: {{file}} } }
              - { id: b, uses: deeplift, with: { baseline_folder: {{dir}}, fill: 0.5 } }
              - { id: o, uses: occlusion, with: { baseline_file: {{file}}, fill: 0.5 } }
              - { id: p, uses: feature-permutation, with: { baseline_folder: {{dir}} } }
            """));
        Assert.NotEqual(0, r.ExitCode);
        var all = string.Join("\n", r.Errors);
        Assert.True(all.Contains("step 'a'") && all.Contains("give either 'baseline_folder' or 'baseline_file'"), all);
        Assert.True(all.Contains("step 'b'") && all.Contains("give either 'baseline_folder' or a constant 'fill'"), all);
        Assert.True(all.Contains("step 'o'") && all.Contains("give either 'baseline_file' or a constant 'fill'"), all);
        Assert.True(all.Contains("step 'p'") && all.Contains("feature-permutation fills nothing"), all);
        var nowhere = TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: c, uses: layer-conductance, with: { layer: pool2, baseline_folder: {{dir}}-nowhere } }
            """));
        Assert.NotEqual(0, nowhere.ExitCode);
        Assert.Contains("-nowhere", string.Join("\n", nowhere.Errors));
    }
}
