using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Options of <c>shapley-sampling</c>.</summary>
public sealed record ShapleySamplingOptions : FeatureOptions
{
    /// <summary>Permutations per input.</summary>
    [Range(1, 100_000), Description("feature permutations per input (Captum's n_samples, default 25); each costs M forwards of one copy")]
    public int Samples { get; init; } = 25;
    /// <summary>Permutations from a file.</summary>
    [FilePath, Description("a .npy S×M whose rows are permutations of 0..M−1, used for every input instead of the seeded draws")]
    public string? PermutationsFile { get; init; }
    /// <summary>Exact Shapley values (Captum's ShapleyValues).</summary>
    [Description("the exact Shapley values, Captum's ShapleyValues (every permutation): each of the 2^M coalitions scored once, φ_i = Σ_S |S|!(M−|S|−1)!/M! · (v(S ∪ i) − v(S)); at most 16 features (a coarser cell or a feature_mask); samples is not used")]
    public bool Exact { get; init; }
}

/// <summary>Shapley value sampling (Castro et al. 2009; Captum <c>ShapleyValueSampling</c>): for each permutation of
/// the features, start from the baseline and add the features in that order; each feature gets the score change it
/// caused, averaged over the permutations. Seeded draws per input: permutation s = argsort of rand(S, M) row s.
/// The prefixes of the permutations are evaluated in batched forwards, a chunk of permutations at a time.</summary>
public sealed class ShapleySampling : AttributionAnalysis<ShapleySamplingOptions>, ITakesBaseline
{
    /// <summary>Prefix-mask entries (K permutations × M prefixes × M features) a chunk of permutations may span.</summary>
    const long ChunkEntries = 16L << 20;

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    /// <inheritdoc/>
    public override string ArtifactName => "shapley-sampling";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(ShapleySamplingOptions options, AnalysisValidationContext context)
    {
        foreach (var e in Features.SegmentErrors(options, ArtifactName)) yield return e;
        if (options.Exact && options.PermutationsFile is not null) yield return "exact: true takes every permutation; leave out permutations_file";
    }

    /// <summary>Most features of <c>exact: true</c> (2^16 = 65,536 coalitions, one forward of one copy each).</summary>
    public const int MaxExactFeatures = 16;

    /// <inheritdoc/>
    public override AttributionResult Attribute(ShapleySamplingOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0], c = x.shape[1];
        var (_, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        var fill = Perturbation.BaselineOrFile(input, options.BaselineFile, options.BaselineFolder, options.Baseline, options.Cell / 2.0, options.BaselineValue);
        var file = options.PermutationsFile is { } f ? Npy.Read(f).ToTensor().to(ScalarType.Int64) : null;
        var maps = new List<Tensor>();
        for (int i = 0; i < n; i++)
        {
            using var scope = NewDisposeScope();
            var labels = Features.Labels(options, ctx, x, i);
            long m = Features.Count(labels);
            if (file is not null && (file.dim() != 2 || file.shape[0] == 0 || file.shape[1] != m || !(file.sort(1).Values == arange(m)).all().item<bool>()))
                throw new LoupeException($"{options.PermutationsFile}: permutations_file must be S×{m} (S ≥ 1) with each row a permutation of 0..{m - 1} (the image has {m} features)");
            var xi = x[i].unsqueeze(0);
            var fi = fill[i].unsqueeze(0);
            var rows = selection.Rows([i]);
            if (options.Exact)
            {
                maps.Add(scope.MoveToOuter(Features.ToPixels(Exact(options, ctx, xi, fi, labels, m, rows), labels, c)));
                continue;
            }
            long s = file?.shape[0] ?? options.Samples;
            using var g = file is null ? new Generator(InputSeeds.For(ctx.Seed, input.Ids?[i] ?? $"#{i}")) : null;
            // The empty coalition's score, then the permutations a chunk at a time: a chunk's K·M prefix coalitions are
            // built pass by pass from its positions (never the S·M×M masks at once: 100,000 permutations of 784 pixels
            // would be 61 GB), and the run's cancellation is checked between chunks and passes.
            var empty = Features.CoalitionScores(ctx, xi, fi, labels, zeros(1, m, dtype: ScalarType.Bool), rows, options.MicroBatch);
            long perChunk = Math.Clamp(ChunkEntries / Math.Max(1, m * m), 1, s);
            var total = zeros(m);
            for (long s0 = 0; s0 < s; s0 += perChunk)
            {
                using var chunkScope = NewDisposeScope();
                ctx.Cancellation.ThrowIfCancellationRequested();
                long k = Math.Min(perChunk, s - s0);
                // Seeded draws: rows s0.. of rand(S, M), drawn chunk after chunk from the input's generator (the same
                // numbers as one draw of all S rows).
                var perms = file is not null ? file.narrow(0, s0, k) : rand([k, m], generator: g).argsort(1);
                // Prefix t (1..M) of permutation j holds the features at positions < t.
                var pos = perms.argsort(1);
                var y = Perturbation.MaskedScores(ctx, xi, fi, k * m, (p0, p) =>
                {
                    var r = arange(p0, p0 + p);
                    var prefix = pos.index_select(0, r.div(m, rounding_mode: RoundingMode.floor)) < (r.remainder(m) + 1).unsqueeze(1);
                    return Features.Absent(prefix, labels);
                }, rows, options.MicroBatch)[0].view(k, m);
                var gain = y - cat([empty.expand(k, 1), y[.., ..^1]], 1);                   // change when perms[j, t] is added
                total.index_add_(0, perms.flatten(), gain.flatten(), 1);
            }
            maps.Add(scope.MoveToOuter(Features.ToPixels(total / s, labels, c)));
        }
        return new AttributionResult(cat(maps, 0).contiguous(), selection);
    }

    /// <summary>The exact Shapley values of one input's M features (float32, M): every coalition S (bit f of its index:
    /// feature f present, the others at the fill) scored once in batched forwards, then
    /// φ_f = Σ_{S ∌ f} |S|!(M − |S| − 1)!/M! · (v(S ∪ {f}) − v(S)) in float64 — what Captum's ShapleyValues averages
    /// over all M! permutations, without repeating a coalition.</summary>
    static Tensor Exact(ShapleySamplingOptions options, IAnalysisContext ctx, Tensor xi, Tensor fi, Tensor labels, long m, TargetSelection rows)
    {
        if (m > MaxExactFeatures)
            throw new LoupeException($"shapley-sampling: exact: true scores all 2^M coalitions; this image has M = {m} features (at most {MaxExactFeatures}: a larger cell or a feature_mask with fewer values)");
        long count = 1L << (int)m;
        var bits = arange(m);
        var v = Perturbation.MaskedScores(ctx, xi, fi, count, (p0, p) =>
        {
            var present = arange(p0, p0 + p).unsqueeze(1).bitwise_right_shift(bits).bitwise_and(1).to(ScalarType.Float32);   // p×M
            return Features.Absent(present, labels);
        }, rows, options.MicroBatch)[0].to(ScalarType.Float64).ToArray<double>();
        var weight = new double[m];   // |S|!(M − |S| − 1)!/M! for |S| = 0..M−1
        for (int k = 0; k < m; k++) weight[k] = Math.Exp(LogFactorial(k) + LogFactorial((int)m - k - 1) - LogFactorial((int)m));
        var phi = new double[m];
        for (int f = 0; f < m; f++)
        {
            long bit = 1L << f;
            double sum = 0;
            for (long set = 0; set < count; set++)
                if ((set & bit) == 0) sum += weight[System.Numerics.BitOperations.PopCount((ulong)set)] * (v[set | bit] - v[set]);
            phi[f] = sum;
        }
        return tensor(phi).to(ScalarType.Float32);
    }

    static double LogFactorial(int k)
    {
        double s = 0;
        for (int i = 2; i <= k; i++) s += Math.Log(i);
        return s;
    }
}

/// <summary>Options of <c>feature-permutation</c>.</summary>
public sealed record FeaturePermutationOptions : FeatureOptions
{
    /// <summary>Permutations from a file.</summary>
    [FilePath, Description("a .npy M×N: row f permutes the N inputs of a batch for feature f (instead of the seeded draws; batches must have N inputs)")]
    public string? PermutationsFile { get; init; }
}

/// <summary>Permutation feature importance (Breiman 2001; Captum <c>FeaturePermutation</c>): feature f of each input is
/// replaced by the same feature of another input of the batch (one random permutation per feature, never the
/// identity), and gets score(x) − score(permuted). The batch is the population, so batches need 2+ inputs and the
/// features must be shared (grid cells or a feature mask file). Seeded draws per batch: a generator from the step seed
/// and the batch's input ids joined by newlines; permutation f = argsort of rand(N), redrawn while it is the identity.</summary>
public sealed class FeaturePermutation : AttributionAnalysis<FeaturePermutationOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    /// <inheritdoc/>
    public override string ArtifactName => "feature-permutation";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(FeaturePermutationOptions options, AnalysisValidationContext context)
    {
        foreach (var e in Features.SegmentErrors(options, ArtifactName)) yield return e;
        if (options.Baseline != Fill.Zero || options.BaselineValue is not null || options.BaselineFile is not null || options.BaselineFolder is not null)
            yield return "feature-permutation fills nothing (it permutes each feature across the batch, Captum's FeaturePermutation): leave out 'fill', 'baseline_file' and 'baseline_folder'";
        if (options.Segments == FeatureSegments.Superpixels && options.FeatureMask is null)
            yield return "segments: superpixels differ from image to image; feature-permutation needs features shared by the batch (grid or feature_mask)";
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(FeaturePermutationOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var x = input.Input;
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        if (n < 2) throw new LoupeException("feature-permutation permutes features across the inputs of a batch: set settings.batch_size to 2 or more (this batch has 1 input)");
        var (baseScores, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        var labels = Features.Labels(options, ctx, x, 0);
        long m = Features.Count(labels);
        Tensor perms;
        if (options.PermutationsFile is { } file)
        {
            perms = Npy.Read(file).ToTensor().to(ScalarType.Int64);
            if (perms.dim() != 2 || perms.shape[0] != m || perms.shape[1] != n || !(perms.sort(1).Values == arange(n)).all().item<bool>())
                throw new LoupeException($"{file}: permutations_file must be {m}×{n} (features × inputs of the batch), each row a permutation of 0..{n - 1}");
        }
        else
        {
            using var g = new Generator(InputSeeds.For(ctx.Seed, string.Join("\n", input.Ids ?? Enumerable.Range(0, (int)n).Select(i => $"#{i}"))));
            var identity = arange(n);
            perms = stack(Enumerable.Range(0, (int)m).Select(_ =>
            {
                var p = rand(n, generator: g).argsort();
                while ((p == identity).all().item<bool>()) p = rand(n, generator: g).argsort();
                return p;
            }).ToArray());
        }
        var flat = labels.flatten();
        long chunk = Math.Max(1, Explain.CopiesPerForward(ctx, x, options.MicroBatch) / n);
        var parts = new List<Tensor>();
        using (no_grad())
            for (long f0 = 0; f0 < m; f0 += chunk)
            {
                using var scope = NewDisposeScope();
                ctx.Cancellation.ThrowIfCancellationRequested();
                long p = Math.Min(chunk, m - f0);
                var mask = (flat.view(1, -1) == arange(f0, f0 + p).view(-1, 1)).to(ScalarType.Float32).view(1, p, Features.Planes(labels), h, w);
                var other = x.index_select(0, perms.narrow(0, f0, p).t().reshape(-1)).view(n, p, c, h, w);
                var copies = (x.unsqueeze(1) * (1 - mask) + other * mask).reshape(n * p, c, h, w);
                var sel = selection.Rows(Enumerable.Range(0, (int)n).SelectMany(i => Enumerable.Repeat(i, (int)p)).ToArray());
                var (_, capture, ti, _) = Explain.Forward(ctx.Model, ctx.Target, copies, [], forGradients: false, sel);
                using (capture) parts.Add(scope.MoveToOuter(baseScores.view(n, 1) - ctx.Target.Scores(ti, sel).view(n, p)));
            }
        var diff = cat(parts, 1);                                                               // N×M
        var map = diff.index_select(1, flat).view(n, Features.Planes(labels), h, w).expand(n, c, h, w).contiguous();
        return new AttributionResult(map, selection);
    }
}
