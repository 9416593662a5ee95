using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Evaluation.Tests;

/// <summary>Quality metrics, continued: option checks, map reuse, the run helpers, and the seeded draws of the
/// perturbing metrics replayed against closed forms on the region CNN.</summary>
public partial class QualityTests
{
    [Fact]
    public void CompletenessRejectsNonSensitivitysOptions()
    {
        // Each axiomatic metric takes only the options it uses: a key it would ignore fails validation.
        var r = FixtureRun("""
              - { id: c, uses: completeness, with: { of: m, eps: 0.1, features_in_step: 4 } }
            """);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(r.Errors, e => e.Message.Contains("unknown option 'eps' for step 'c' (completeness)"));
        Assert.Contains(r.Errors, e => e.Message.Contains("unknown option 'features_in_step' for step 'c' (completeness)"));
    }

    [Fact]
    public void MetricsReuseTheMapsOfTheStepTheyEvaluate()
    {
        FixtureMap.Calls = 0;
        var r = Env.Run($$"""
            version: 1
            model: { uses: region-test }
            data: { uses: npy, with: { path: {{Fixture("inputs.npy")}} } }
            settings: { batch_size: 2 }
            steps:
              - { id: m, uses: fixture-map, with: { path: {{Fixture("maps.npy")}} } }
              - { id: s, uses: sparseness, with: { of: m } }
              - { id: c, uses: complexity, with: { of: m } }
              - { id: pf, uses: pixel-flipping, with: { of: m, features_in_step: 64 } }
              - { id: other, uses: sparseness, with: { of: m }, target: { class: 1 } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        // 2 batches for the step itself, none for the three metrics with its target, 2 for the one with another target.
        Assert.Equal(4, FixtureMap.Calls);
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "expected.json")))!;
        Assert.Equal(expected["sparseness"]![1]!.GetValue<double>(), Values(r, "s", "sparseness")[1], 1e-4);
    }

    static Loupe.Core.RunResult RegionRun(string steps, int batchSize)
    {
        var path = Path.Combine(Env.TempDir(), "region.npy");
        File.WriteAllBytes(path, Npy.Encode(new NdArray(RegionNet.Images(6, 7), [6, 1, 28, 28])));
        return Env.Run($$"""
            version: 1
            model: { uses: region-test }
            data: { uses: npy, with: { path: {{Env.Yaml(path)}} } }
            settings: { batch_size: {{batchSize}} }
            steps:
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: rnd, uses: random-map }
              - { id: edges, uses: sobel-map }
            {{steps}}
            """);
    }

    /// <summary>Three region images (<paramref name="imageSeed"/>) through <paramref name="steps"/> with pipeline seed
    /// <paramref name="seed"/>, on <paramref name="model"/>.</summary>
    internal static (Loupe.Core.RunResult Run, float[] Images) SeededRegionRun(int seed, int imageSeed, string model, string steps)
    {
        var images = RegionNet.Images(3, imageSeed);
        return (RunOn(images, seed, model, steps), images);
    }

    /// <summary>A run with pipeline seed <paramref name="seed"/> on these 1×28×28 images.</summary>
    internal static Loupe.Core.RunResult RunOn(float[] images, int seed, string model, string steps)
    {
        var path = Path.Combine(Env.TempDir(), "region.npy");
        File.WriteAllBytes(path, Npy.Encode(new NdArray(images, [images.Length / 784, 1, 28, 28])));
        return Env.Run($$"""
            version: 1
            seed: {{seed}}
            model: { uses: {{model}} }
            data: { uses: npy, with: { path: {{Env.Yaml(path)}} } }
            steps:
            {{steps}}
            """);
    }

    /// <summary>The generator a metric step draws from for one input: seeded by the step seed (FNV-1a of the step id,
    /// mixed with the pipeline seed, as the host derives it) and the input id.</summary>
    internal static TorchSharp.torch.Generator InputGenerator(int seed, string stepId, string inputId)
    {
        uint h = 2166136261;
        unchecked
        {
            foreach (var c in stepId) { h ^= c; h *= 16777619; }
            return new TorchSharp.torch.Generator(InputSeeds.For((int)(h ^ (uint)seed * 2654435761u) & int.MaxValue, inputId));
        }
    }

    [Fact]
    public void UniformFillsDrawPixelsOrModelInputs()
    {
        // One 28×28 block replaced by the fill (region perturbation, patch 28, one region), logits: the score is
        // (z(x) − z(v))/2 with z = 20·mean_R(relu(·)) − 5. The draw u ~ U[0, 1) is the step's first from the input's
        // generator; `uniform-input` puts u in the model's input space (Quantus's draw on the tensors it is given),
        // `uniform` takes u as pixels and normalises them: (u − 0.5)/0.25 for this model.
        var (r, images) = SeededRegionRun(5, 13, "region-test-scaled", """
              - { id: sal, uses: saliency }
              - { id: rpi, uses: region-perturbation, with: { of: sal, patch: 28, regions: 1, softmax: false, baseline: uniform-input } }
              - { id: rpp, uses: region-perturbation, with: { of: sal, patch: 28, regions: 1, softmax: false, baseline: uniform } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        foreach (var (step, pixels) in new[] { ("rpi", false), ("rpp", true) })
        {
            var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, "region_perturbation.json")))!["inputs"]!.AsArray();
            for (int i = 0; i < 3; i++)
            {
                using var g = InputGenerator(5, step, inputs[i]!["id"]!.GetValue<string>());
                var u = TorchSharp.torch.rand([1, 28, 28], generator: g).data<float>().ToArray();
                double zx = RegionLogit(p => images[i * 784 + p]), zv = RegionLogit(p => pixels ? (u[p] - 0.5) / 0.25 : u[p]);
                double want = (zx - zv) / 2, got = inputs[i]!["value"]!.GetValue<double>();
                Assert.True(Math.Abs(got - want) < 1e-4, $"{step}[{i}]: {got} against {want}");
            }
        }
    }

    [Fact]
    public void RandomRegionOrderIsAPermutationOfTheGridSeededPerInput()
    {
        // patch 14 cuts 28×28 into four blocks; the region R lies in block 0, so the logit stays z until block 0 is
        // replaced (fill: the image minimum 0, z = −5 after) at step perm[0] + 1, perm the input's first draw
        // (randperm(4)): AOPC = (4 − perm[0])·(z + 5)/5.
        var (r, images) = SeededRegionRun(9, 23, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: rnd, uses: region-perturbation, with: { of: gxi, patch: 14, regions: 4, softmax: false, baseline: min, order: random } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "rnd", "region_perturbation.json")))!["inputs"]!.AsArray();
        var firsts = new List<long>();
        for (int i = 0; i < 3; i++)
        {
            double sum = 0;
            for (int y = RegionNet.Lo; y < RegionNet.Hi; y++)
                for (int x = RegionNet.Lo; x < RegionNet.Hi; x++) sum += Math.Max(0, images[i * 784 + y * 28 + x]);
            double z = 20 * sum / 64 - 5;
            using var g = InputGenerator(9, "rnd", inputs[i]!["id"]!.GetValue<string>());
            long first = TorchSharp.torch.randperm(4, generator: g).data<long>()[0];
            firsts.Add(first);
            double want = (4 - first) * (z + 5) / 5, got = inputs[i]!["value"]!.GetValue<double>();
            Assert.True(Math.Abs(got - want) < 1e-4, $"rnd[{i}]: {got} against {want} (block 0 at step {first + 1})");
        }
        Assert.True(firsts.Distinct().Count() > 1, "the order differs between inputs");
    }

    [Fact]
    public void UniformStepDrawsOneValuePerPerturbation()
    {
        // Quantus's batched "uniform": one U[low, high) value per input and perturbation call. Region perturbation with
        // one 28×28 region: the copy is the constant u, so the score is (z(x) − z(u))/2, z = 20·mean_R(relu ·) − 5.
        // Faithfulness correlation: run j replaces its subset by u_j. Each input's generator first gives the metric's
        // one-call baseline (a value per input), then the subsets (faithfulness correlation), then the values.
        var (r, images) = SeededRegionRun(8, 19, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: rp, uses: region-perturbation, with: { of: gxi, patch: 28, regions: 1, softmax: false, baseline: uniform-step, uniform_low: -1, uniform_high: 3 } }
              - { id: fc, uses: faithfulness-correlation, with: { of: gxi, runs: 6, subset_size: 60, baseline: uniform-step } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        var rp = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "rp", "region_perturbation.json")))!["inputs"]!.AsArray();
        var fc = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "fc", "faithfulness_correlation.json")))!["inputs"]!.AsArray();
        var values = new List<double>();
        for (int i = 0; i < 3; i++)
        {
            Func<int, double> x = p => images[i * 784 + p];
            using (var g = InputGenerator(8, "rp", rp[i]!["id"]!.GetValue<string>()))
            {
                TorchSharp.torch.rand([1, 1, 1], generator: g).Dispose();                           // the one-call baseline
                double u = TorchSharp.torch.rand(1, generator: g).data<float>()[0] * 4f - 1f;
                double want = (RegionLogit(x) - (20 * Math.Max(0, u) - 5)) / 2, got = rp[i]!["value"]!.GetValue<double>();
                Assert.True(Math.Abs(got - want) < 1e-4, $"rp[{i}]: {got} against {want} (u = {u})");
                values.Add(u);
            }
            using (var g = InputGenerator(8, "fc", fc[i]!["id"]!.GetValue<string>()))
            {
                TorchSharp.torch.rand([1, 1, 1], generator: g).Dispose();
                var subsets = Enumerable.Range(0, 6).Select(_ => TorchSharp.torch.randperm(784, generator: g).narrow(0, 0, 60).data<long>().ToArray()).ToArray();
                var us = TorchSharp.torch.rand(6, generator: g).data<float>().ToArray();
                double zx = RegionLogit(x), max = Enumerable.Range(0, 784).Where(InRegion).Max(p => Math.Max(0, x(p)));
                var sums = new double[6];
                var drops = new double[6];
                for (int j = 0; j < 6; j++)
                {
                    var set = subsets[j].ToHashSet();
                    sums[j] = set.Where(p => InRegion((int)p)).Sum(p => Math.Max(0, x((int)p)) / max);   // the map relu(x)·c, normalised
                    drops[j] = zx - RegionLogit(p => set.Contains(p) ? us[j] : x(p));
                }
                double ms = sums.Average(), md = drops.Average();
                double cov = sums.Zip(drops, (s1, d) => (s1 - ms) * (d - md)).Sum();
                double want = cov / Math.Sqrt(sums.Sum(s1 => (s1 - ms) * (s1 - ms)) * drops.Sum(d => (d - md) * (d - md)));
                double got = fc[i]!["value"]!.GetValue<double>();
                Assert.True(Math.Abs(got - want) < 1e-4, $"fc[{i}]: {got} against {want}");
            }
        }
        Assert.All(values, u => Assert.InRange(u, -1, 3));
        Assert.Contains(values, u => u > 1);   // beyond U[0, 1): the bounds are used
    }

    [Fact]
    public void FaithfulnessCorrelationDrawsFreshNoiseForEverySubset()
    {
        // Quantus's faithfulness correlation calls its perturbation function once per run, so a noise fill
        // (batch_gaussian_noise) is drawn afresh for every subset: run j replaces its subset by x + n_j, n_j ~ N(0, σ²).
        // Each input's generator gives the metric's one-call baseline, then the subsets, then one noise image per run.
        var (r, images) = SeededRegionRun(8, 19, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: fc, uses: faithfulness-correlation, with: { of: gxi, runs: 6, subset_size: 60, baseline: gaussian-noise, perturb_std: 0.5 } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        var fc = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "fc", "faithfulness_correlation.json")))!["inputs"]!.AsArray();
        for (int i = 0; i < 3; i++)
        {
            Func<int, double> x = p => images[i * 784 + p];
            using var g = InputGenerator(8, "fc", fc[i]!["id"]!.GetValue<string>());
            TorchSharp.torch.randn([1, 28, 28], generator: g).Dispose();                             // the one-call baseline
            var subsets = Enumerable.Range(0, 6).Select(_ => TorchSharp.torch.randperm(784, generator: g).narrow(0, 0, 60).data<long>().ToArray()).ToArray();
            var noise = Enumerable.Range(0, 6).Select(_ => (TorchSharp.torch.randn([1, 28, 28], generator: g) * 0.5f).data<float>().ToArray()).ToArray();
            double zx = RegionLogit(x), max = Enumerable.Range(0, 784).Where(InRegion).Max(p => Math.Max(0, x(p)));
            var sums = new double[6];
            var drops = new double[6];
            for (int j = 0; j < 6; j++)
            {
                var set = subsets[j].ToHashSet();
                sums[j] = set.Where(p => InRegion((int)p)).Sum(p => Math.Max(0, x((int)p)) / max);
                drops[j] = zx - RegionLogit(p => set.Contains(p) ? x(p) + noise[j][p] : x(p));
            }
            double ms = sums.Average(), md = drops.Average();
            double cov = sums.Zip(drops, (s1, d) => (s1 - ms) * (d - md)).Sum();
            double want = cov / Math.Sqrt(sums.Sum(s1 => (s1 - ms) * (s1 - ms)) * drops.Sum(d => (d - md) * (d - md)));
            double got = fc[i]!["value"]!.GetValue<double>();
            Assert.True(Math.Abs(got - want) < 1e-4, $"fc[{i}]: {got} against {want}");
        }
    }

    [Fact]
    public void RelativeStabilitiesFollowQuantusNoiseAndDenominators()
    {
        // Gradient × input of the region CNN is c·x on the region (c = 20/64) and 0 elsewhere, and the logits are
        // (z, −z) with z = 20·mean_R(x) − 5. With x' = x + u, u ~ U[0.02, 0.2] per pixel (Quantus 0.6: one-sided, so the
        // region stays positive and the prediction unchanged), a sample's relative output stability is
        // ‖u_R/x_R‖₂ / ‖h(x) − h(x')‖₂ = ‖u_R/x_R‖₂ / (√2·20·mean_R(u)) and its relative input stability
        // ‖u_R/x_R‖₂ / ‖u/(x + ε·[x = 0])‖₂; the score is the max over samples. The draws are the step's: seeded by the
        // step seed (FNV-1a of the step id and the pipeline seed) and the input id, one U[0, 1) image per sample.
        var (r, images) = SeededRegionRun(3, 11, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: ros, uses: relative-output-stability, with: { of: gxi, samples: 4 } }
              - { id: ris, uses: relative-input-stability, with: { of: gxi, samples: 4 } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        foreach (var step in new[] { "ros", "ris" })
        {
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, step == "ros" ? "relative_output_stability.json" : "relative_input_stability.json")))!;
            var inputs = json["inputs"]!.AsArray();
            for (int i = 0; i < 3; i++)
            {
                using var g = InputGenerator(3, step, inputs[i]!["id"]!.GetValue<string>());
                double best = double.NegativeInfinity;
                for (int j = 0; j < 4; j++)
                {
                    var u = TorchSharp.torch.rand([1, 1, 28, 28], generator: g).data<float>().Select(v => v * 0.18 + 0.02).ToArray();
                    double num = 0, sumU = 0, den = 0;
                    for (int p = 0; p < 784; p++)
                    {
                        double x = images[i * 784 + p];
                        bool inRegion = InRegion(p);
                        if (inRegion) { num += u[p] / x * (u[p] / x); sumU += u[p]; }
                        double rel = u[p] / (x == 0 ? 1e-6 : x);
                        den += rel * rel;
                    }
                    double ratio = step == "ros" ? Math.Sqrt(num) / (Math.Sqrt(2) * 20 * sumU / 64) : Math.Sqrt(num) / Math.Sqrt(den);
                    best = Math.Max(best, ratio);
                }
                double got = inputs[i]!["value"]!.GetValue<double>();
                Assert.True(Math.Abs(got - best) <= 1e-4 * Math.Abs(best), $"{step}[{i}]: {got} against {best}");
            }
        }
    }

    [Fact]
    public void GaussianInfidelityIsTheMeanSquaredGapOverTheSamples()
    {
        // A zero map predicts no change: infidelity = mean over the samples of (f(x) − f(x − I))², I ~ N(0, σ²) the
        // step's draws (each input's generator, one randn of samples×1×28×28), f = z = 20·mean_R(relu ·) − 5.
        var zeros = Path.Combine(Env.TempDir(), "zeros.npy");
        File.WriteAllBytes(zeros, Npy.Encode(new NdArray(new float[3 * 784], [3, 28, 28])));
        var (r, images) = SeededRegionRun(12, 31, "region-test", $$"""
              - { id: m, uses: fixture-map, with: { path: {{Env.Yaml(zeros)}} } }
              - { id: inf, uses: infidelity, with: { of: m, samples: 4, sigma: 0.3 } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        static double RegionLogit(Func<int, double> x)
        {
            double sum = 0;
            for (int y = RegionNet.Lo; y < RegionNet.Hi; y++)
                for (int xx = RegionNet.Lo; xx < RegionNet.Hi; xx++) sum += Math.Max(0, x(y * 28 + xx));
            return 20 * sum / 64 - 5;
        }
        var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "inf", "infidelity.json")))!["inputs"]!.AsArray();
        for (int i = 0; i < 3; i++)
        {
            using var g = InputGenerator(12, "inf", inputs[i]!["id"]!.GetValue<string>());
            var noise = TorchSharp.torch.randn([4, 1, 28, 28], generator: g).data<float>().ToArray();
            double z = RegionLogit(p => images[i * 784 + p]), total = 0;
            for (int j = 0; j < 4; j++)
            {
                double drop = z - RegionLogit(p => images[i * 784 + p] - noise[j * 784 + p] * 0.3f);
                total += drop * drop;
            }
            double want = total / 4, got = inputs[i]!["infidelity"]!.GetValue<double>();
            Assert.True(Math.Abs(got - want) <= 1e-4 * want, $"inf[{i}]: {got} against {want}");
        }
    }

    [Fact]
    public void CaptumsNormalizedInfidelityIsTheBestScaleOfTheMap()
    {
        // Captum: with a = IᵀΦ, b = f(x) − f(x − I) summed over the samples, infidelity = (Σa² − 2Σab + Σb²)/n and, with
        // normalize, (β²Σa² − 2βΣab + Σb²)/n with β = Σab/Σa². The same step (same id and seed: the same noise) on the map
        // scaled by s gives U(s) = (s²Σa² − 2sΣab + Σb²)/n: three scales give the three sums, hence the normalised value
        // Σb²/n − (Σab)²/(nΣa²), which no scale of the map changes.
        var maps = Npy.Read(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "maps.npy"));
        double[] Run(double scale, bool normalize)
        {
            var path = Path.Combine(Env.TempDir(), "maps.npy");
            File.WriteAllBytes(path, Npy.Encode(new NdArray(maps.Data.Select(v => (float)(v * scale)).ToArray(), maps.Shape)));
            var r = Env.Run($$"""
                version: 1
                model: { uses: region-test }
                data: { uses: npy, with: { path: {{Fixture("inputs.npy")}} } }
                steps:
                  - { id: m, uses: fixture-map, with: { path: {{Env.Yaml(path)}} } }
                  - { id: inf, uses: infidelity, with: { of: m, samples: 5, sigma: 0.3, normalize: {{(normalize ? "true" : "false")}} } }
                """);
            Assert.True(r.ExitCode == 0, Failures(r));
            return Values(r, "inf", "infidelity");
        }
        var (u1, u2, u3, n1, n5) = (Run(1, false), Run(2, false), Run(3, false), Run(1, true), Run(5, true));
        for (int i = 0; i < u1.Length; i++)
        {
            // U(s) = A s² − 2B s + C (per sample): second differences give A, then B and C.
            double a = (u3[i] - 2 * u2[i] + u1[i]) / 2, bterm = (a * 3 - (u2[i] - u1[i])) / 2, c = u1[i] - a + 2 * bterm;
            double want = c - bterm * bterm / a;
            Assert.True(Math.Abs(n1[i] - want) <= 1e-4 * Math.Abs(u1[i]) + 1e-6, $"normalized[{i}]: {n1[i]} against {want} (from the unnormalised scales)");
            Assert.True(Math.Abs(n5[i] - n1[i]) <= 1e-4 * Math.Abs(n1[i]) + 1e-6, $"normalized[{i}] changed with the map's scale: {n1[i]} against {n5[i]}");
            Assert.True(n1[i] <= u1[i] + 1e-9);
        }
    }
}
