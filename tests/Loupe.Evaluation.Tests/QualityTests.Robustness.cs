using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Evaluation.Tests;

/// <summary>Quality metrics, continued: infidelity and the robustness metrics against closed forms on the region
/// CNN, and seeding per input.</summary>
public partial class QualityTests
{
    [Fact]
    public void BlockInfidelityWithARandomFillAveragesFreshPasses()
    {
        // One 28×28 block (patch 28) replaced by u: IᵀΦ = Σ_R c·relu(x)·(x − u), Δf = z(x) − z(u·1), z(u·1) = 20·relu(u) − 5.
        // With uniform-step each of the `samples` passes draws its own u (after the pass's one-call baseline, a value
        // per input); the score is the mean of (IᵀΦ − Δf)² over the passes. A fixed fill runs one pass.
        var (r, images) = SeededRegionRun(10, 29, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: inf, uses: infidelity, with: { of: gxi, perturbation: blocks, patch_sizes: [28], baseline: uniform-step, samples: 3 } }
              - { id: min1, uses: infidelity, with: { of: gxi, perturbation: blocks, samples: 1 } }
              - { id: min5, uses: infidelity, with: { of: gxi, perturbation: blocks, samples: 5 } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "inf", "infidelity.json")))!["inputs"]!.AsArray();
        for (int i = 0; i < 3; i++)
        {
            double sum = 0;
            for (int y = RegionNet.Lo; y < RegionNet.Hi; y++)
                for (int x = RegionNet.Lo; x < RegionNet.Hi; x++) sum += Math.Max(0, images[i * 784 + y * 28 + x]);
            double z = 20 * sum / 64 - 5;
            using var g = InputGenerator(10, "inf", inputs[i]!["id"]!.GetValue<string>());
            double total = 0;
            for (int pass = 0; pass < 3; pass++)
            {
                TorchSharp.torch.rand([1, 1, 1], generator: g).Dispose();
                float u = TorchSharp.torch.rand(1, generator: g).data<float>()[0];
                double dot = 0;
                for (int y = RegionNet.Lo; y < RegionNet.Hi; y++)
                    for (int x = RegionNet.Lo; x < RegionNet.Hi; x++)
                    {
                        float v = images[i * 784 + y * 28 + x];
                        dot += 20.0 / 64 * Math.Max(0, v) * (v - u);
                    }
                double drop = z - (20 * Math.Max(0, u) - 5);
                total += (dot - drop) * (dot - drop);
            }
            double want = total / 3, got = inputs[i]!["infidelity"]!.GetValue<double>();
            Assert.True(Math.Abs(got - want) <= 1e-4 * Math.Abs(want) + 1e-6, $"inf[{i}]: {got} against {want}");
        }
        Assert.Equal(Values(r, "min1", "infidelity"), Values(r, "min5", "infidelity"));
    }

    [Fact]
    public void QuantusSensitivitiesAreTheMeanAndMaxOfTheRelativeMapChange()
    {
        // Gradient × input of the region CNN is e_p = ±c·relu(x_p) on the region R (c = 20/64), 0 elsewhere (the sign
        // of the explained class cancels in the ratio).
        // Each sample x' = x + u, u ~ U[−0.2, 0.2] per pixel (Quantus's batch_uniform_noise with lower_bound 0.2), gives
        // ‖e − e'‖_F / ‖e‖_F (Quantus's difference and fro_norm); avg-sensitivity takes the mean over samples,
        // max-sensitivity the max. With normalise each map is first divided by its max |·|. The draws are the step's.
        var (r, images) = SeededRegionRun(7, 17, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: avg, uses: avg-sensitivity, with: { of: gxi, samples: 4 } }
              - { id: max, uses: max-sensitivity, with: { of: gxi, samples: 4 } }
              - { id: maxn, uses: max-sensitivity, with: { of: gxi, samples: 4, normalise: true, abs: true } }
              - { id: maxi, uses: max-sensitivity, with: { of: gxi, samples: 4, norm_numerator: linf, norm_denominator: l2 } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        double[] Map(Func<int, double> x, bool normalise)
        {
            var e = new double[784];
            for (int p = 0; p < 784; p++)
                if (InRegion(p)) e[p] = 20.0 / 64 * Math.Max(0, x(p));
            double m = e.Max(Math.Abs);
            return normalise ? e.Select(v => v / m).ToArray() : e;
        }
        foreach (var (step, file, max, normalise) in new[] { ("avg", "avg_sensitivity", false, false), ("max", "max_sensitivity", true, false), ("maxn", "max_sensitivity", true, true), ("maxi", "max_sensitivity", true, false) })
        {
            var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, file + ".json")))!["inputs"]!.AsArray();
            for (int i = 0; i < 3; i++)
            {
                using var g = InputGenerator(7, step, inputs[i]!["id"]!.GetValue<string>());
                var e = Map(p => images[i * 784 + p], normalise);
                var ratios = new List<double>();
                for (int j = 0; j < 4; j++)
                {
                    var u = TorchSharp.torch.rand([1, 1, 28, 28], generator: g).data<float>().ToArray();
                    var es = Map(p => images[i * 784 + p] + (float)(u[p] * 0.4 - 0.2), normalise);
                    double numerator = step == "maxi" ? e.Zip(es, (a, b) => Math.Abs(a - b)).Max() : Math.Sqrt(e.Zip(es, (a, b) => (a - b) * (a - b)).Sum());
                    ratios.Add(numerator / Math.Sqrt(e.Sum(v => v * v)));
                }
                double want = max ? ratios.Max() : ratios.Average(), got = inputs[i]!["value"]!.GetValue<double>();
                Assert.True(Math.Abs(got - want) <= 1e-4 * Math.Abs(want) + 1e-7, $"{step}[{i}]: {got} against {want}");
            }
        }
        // The maps differ between the samples (the noise reaches the region), and the max exceeds the mean.
        Assert.True(Env.Metric(r, "max", "max_sensitivity_mean") > Env.Metric(r, "avg", "avg_sensitivity_mean") * 1.01);
    }

    [Fact]
    public void AnInputWhoseTopClassChangesUnderNoiseScoresNaNWhenAsked()
    {
        // Region means close to the decision boundary (z = 20·mean_R(relu x) − 5 = 0 at 0.25): noise U[−0.2, 0.2] flips
        // the first input's class on some samples, never the third's. With nan_when_prediction_changes (Quantus's
        // return_nan_when_prediction_changes) an input is NaN exactly when one of its samples changed class (replayed
        // from the step's draws), else it keeps avg-sensitivity's value, which the run without the option gives.
        var images = new float[3 * 784];
        float[] levels = [0.2502f, 0.27f, 0.6f];
        for (int i = 0; i < 3; i++)
            for (int p = 0; p < 784; p++)
                if (InRegion(p))
                    images[i * 784 + p] = levels[i] + 0.002f * ((p * 7 + i) % 5 - 2);
        var r = RunOn(images, 4, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: nan, uses: avg-sensitivity, with: { of: gxi, samples: 6, nan_when_prediction_changes: true } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "nan", "avg_sensitivity.json")))!["inputs"]!.AsArray();
        var flips = new bool[3];
        for (int i = 0; i < 3; i++)
        {
            using var g = InputGenerator(4, "nan", inputs[i]!["id"]!.GetValue<string>());
            double z = RegionLogit(p => images[i * 784 + p]), sum = 0;
            for (int j = 0; j < 6; j++)
            {
                var u = TorchSharp.torch.rand([1, 1, 28, 28], generator: g).data<float>().ToArray();
                Func<int, double> xs = p => images[i * 784 + p] + (float)(u[p] * 0.4 - 0.2);
                flips[i] |= RegionLogit(xs) > 0 != z > 0;
                double num = 0, den = 0;
                for (int p = 0; p < 784; p++)
                    if (InRegion(p))
                    {
                        double e = Math.Max(0, images[i * 784 + p]), es = Math.Max(0, xs(p));
                        num += (e - es) * (e - es); den += e * e;
                    }
                sum += Math.Sqrt(num / den);
            }
            var node = inputs[i]!["value"];
            double got = node is null ? double.NaN : node.GetValueKind() == System.Text.Json.JsonValueKind.String
                ? double.Parse(node.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture) : node.GetValue<double>();
            if (flips[i]) Assert.True(double.IsNaN(got), $"input {i} changed class on a sample but scored {got}");
            else Assert.True(Math.Abs(got - sum / 6) <= 1e-4 * sum / 6, $"input {i}: {got} against {sum / 6}");
        }
        Assert.True(flips[0] && !flips[2], $"the boundary inputs should differ: {string.Join(", ", flips)}");
    }

    [Fact]
    public void RelativeOutputStabilityComparesProbabilitiesWhenAsked()
    {
        // Region means near the boundary (z ≈ 1, logits (z, −z)) keep the softmax away from saturation: a sample's value
        // is ‖u_R/x_R‖₂ / ‖p(x) − p(x')‖₂ with p = (σ(2z), 1 − σ(2z)), so the denominator is √2·|σ(2z) − σ(2z')|.
        var images = new float[3 * 784];
        for (int i = 0; i < 3; i++)
            for (int p = 0; p < 784; p++)
                if (InRegion(p))
                    images[i * 784 + p] = 0.28f + 0.02f * i + 0.003f * ((p * 3 + i) % 7 - 3);
        var r = RunOn(images, 6, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: ross, uses: relative-output-stability, with: { of: gxi, samples: 3, softmax: true } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        static double Sigmoid(double v) => 1 / (1 + Math.Exp(-v));
        var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "ross", "relative_output_stability.json")))!["inputs"]!.AsArray();
        for (int i = 0; i < 3; i++)
        {
            using var g = InputGenerator(6, "ross", inputs[i]!["id"]!.GetValue<string>());
            double best = double.NegativeInfinity;
            for (int j = 0; j < 3; j++)
            {
                var u = TorchSharp.torch.rand([1, 1, 28, 28], generator: g).data<float>().Select(v => v * 0.18 + 0.02).ToArray();
                double num = 0, sum = 0, sumU = 0;
                for (int p = 0; p < 784; p++)
                    if (InRegion(p))
                    {
                        double x = images[i * 784 + p];
                        num += u[p] / x * (u[p] / x); sum += x; sumU += u[p];
                    }
                double z = 20 * sum / 64 - 5, zs = 20 * (sum + sumU) / 64 - 5;
                best = Math.Max(best, Math.Sqrt(num) / (Math.Sqrt(2) * Math.Abs(Sigmoid(2 * z) - Sigmoid(2 * zs))));
            }
            double got = inputs[i]!["value"]!.GetValue<double>();
            Assert.True(Math.Abs(got - best) <= 1e-4 * Math.Abs(best), $"ross[{i}]: {got} against {best}");
        }
    }

    [Fact]
    public void RobustnessIsZeroForAMapThatNoiseCannotChangeAndRandomLogitIsOneForAClassBlindMap()
    {
        // In its region the model is linear in positive pixels: the signed gradient is the same for every noisy copy.
        string[] ids = ["avg-sensitivity", "local-lipschitz", "relative-input-stability", "relative-output-stability"];
        var steps = string.Join("\n", ids.SelectMany(id => new[] { "sal", "rnd" }.Select(m => $"  - {{ id: {m}-{id}, uses: {id}, with: {{ of: {m}, samples: 5 }} }}")))
            + "\n  - { id: sal-rl, uses: random-logit, with: { of: sal } }\n  - { id: edges-rl, uses: random-logit, with: { of: edges } }"
            + "\n  - { id: sal-rrs, uses: relative-representation-stability, with: { of: sal, samples: 3, layer: relu } }"
            + "\n  - { id: rnd-rrs, uses: relative-representation-stability, with: { of: rnd, samples: 3, layer: relu } }";
        var r = RegionRun(steps, 4);
        Assert.True(r.ExitCode == 0, Failures(r));
        foreach (var id in ids)
        {
            var key = id.Replace('-', '_') + "_mean";
            Assert.True(Env.Metric(r, $"sal-{id}", key) < 1e-9, $"{id}: {Env.Metric(r, $"sal-{id}", key)}");
            // (relative-input-stability divides by the relative input change, which the zero background makes huge)
            Assert.True(Env.Metric(r, $"rnd-{id}", key) > (id == "relative-input-stability" ? 1e-3 : 0.1), $"{id} of random maps: {Env.Metric(r, $"rnd-{id}", key)}");
        }
        Assert.True(Env.Metric(r, "sal-rrs", "relative_representation_stability_mean") < 1e-9);
        Assert.True(Env.Metric(r, "rnd-rrs", "relative_representation_stability_mean") > 1e-3);
        // The Sobel map ignores the class: identical maps (SSIM 1). Saliency for the other logit is the negated map.
        Assert.Equal(1.0, Env.Metric(r, "edges-rl", "random_logit_mean"), 1e-9);
        Assert.True(Env.Metric(r, "sal-rl", "random_logit_mean") < 0);
    }

    [Fact]
    public void ANegativeLowerBoundGivesTwoSidedUniformNoise()
    {
        // U[lower_bound, radius] with lower_bound = −radius is the two-sided U[−r, r] (the same draws); the relative
        // stabilities (one-sided by default, 0.02..0.2) can then take Quantus's upper_bound=None, U[−0.02, 0.02].
        // (Draws are seeded per step and input: the same step id in two runs.)
        var sym = RegionRun("""
              - { id: as, uses: avg-sensitivity, with: { of: edges, samples: 3, radius: 0.1 } }
              - { id: ris, uses: relative-input-stability, with: { of: edges, samples: 3 } }
            """, 4);
        var neg = RegionRun("""
              - { id: as, uses: avg-sensitivity, with: { of: edges, samples: 3, radius: 0.1, lower_bound: -0.1 } }
              - { id: ris, uses: relative-input-stability, with: { of: edges, samples: 3, radius: 0.02, lower_bound: -0.02 } }
            """, 4);
        Assert.True(sym.ExitCode == 0 && neg.ExitCode == 0, Failures(sym) + Failures(neg));
        Assert.Equal(Values(sym, "as", "avg_sensitivity"), Values(neg, "as", "avg_sensitivity"));
        Assert.NotEqual(Values(sym, "ris", "relative_input_stability"), Values(neg, "ris", "relative_input_stability"));
    }

    [Fact]
    public void SensitivitiesOfAMapOfZerosAreUndefinedNotPerfect()
    {
        // ‖Φ(x) − Φ(x')‖ / ‖Φ(x)‖ with Φ ≡ 0 is 0/0 in every sample: Quantus divides unguarded (NaN); a guard on the
        // denominator gave 0, the best score, to a method that explains nothing.
        var r = RegionRun("""
              - { id: z, uses: zero-map }
              - { id: avg, uses: avg-sensitivity, with: { of: z, samples: 3 } }
              - { id: max, uses: max-sensitivity, with: { of: z, samples: 3 } }
            """, 4);
        Assert.True(r.ExitCode == 0, Failures(r));
        Assert.All(Values(r, "avg", "avg_sensitivity"), v => Assert.True(double.IsNaN(v), $"avg-sensitivity {v}"));
        Assert.All(Values(r, "max", "max_sensitivity"), v => Assert.True(double.IsNaN(v), $"max-sensitivity {v}"));
    }

    [Fact]
    public void RandomDrawsAreSeededPerInputSoBatchingDoesNotChangeTheNumbers()
    {
        const string steps = """
              - { id: fc, uses: faithfulness-correlation, with: { of: edges, runs: 10, subset_size: 50 } }
              - { id: rp, uses: region-perturbation, with: { of: sal, patch: 4, regions: 8 } }
              - { id: as, uses: avg-sensitivity, with: { of: edges, samples: 3 } }
              - { id: ll, uses: local-lipschitz, with: { of: edges, samples: 3, micro_batch: 2 } }
              - { id: rl, uses: random-logit, with: { of: sal } }
            """;
        var a = RegionRun(steps, 4);
        var b = RegionRun(steps, 3);
        Assert.True(a.ExitCode == 0 && b.ExitCode == 0, Failures(a) + Failures(b));
        foreach (var (step, key) in new[] { ("fc", "faithfulness_correlation"), ("rp", "region_perturbation"), ("as", "avg_sensitivity"), ("ll", "local_lipschitz"), ("rl", "random_logit") })
        {
            Assert.Equal(Values(a, step, key), Values(b, step, key));
            Assert.Contains(Values(a, step, key), v => v != 0);
        }
    }
}
