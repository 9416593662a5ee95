namespace Loupe.Evaluation.Tests;

/// <summary>Quantus normalises the maps of a call together (normalise_by_max over its whole a_batch, and over each batch
/// of the maps it explains itself), so its scale-dependent metrics depend on the other inputs: <c>normalise_over:
/// batch</c> gives Quantus's numbers for one call per batch of the run (fixture cases <c>*_batch</c>: one call on the 8
/// inputs; RandomLogit one call per batch of 3), and the default (each map on its own) its numbers for calls of one
/// input (the other fixtures).</summary>
public partial class QuantusReferenceTests
{
    [Fact]
    public void NormalisingOverTheBatchGivesQuantusBatchNumbers()
    {
        var r = OnDemoCnn("inputs.npy", 8, $$"""
              - { id: m, uses: fixture-map, with: { path: {{Fixture("maps.npy")}} } }
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: ec, uses: effective-complexity, with: { of: m, normalise_over: batch } }
              - { id: ec05, uses: effective-complexity, with: { of: m, eps: 0.05, normalise_over: batch } }
              - { id: ec05_map, uses: effective-complexity, with: { of: m, eps: 0.05 } }
              - { id: ns, uses: non-sensitivity, with: { of: m, normalise_over: batch } }
              - { id: cont, uses: continuity, with: { of: sal, sweep: quantus, normalise_over: batch } }
              - { id: cont_map, uses: continuity, with: { of: sal, sweep: quantus } }
              - { id: lips, uses: local-lipschitz, with: { of: sal, normalise_over: batch } }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        var m = new Mismatches();
        m.Close("effective-complexity, batch", Want("effective_complexity_batch"), Values(r, "ec", "effective_complexity"), 0);
        m.Close("effective-complexity eps 0.05, batch", Want("effective_complexity_batch_eps"), Values(r, "ec05", "effective_complexity"), 0);
        m.Counts("non-sensitivity, batch", Want("non_sensitivity_batch"), Values(r, "ns", "non_sensitivity"), QuantusReferenceTests.FlipSlack);
        m.Close("continuity, batch", Want("continuity_batch"), Values(r, "cont", "continuity"), 1e-4);
        // Quantus's noise is numpy's: within two seeds' spread (as the per-input test of local-lipschitz).
        m.Spread("local-lipschitz, batch", Want("local_lipschitz_batch"), Want("local_lipschitz_batch_seed1"), Values(r, "lips", "local_lipschitz"), 0.12);
        m.Check();
        // Each map on its own gives other numbers on these maps, whose maxima differ.
        Assert.NotEqual(Want("effective_complexity_batch_eps"), Values(r, "ec05_map", "effective_complexity"));
        Assert.Contains(Values(r, "cont_map", "continuity").Zip(Want("continuity_batch")), p => Math.Abs(p.First - p.Second) > 0.1);
    }

    [Fact]
    public void RandomLogitWithSsimNormalisedOverQuantusBatchesGivesQuantusNumbers()
    {
        var r = OnDemoCnn("inputs.npy", 3, """
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: rl, uses: random-logit, with: { of: sal, draw: quantus, quantus_batch_size: 3, similarity: flat-ssim, normalise_over: batch } }
              - { id: rl_map, uses: random-logit, with: { of: sal, draw: quantus, quantus_batch_size: 3, similarity: flat-ssim } }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        var m = new Mismatches();
        m.Close("random-logit, flat SSIM over batches of 3", Want("random_logit_ssim_batch"), Values(r, "rl", "random_logit"), 1e-5);
        m.Check();
        Assert.Contains(Values(r, "rl_map", "random_logit").Zip(Want("random_logit_ssim_batch")), p => Math.Abs(p.First - p.Second) > 1e-3);
    }

    [Fact]
    public void IrofOverQuantusBatchesGivesQuantusNumbers()
    {
        // Quantus's IROF takes "mean" and "black" over its whole batch's array and pads each curve with zeros to the
        // batch's largest segment count: quantus_batch_size 8 (one batch) and 4 (two, inside a run batch of 8; on
        // felzenszwalb segments, 4 to 12 per input, so that curves are padded).
        var r = OnDemoCnn("inputs.npy", 8, $$"""
              - { id: m, uses: fixture-map, with: { path: {{Fixture("maps.npy")}} } }
              - { id: irof8, uses: irof, with: { of: m, score: quantus, baseline: running-mean, quantus_batch_size: 8 } }
              - { id: irof4, uses: irof, with: { of: m, score: quantus, baseline: min, quantus_batch_size: 4, segmentation: felzenszwalb } }
              - { id: irof1, uses: irof, with: { of: m, score: quantus, baseline: running-mean } }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        var m = new Mismatches();
        // Map 7, a symmetric blob, has segments of equal mean that numpy's unstable argsort may take in another order.
        m.Close("irof, one batch of 8", Want("irof_batch"), Values(r, "irof8", "irof"), 1e-4, rows: 7);
        m.Close("irof black, batches of 4", Want("irof_batch4_black"), Values(r, "irof4", "irof"), 1e-4, rows: 7);
        m.Check();
        // Each input alone gives other numbers (Quantus's per-input case), and groups that fit the run's batches
        // leave no warning.
        Assert.Contains(Values(r, "irof1", "irof").Zip(Want("irof_batch")), p => Math.Abs(p.First - p.Second) > 0.1);
        Assert.DoesNotContain(Loupe.Testing.HostRuns.Warnings(r, "irof8").Concat(Loupe.Testing.HostRuns.Warnings(r, "irof4")), w => w.Contains("quantus_batch_size"));
    }

    [Fact]
    public void IrofGroupsCutByTheRunsBatchesWarnOnce()
    {
        var r = OnDemoCnn("inputs.npy", 3, $$"""
              - { id: m, uses: fixture-map, with: { path: {{Fixture("maps.npy")}} } }
              - { id: irof4, uses: irof, with: { of: m, score: quantus, baseline: min, quantus_batch_size: 4 } }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        Assert.Single(Loupe.Testing.HostRuns.Warnings(r, "irof4"), w => w.Contains("quantus_batch_size 4") && w.Contains("multiple of 4"));
        var bad = OnDemoCnn("inputs.npy", 8, $$"""
              - { id: m, uses: fixture-map, with: { path: {{Fixture("maps.npy")}} } }
              - { id: pf, uses: pixel-flipping, with: { of: m, quantus_batch_size: 4 } }
            """);
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("quantus_batch_size' applies to irof, road and sensitivity-n, not to pixel-flipping", QualityTests.Failures(bad));
    }
}
