using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using System.Globalization;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Targets;

/// <summary>Options of <c>box</c>.</summary>
public sealed record BoxOptions
{
    /// <summary>Class.</summary>
    [Description("the detection's class (index, or a name from the model's labels); with no box: the top-scoring detection of this class")]
    public string? Class { get; init; }

    /// <summary>Box.</summary>
    [Description("the box to explain, [x1, y1, x2, y2] in input pixels (needs 'class'); default: each input's top-scoring detection")]
    public double[]? Box { get; init; }

    /// <summary>Every detection above a score.</summary>
    [Range(0.0, 1.0), Description("explain every detection scoring at least this (of 'class' when given), chosen on the input, their scores summed: pytorch-grad-cam's FasterRCNNBoxScoreTarget over a list of boxes and labels, as its tutorial builds it from the detections above a confidence; default: one detection")]
    public double? AllAbove { get; init; }

    /// <summary>IoU threshold.</summary>
    [Range(0.0, 1.0), Description("a detection matches when its IoU with the box is above this (pytorch-grad-cam: 0.5)")]
    public double IouThreshold { get; init; } = 0.5;

    /// <summary>Score threshold.</summary>
    [Range(0.0, 1.0), Description("candidates scoring below this are not detections (torchvision's box_score_thresh: 0.05)")]
    public double MinScore { get; init; } = 0.05;

    /// <summary>Boxes value.</summary>
    [Description("model value holding the boxes, N×D×4 (x1, y1, x2, y2 in input pixels)")]
    public string Boxes { get; init; } = "boxes";

    /// <summary>Scores value.</summary>
    [Description("model value holding the detection scores, N×D")]
    public string Scores { get; init; } = "scores";

    /// <summary>Labels value.</summary>
    [Description("model value holding the detection classes, N×D (when the model has none: the arg-max of 'probabilities')")]
    public string Labels { get; init; } = "labels";

    /// <summary>Class probabilities (D-RISE).</summary>
    [Description("model value with the class probabilities N×D×C, for d-rise (default: 'probs' when the model has it; else one-hot labels)")]
    public string? Probabilities { get; init; }

    /// <summary>Objectness (D-RISE).</summary>
    [Description("model value with the objectness N×D, for d-rise (default: 'objectness' when the model has it; else the scores)")]
    public string? Objectness { get; init; }
}

/// <summary>Object detection: explain one detection (or, with <c>all_above</c>, every detection above a score, their
/// scores summed), as pytorch-grad-cam's FasterRCNNBoxScoreTarget. Among the
/// candidates scoring at least <c>min_score</c>, the one whose box overlaps the target box most is found on every
/// forward pass; when its IoU is above the threshold and its label is the target class the score is IoU + its score,
/// else 0. The target box and class are given, or each input's top-scoring detection (chosen once, on the unperturbed
/// input). Gradients go through the matched candidate's score and box coordinates; the matching itself (arg-max over
/// IoU, thresholds, labels) is piecewise constant, as NMS or TopK in a graph would be. Overlays draw the box.</summary>
public sealed class BoxTargetFactory : TargetFactory<BoxOptions>
{
    /// <inheritdoc/>
    public override ITarget Create(BoxOptions o, TargetContext context)
    {
        foreach (var (name, what) in new[] { (o.Boxes, "boxes"), (o.Scores, "scores") })
            if (!context.Layers.Contains(name))
                throw new LoupeException($"box: the model has no value '{name}' for the {what} (option '{what}'){Suggest.DidYouMean(name, context.Layers)}");
        string? Optional(string? given, string fallback, string option)
        {
            if (given is null) return context.Layers.Contains(fallback) ? fallback : null;
            if (!context.Layers.Contains(given))
                throw new LoupeException($"box: the model has no value '{given}' (option '{option}'){Suggest.DidYouMean(given, context.Layers)}");
            return given;
        }
        var probs = Optional(o.Probabilities, "probs", "probabilities");
        var objectness = Optional(o.Objectness, "objectness", "objectness");
        // Integer values (ArgMax labels) are not layers of every backend (onnx-runtime captures floats): then the labels
        // are the arg-max of the class probabilities.
        string? labels = context.Layers.Contains(o.Labels) ? o.Labels : probs is not null ? null
            : throw new LoupeException($"box: the model has no value '{o.Labels}' for the labels (option 'labels') and no class probabilities (option 'probabilities'){Suggest.DidYouMean(o.Labels, context.Layers)}");
        long? cls = null;
        if (o.Class is { } c)
            cls = context.Labels.Count > 0 ? ClassTargetFactory.Resolve(c, context.Labels, context.Labels.Count)
                : long.TryParse(c, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v >= 0 ? v
                : throw new LoupeException($"box: class '{c}' is not a non-negative index and the model has no labels (set model.labels)");
        if (o.Box is { } b)
        {
            if (b.Length != 4 || b[2] <= b[0] || b[3] <= b[1]) throw new LoupeException($"box: box must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1, got [{string.Join(", ", b)}]");
            if (cls is null) throw new LoupeException("box: a given box needs its 'class'");
            if (o.AllAbove is not null) throw new LoupeException("box: give 'box' (one detection) or 'all_above' (every detection above a score), not both");
        }
        return new Box(o, cls, labels, probs, objectness, context.Labels);
    }

    /// <summary>The detection a row explains.</summary>
    sealed record Detection(float[] Box, long Class);

    /// <summary>IoU of boxes <paramref name="a"/> and <paramref name="b"/> (…×4, x1 y1 x2 y2), broadcast.</summary>
    internal static Tensor Iou(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var lt = maximum(a[TensorIndex.Ellipsis, ..2], b[TensorIndex.Ellipsis, ..2]);
        var rb = minimum(a[TensorIndex.Ellipsis, 2..], b[TensorIndex.Ellipsis, 2..]);
        var wh = (rb - lt).clamp_min(0);
        var inter = wh[TensorIndex.Ellipsis, 0] * wh[TensorIndex.Ellipsis, 1];
        return scope.MoveToOuter(inter / (Area(a) + Area(b) - inter).clamp_min(1e-9));
    }

    /// <summary>The area of boxes (…×4, x1 y1 x2 y2; 0 when inverted).</summary>
    static Tensor Area(Tensor t) => (t[TensorIndex.Ellipsis, 2] - t[TensorIndex.Ellipsis, 0]).clamp_min(0) * (t[TensorIndex.Ellipsis, 3] - t[TensorIndex.Ellipsis, 1]).clamp_min(0);

    sealed class Box(BoxOptions o, long? cls, string? labelValue, string? probs, string? objectness, IReadOnlyList<string> names) : ITarget, IDetectionSimilarity
    {
        public IReadOnlyCollection<string> RequiredLayers =>
            new[] { o.Boxes, o.Scores, labelValue, probs, objectness }.OfType<string>().Distinct().ToArray();

        (Tensor Boxes, Tensor Scores, Tensor Labels) Outputs(TargetInput input)
        {
            var b = input.Layer(o.Boxes);
            var s = input.Layer(o.Scores);
            var l = labelValue is not null ? input.Layer(labelValue) : input.Layer(probs!).detach().argmax(-1);
            long n = b.shape[0];
            if (b.dim() != 3 || b.shape[2] != 4) throw new LoupeException($"target '{Describe()}': '{o.Boxes}' is ({string.Join("×", b.shape)}), boxes must be N×D×4");
            s = s.reshape(n, -1); l = l.reshape(n, -1);
            if (s.shape[1] != b.shape[1] || l.shape[1] != b.shape[1])
                throw new LoupeException($"target '{Describe()}': {b.shape[1]} boxes but {s.shape[1]} scores and {l.shape[1]} labels per input");
            return (b, s, l.to(ScalarType.Int64));
        }

        public TargetSelection Select(TargetInput original)
        {
            using var scope = NewDisposeScope();
            var (b, s, l) = Outputs(original);
            int n = (int)b.shape[0];
            var rows = new Detection[n][];
            var labels = new string[n];
            if (o.Box is { } given)
            {
                Array.Fill(rows, [new Detection(given.Select(v => (float)v).ToArray(), cls!.Value)]);
                for (int i = 0; i < n; i++) labels[i] = $"{Name(cls.Value)} at [{string.Join(", ", given.Select(v => v.ToString("0.#", CultureInfo.InvariantCulture)))}]";
            }
            else if (o.AllAbove is { } above)
                for (int i = 0; i < n; i++)
                {
                    var keep = s[i].detach().ge(above);
                    if (cls is { } c) keep = keep.logical_and(l[i].eq(c));
                    var idx = keep.nonzero().flatten().ToArray<long>();
                    if (idx.Length == 0)
                        throw new LoupeException($"target '{Describe()}': input {i} has no detection scoring {above} or more{(cls is { } k ? " of " + Name(k) : "")}; lower all_above, or explain the top detection (leave it out)");
                    rows[i] = idx.Select(j => new Detection(b[i, j].detach().to(ScalarType.Float32).cpu().ToArray<float>(), l[i, j].item<long>())).ToArray();
                    labels[i] = $"{idx.Length} detection{(idx.Length == 1 ? "" : "s")} ≥ {above.ToString("0.##", CultureInfo.InvariantCulture)}: {string.Join(", ", rows[i].GroupBy(d => d.Class).Select(g => $"{g.Count()} {Name(g.Key)}"))}";
                }
            else
                for (int i = 0; i < n; i++)
                {
                    // Candidates: every detection but padding (an unbatched graph's rows are padded with zeros — a zero
                    // box scoring 0 — to the batch's most detections, docs/guide/detection.md), of the class when one is given.
                    var candidate = b[i].detach().ne(0).any(-1).logical_or(s[i].detach().ne(0));
                    if (cls is { } c) candidate = candidate.logical_and(l[i].eq(c));
                    if (!candidate.any().item<bool>())
                        throw new LoupeException($"target '{Describe()}': input {i} has no {(cls is { } k ? "candidate of " + Name(k) : "detection")} (the model returned {b.shape[1]} boxes{(b.shape[1] > 0 ? ", none of them a candidate" : "")}); explain inputs with a detection, or give the box to explain (option box)");
                    var score = where(candidate, s[i].detach(), full_like(s[i], float.NegativeInfinity));
                    int j = (int)score.argmax().item<long>();
                    float best = score[j].item<float>();
                    var box = b[i, j].detach().to(ScalarType.Float32).cpu().ToArray<float>();
                    rows[i] = [new Detection(box, l[i, j].item<long>())];
                    labels[i] = $"{Name(rows[i][0].Class)} {best.ToString("0.00", CultureInfo.InvariantCulture)} at [{string.Join(", ", box.Select(v => v.ToString("0.#", CultureInfo.InvariantCulture)))}]"
                        + (best < o.MinScore ? $" (below min_score {o.MinScore})" : "");
                }
            return new TargetSelection(rows.Select(r => r[0].Class).ToArray(), labels)
            {
                State = rows,
                Marks = rows.Select(r => r.Select(d => new OverlayMark { Box = d.Box }).ToArray()).ToArray(),
            };
        }

        /// <summary>The detections each row explains, padded to the most of any row: boxes N×K×4, classes N×K, and
        /// which of the K are real.</summary>
        (Tensor Boxes, Tensor Classes, Tensor Real) Targets(TargetSelection selection, long n, Device device)
        {
            if (selection.State is not { } state || state.Count != n || state.Any(d => d is not Detection[] { Length: > 0 }))
                throw new LoupeException($"target '{Describe()}': the selection was not made by this target");
            var d = state.Cast<Detection[]>().ToArray();
            int k = d.Max(r => r.Length);
            var boxes = new float[n * k * 4];
            var classes = new long[n * k];
            var real = new bool[n * k];
            for (int i = 0; i < n; i++)
                for (int j = 0; j < d[i].Length; j++)
                {
                    Array.Copy(d[i][j].Box, 0, boxes, (i * k + j) * 4, 4);
                    classes[i * k + j] = d[i][j].Class;
                    real[i * k + j] = true;
                }
            return (tensor(boxes, [n, k, 4], device: device), tensor(classes, [n, k], device: device), tensor(real, [n, k], device: device));
        }

        public Tensor Scores(TargetInput input, TargetSelection selection)
        {
            using var scope = NewDisposeScope();
            var (b, s, l) = Outputs(input);
            var (tb, tc, real) = Targets(selection, b.shape[0], b.device);
            if (b.shape[1] == 0) return scope.MoveToOuter(zeros(b.shape[0], dtype: s.dtype, device: b.device) + s.sum() * 0);   // no detection survives: 0
            // Each explained detection k of a row: the eligible candidate overlapping it most (N×K×D IoUs).
            var iou = Iou(tb.to(b.dtype).unsqueeze(2), b.unsqueeze(1));
            var eligible = where((s.detach() >= o.MinScore).unsqueeze(1), iou.detach(), full_like(iou, -1));
            var j = eligible.argmax(2, keepdim: true);                                     // N×K×1
            var lk = l.unsqueeze(1).expand(-1, tb.shape[1], -1).gather(2, j).squeeze(2);
            var ok = eligible.gather(2, j).squeeze(2).gt(o.IouThreshold).logical_and(lk.eq(tc)).logical_and(real);
            var value = iou.gather(2, j).squeeze(2) + s.unsqueeze(1).expand(-1, tb.shape[1], -1).gather(2, j).squeeze(2);
            return scope.MoveToOuter(where(ok, value, zeros_like(value)).sum(1));
        }

        public Tensor Similarity(TargetInput input, TargetSelection selection)
        {
            using var scope = NewDisposeScope();
            var (b, s, l) = Outputs(input);
            var (tb3, tc2, _) = Targets(selection, b.shape[0], b.device);
            if (tb3.shape[1] != 1) throw new LoupeException($"target '{Describe()}': d-rise weighs its masks by the similarity to one detection; all_above explains several (use it with gradient or perturbation methods)");
            var (tb, tc) = (tb3[.., 0], tc2[.., 0]);
            if (b.shape[1] == 0) return scope.MoveToOuter(zeros(b.shape[0], dtype: b.dtype, device: b.device));
            var iou = Iou(tb.to(b.dtype).unsqueeze(1), b);
            Tensor agreement;
            if (probs is not null)
            {
                var p = input.Layer(probs);
                if (p.dim() != 3 || p.shape[1] != b.shape[1] || tc.max().item<long>() >= p.shape[2])
                    throw new LoupeException($"target '{Describe()}': '{probs}' is ({string.Join("×", p.shape)}), class probabilities must be N×{b.shape[1]}×C with C > {tc.max().item<long>()}");
                // cos(one-hot(c), p) = p_c / ‖p‖
                agreement = p.gather(2, tc.view(-1, 1, 1).expand(-1, p.shape[1], 1)).squeeze(2) / p.norm(2, true).squeeze(2).clamp_min(1e-12);
            }
            else agreement = l.eq(tc.unsqueeze(1)).to(b.dtype);
            var obj = objectness is null ? s : input.Layer(objectness).reshape(b.shape[0], -1);
            return scope.MoveToOuter((iou * agreement * obj).amax([1]));
        }

        string Name(long c) => c < names.Count ? $"{names[(int)c]}" : $"class {c}";

        public string Describe() =>
            o.Box is { } b ? $"box {Name(cls!.Value)} [{string.Join(", ", b)}]"
            : o.AllAbove is { } a ? $"every {(cls is { } k ? Name(k) + " " : "")}detection ≥ {a.ToString("0.##", CultureInfo.InvariantCulture)}"
            : cls is { } c ? $"top {Name(c)} detection" : "top detection";
    }
}
