using Loupe.Abstractions.Toolkit;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary><c>irof</c> (Rieger &amp; Hansen 2020): the image is split into superpixels (scikit-image's SLIC on the
/// model's input, as Quantus calls it, <c>segments</c> / <c>compactness</c>; its felzenszwalb:
/// <c>segmentation: felzenszwalb</c>; or a grid of <c>cell</c> × <c>cell</c> squares), ranked by their mean
/// attribution and replaced cumulatively, most relevant first, by the baseline (by default the image mean; with
/// <c>score: quantus</c> Quantus's default "mean", which it takes of the array as perturbed so far: running-mean). With
/// p_k = f(x after k segments) / f(x) (class probability by default) and p_0 = 1, the score is the area over that curve
/// on [0, 1] (x = k / M, trapezoid): 1 − AUC. Quantus omits p_0 and returns M − Σ_trapezoid with dx = 1 (it removes
/// segments cumulatively too); Loupe keeps the paper's scale, the same for any M. Higher is better.</summary>
[ReadsBaseline, ReadsOptions(nameof(FaithfulnessOptions.Score), nameof(FaithfulnessOptions.Segmentation), nameof(FaithfulnessOptions.Segments), nameof(FaithfulnessOptions.Compactness), nameof(FaithfulnessOptions.Cell), nameof(FaithfulnessOptions.QuantusBatchSize))]
public sealed class Irof : FaithfulnessMetric
{
    /// <inheritdoc/>
    public override string Id => "irof";
    /// <inheritdoc/>
    public override bool HigherIsBetter => true;
    /// <inheritdoc/>
    protected override Fill DefaultFill => Fill.Mean;
    /// <summary>Quantus's IROF fills each segment with get_baseline_value("mean") of the array as perturbed so far (its
    /// perturbation is cumulative), so <c>score: quantus</c> defaults to running-mean; the paper's score keeps the image
    /// mean.</summary>
    protected override Fill DefaultFillWith(FaithfulnessOptions o) => o.Score == ScoreConvention.Quantus ? Fill.RunningMean : Fill.Mean;

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(FaithfulnessOptions o, AnalysisValidationContext context)
    {
        foreach (var e in base.ValidateMetric(o, context)) yield return e;
        if (o.Cell is not null && o.Segmentation != Segmentation.Slic)
            yield return "options 'cell' and 'segmentation' both choose the segments: set one of them";
    }

    /// <summary>Segment labels (H×W int64, 0..M−1) of row <paramref name="i"/>.</summary>
    static Tensor Segments(FaithfulnessOptions o, MetricBatch b, int i)
    {
        long h = b.X.shape[2], w = b.X.shape[3];
        if (o.Cell is { } c)
        {
            long gx = (w + c - 1) / c;
            return (arange(h).div(c, rounding_mode: RoundingMode.floor).view(-1, 1) * gx + arange(w).div(c, rounding_mode: RoundingMode.floor).view(1, -1)).contiguous();
        }
        // Quantus segments the model's input as it is given (slic rescales it by its global minimum and maximum;
        // felzenszwalb takes the values as they are).
        return o.Segmentation == Segmentation.Felzenszwalb ? Felzenszwalb.Segment(b.X[i]) : Slic.Segment(b.X[i], o.Segments, o.Compactness);
    }

    /// <inheritdoc/>
    protected override Tensor Of(FaithfulnessOptions o, MetricBatch b, Tensor a, Tensor baseline, bool softmax)
    {
        var counts = new long[b.N];
        var steps = new Tensor[b.N];
        for (int i = 0; i < b.N; i++)
        {
            var lab = Segments(o, b, i).flatten();
            long m = counts[i] = lab.max().item<long>() + 1;
            var size = zeros(m, dtype: ScalarType.Float64).index_add_(0, lab, ones(lab.shape[0], dtype: ScalarType.Float64), 1);
            var mean = zeros(m, dtype: ScalarType.Float64).index_add_(0, lab, a[i], 1) / size.clamp_min(1);
            var order = mean.sort(0, descending: true, stable: true).Indices;
            var rank = zeros_like(order).scatter_(0, order, arange(m, dtype: ScalarType.Int64));
            steps[i] = rank.index_select(0, lab);
        }
        long l = counts.Max();
        var segmentOf = stack(steps);
        // quantus_batch_size: Quantus's batch effects, per group of that many dataset rows.
        var groups = o.QuantusBatchSize is { } q ? b.QuantusGroups(q, Id) : null;
        var fill = o.FillOf(DefaultFillWith(o));
        if (groups is not null && fill is Fill.Min or Fill.Max or Fill.Mean) baseline = b.GroupBaseline(fill.Value, groups);
        var to = groups is not null && fill == Fill.RunningMean ? b.RunningMean(segmentOf, l, 0, groups) : CumulativeFill(o, b, baseline, segmentOf, l);
        var curve = Cumulative(b, segmentOf, l, b.X, to, softmax);   // N×L: point k−1 = after k segments
        var fx = b.Clean(softmax);
        var scores = new double[b.N];
        for (int i = 0; i < b.N; i++)
        {
            var p = curve[i].narrow(0, 0, counts[i]) / fx[i];
            if (o.Score == ScoreConvention.Quantus)
            {
                // M − np.trapz(p_1 … p_M, dx = 1); Quantus pads the curve with zeros to its batch's largest M, which
                // adds the last point's half.
                double trapz = counts[i] < 2 ? 0 : ((p.sum() - (p[0] + p[-1]) / 2).item<double>());
                if (groups is not null && counts[i] < Enumerable.Range(0, (int)b.N).Where(k => groups[k] == groups[i]).Max(k => counts[k]))
                    trapz += p[-1].item<double>() / 2;
                scores[i] = counts[i] - trapz;
            }
            else scores[i] = 1 - QualityFormulas.MeanTrapezoid(cat([ones(1, dtype: ScalarType.Float64), p]).unsqueeze(0)).item<double>();
        }
        return tensor(scores);
    }
}

/// <summary><c>road</c> (Rong et al. 2022; Quantus ROAD): for each of <c>percentages</c>, that share of the pixels
/// (Quantus: ⌊D·p/100⌋, most relevant first for <c>order: morf</c>, least relevant first for <c>lerf</c>; signed map
/// normalised by its max) is replaced by noisy linear imputation (<see cref="LinearImputation"/>, noise seeded per
/// input), and the point is 1 when the model still predicts the explained class. The score is the mean of the
/// points (the accuracy curve's mean; Quantus reports the curve averaged over inputs). MoRF: lower is better (the
/// class is lost quickly); LeRF: higher is better. Needs a class target. <c>quantus_batch_size</c> scores only the run's
/// first inputs, as Quantus 0.6's ROAD returns its first batch's accuracies.</summary>
[ReadsOptions(nameof(FaithfulnessOptions.Percentages), nameof(FaithfulnessOptions.Noise), nameof(FaithfulnessOptions.Order), nameof(FaithfulnessOptions.QuantusBatchSize))]
public sealed class Road : FaithfulnessMetric
{
    /// <inheritdoc/>
    public override string Id => "road";
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;
    /// <inheritdoc/>
    protected override bool HigherIsBetterWith(FaithfulnessOptions options) => options.Order == RegionOrder.Lerf;

    /// <inheritdoc/>
    protected override Tensor Of(FaithfulnessOptions o, MetricBatch b, Tensor a, Tensor baseline, bool softmax)
    {
        var classes = b.Selection.Classes ?? throw new LoupeException("road: the target is not a class (ROAD scores whether the predicted class survives; use a class target such as top-1)");
        if (PercentageErrors(o).FirstOrDefault() is { } error) throw new LoupeException("road: " + error);
        // Quantus 0.6 scores only the first batch of a call: with quantus_batch_size q, the data's rows from the q-th on (under
        // --shard too: batch starts count from the data's first row) are left out (NaN: not in the means), and a batch wholly past them is not imputed at all.
        long kept = o.QuantusBatchSize is { } q ? Math.Clamp(q - b.Start, 0, b.N) : b.N;
        var axis = new CurveAxis(o.Percentages, $"pixels imputed, % of the image ({(o.Order == RegionOrder.Morf ? "most" : "least")} relevant first)",
            "explained class still predicted", [.. CurvePoints(o)!]);
        if (kept == 0)
        {
            b.RecordCurves(full(b.N, o.Percentages.Length, double.NaN, dtype: ScalarType.Float64), null, axis);
            return full(b.N, double.NaN, dtype: ScalarType.Float64);
        }
        var x = b.X;
        long n = b.N, c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var rank = PixelSteps(o with { FeaturesInStep = 1 }, b, a, o.Order == RegionOrder.Morf, out _);
        long points = o.Percentages.Length;
        var limits = o.Percentages.Select(p => (long)Math.Floor(b.D * p / 100.0 + 1e-9)).ToArray();
        // One noise draw per input, of the values used only (C per imputed pixel and point; the same numbers whatever the
        // chunking below), filled in place from the input's generator; the inputs' rows on libtorch's threads (each row
        // draws from its own generator: the same numbers in any order).
        var noise = empty([n, LinearImputation.NoiseLength(limits, c, h * w)]);
        TensorThreads.For((int)n, i =>
        {
            using var row = noise[i];
            row.normal_(0, 1, generator: b.Generators[i]);
        });
        // As few forward passes as the memory budget allows, of even sizes over the copies (input by input, point by
        // point: 40 copies in passes of at most 32 go as 20 + 20, not as whole points 24 + 16, ~5 % faster on resnet18,
        // `Loupe.Benchmarks.dll --road-large 224 5 chunks`). The points are imputed together, as many as a quarter of
        // the budget holds as image copies: the solver then keeps its working set in cache, not evicted by a forward
        // between two of its calls (ROAD at 224×224 on resnet18 b8: 255–273 ms imputing against 275–295 ms when each
        // pass imputed its own points).
        long perForward = Explain.CopiesPerForward(b.Context, x, o.MicroBatch);
        long copyBytes = Math.Max(1, n * c * h * w * x.element_size());
        long group = Math.Max(1, b.Context.MemoryBudgetBytes / 4 / copyBytes);
        var target = tensor(classes);
        var hits = new List<Tensor>();
        for (long g0 = 0; g0 < points; g0 += group)
        {
            using var groupScope = NewDisposeScope();
            b.Context.Cancellation.ThrowIfCancellationRequested();
            long gk = Math.Min(group, points - g0), copies = n * gk;
            var grouped = limits[(int)g0..(int)(g0 + gk)];
            long from = LinearImputation.NoiseLength(limits[..(int)g0], c, h * w);
            var imputed = LinearImputation.Noisy(x, rank, grouped, noise.narrow(1, from, LinearImputation.NoiseLength(grouped, c, h * w)), o.Noise);
            long pass = Explain.EvenPasses(copies, perForward);
            var found = new List<Tensor>();
            for (long r0 = 0; r0 < copies; r0 += pass)
            {
                using var scope = NewDisposeScope();
                b.Context.Cancellation.ThrowIfCancellationRequested();
                long k = Math.Min(pass, copies - r0);
                var rows = Enumerable.Range((int)r0, (int)k).Select(r => r / (int)gk).ToArray();   // copy r: input r / gk
                // Only the predicted class is read: the model's output, without the target's capture and scores.
                Tensor logits;
                using (no_grad())
                using (SideInputs.ForRows(b.Context.Model, rows))
                    logits = b.Context.Model.Forward(imputed.narrow(0, r0, k));
                found.Add(scope.MoveToOuter(Maps.TopClass(logits, Id) == target.index_select(0, tensor(rows.Select(i => (long)i).ToArray()))));
            }
            hits.Add(groupScope.MoveToOuter(cat(found, 0).view(n, gk).to(ScalarType.Float64)));
        }
        var curve = cat(hits, 1);
        if (kept < n) curve = cat([curve.narrow(0, 0, kept), full(n - kept, points, double.NaN, dtype: ScalarType.Float64)], 0);
        b.RecordCurves(curve, null, axis);
        return curve.mean([1]);
    }

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(FaithfulnessOptions o, AnalysisValidationContext context)
    {
        foreach (var e in base.ValidateMetric(o, context)) yield return e;
        foreach (var e in PercentageErrors(o)) yield return e;
        if (o.Order == RegionOrder.Random) yield return "option 'order': road takes morf or lerf";
    }

    /// <inheritdoc/>
    protected override bool UsesBaseline => false;

    /// <inheritdoc/>
    protected override string? ComparesPredictedClass(FaithfulnessOptions options) => "";

    static IEnumerable<string> PercentageErrors(FaithfulnessOptions o)
    {
        if (o.Percentages.Length == 0 || o.Percentages.Any(p => p is < 0 or > 100 || double.IsNaN(p))) yield return "option 'percentages' must list values in [0, 100]";
        else if (o.Percentages.Distinct().Count() != o.Percentages.Length) yield return $"option 'percentages' lists {o.Percentages.GroupBy(p => p).First(g => g.Count() > 1).Key} twice (each is one curve point and one series)";
    }

    /// <summary>One series per percentage, <c>road_p10</c> … (<c>p2_5</c> for 2.5): their means are Quantus's ROAD result,
    /// the accuracy at each percentage.</summary>
    protected override IReadOnlyList<string>? CurvePoints(FaithfulnessOptions o) =>
        [.. o.Percentages.Select(p => "p" + p.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture).Replace('.', '_'))];
}
