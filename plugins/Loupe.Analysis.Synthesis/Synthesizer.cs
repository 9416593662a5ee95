using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Synthesis;

/// <summary>The optimisation loop of activation maximisation, usable without a pipeline.</summary>
public static class Synthesizer
{
    /// <summary>Optimises <c>batch</c> images per objective: maximise objective_i(model(Normalize(T(I_r)))) − regularisers(I_r)
    /// for each image r of objective i, less λ_diversity × each objective's <see cref="GramSimilarity"/>.</summary>
    public static SynthesisResult Optimize(IModel model, InputSpec input, IReadOnlyList<Objective> objectives, ActivationMaxOptions o, int seed,
        Action<int>? onStep = null, CancellationToken cancel = default)
    {
        int batch = Math.Max(1, o.Batch), n = objectives.Count * batch;
        string? diversityLayer = o.Diversity > 0 && batch > 1 ? o.DiversityLayer : null;
        string? alignmentLayer = o.Alignment > 0 && n > 1 ? o.AlignmentLayer : null;
        string[] terms = [.. new[] { diversityLayer, alignmentLayer }.OfType<string>().Distinct()];
        long h = o.Size is { Length: 2 } s ? s[0] : input.Height, w = o.Size is { Length: 2 } s2 ? s2[1] : input.Width;
        var gen = new Generator((ulong)(uint)seed);
        using var param = new Parameterization(o.Parameterization, n, input.Channels, h, w, o.Decorrelate, o.Range, (o.CppnChannels, o.CppnLayers, o.CppnNormalize));
        var p = TensorAccounting.NewParameter(o.InitSd > 0 || param.Network is not null ? param.Initial(gen, o.InitSd) : zeros(param.ParameterShape));
        using var opt = o.Optimizer == OptimizerKind.Adam
            ? (optim.Optimizer)optim.Adam([p], lr: o.LearningRate)
            : optim.SGD([p], o.LearningRate);
        var layers = objectives.SelectMany(x => x.Layers).Distinct().ToList();
        var history = new float[o.Steps, n];
        var snapshots = new List<(int Step, Tensor Images)>();
        var rows = arange(objectives.Count, dtype: ScalarType.Int64).repeat_interleave(batch);   // row r: objective r / batch
        bool clip = o.NormClip > 0 || o.ContributionClip > 0;
        // Without transforms, step 0 scores exactly the untransformed start image: its values are the start values, and
        // the extra forward pass is saved.
        bool plain = o.Pad <= 0 && o.Jitter <= 0 && o.JitterAfter <= 0 && (o.Scales ?? []).All(v => v == 1) && (o.Rotations ?? []).All(v => v % 360 == 0);
        float[]? start = null;
        if (!plain || o.Steps == 0)
            using (var _ = no_grad()) start = Evaluate(model, input, objectives, layers, FitToModel(param.Image(p), input, o), rows);

        for (int step = 0; step < o.Steps; step++)
        {
            cancel.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            opt.zero_grad();
            var img = param.Image(p);
            if (o.ContributionClip > 0) img.retain_grad();
            var x = img;
            x = Transformed(x, o, gen);
            x = FitToModel(x, input, o);
            var values = Scores(model, input, objectives, layers, x, rows, terms, out var termActs);
            var loss = -values.sum();
            if (diversityLayer is not null) loss = loss + (float)o.Diversity * GramSimilarity(termActs[Array.IndexOf(terms, diversityLayer)], batch).sum();
            if (alignmentLayer is not null) loss = loss + (float)o.Alignment * Misalignment(termActs[Array.IndexOf(terms, alignmentLayer)], o.AlignmentDecay);
            if (o.L2 > 0) loss = loss + (float)o.L2 * (img - (float)o.L2Center).pow(2).sum();
            if (o.Tv > 0) loss = loss + (float)o.Tv * TotalVariation(img).sum();
            loss.Backward();
            opt.step();
            var v = values.detach().ToArray<float>();
            for (int i = 0; i < n; i++) history[step, i] = v[i];
            start ??= v;
            using (var _ = no_grad())
            {
                if (o.BlurEvery > 0 && (step + 1) % o.BlurEvery == 0) param.Blur(p, o.BlurSigma);
                if (clip)
                {
                    var centred = img.detach() - 0.5f;
                    if (o.NormClip > 0) ZeroBelowPercentile(p, centred.pow(2).sum([1]).sqrt(), o.NormClip);
                    if (o.ContributionClip > 0 && img.grad is { } g) ZeroBelowPercentile(p, (centred * -g).sum([1]).abs(), o.ContributionClip);
                }
            }
            if (o.Snapshots is { } at && at.Contains(step + 1))
                using (var _ = no_grad()) snapshots.Add((step + 1, scope.MoveToOuter(param.Image(p).detach().clone())));
            onStep?.Invoke(step);
        }
        using var __ = no_grad();
        var final = param.Image(p).detach();
        var fitted = FitToModel(final, input, o);
        var finalValues = Evaluate(model, input, objectives, layers, fitted, rows);
        // The batch terms of the final images, for the record (also where their weight is 0: what they would have been).
        string? dl = batch > 1 ? o.DiversityLayer : null, al = n > 1 ? o.AlignmentLayer : null;
        float[]? similarity = null;
        float? misalignment = null;
        if (dl is not null || al is not null)
            using (var scope = NewDisposeScope())
            using (var cap = model.Capture([.. new[] { dl, al }.OfType<string>().Distinct()], forGradients: false))
            {
                model.Forward(input.Normalize(fitted));
                if (dl is not null) similarity = GramSimilarity(cap[dl], batch).ToArray<float>();
                if (al is not null) misalignment = Misalignment(cap[al], o.AlignmentDecay).item<float>();
            }
        return new SynthesisResult(final.clone(), history, start!, finalValues, similarity, misalignment, snapshots.Count > 0 ? snapshots : null);
    }

    /// <summary>One step's random transforms of the (padded) image, in Lucid's order: jitter, scale, rotation, the second
    /// jitter; same-size (<see cref="TransformStyle.Loupe"/>) or Lucent's (<see cref="TransformStyle.Lucent"/>).</summary>
    public static Tensor Transformed(Tensor x, ActivationMaxOptions o, Generator gen)
    {
        bool lucent = o.Transforms == TransformStyle.Lucent;
        x = Transforms.Pad(x, o.Pad, 0.5);
        Tensor Jitter(Tensor t, int d) => d <= 0 ? t : lucent ? Transforms.Crop(t, d, gen)
            : Transforms.Jitter(t, Transforms.UniformInt(gen, -d, d), Transforms.UniformInt(gen, -d, d));
        x = Jitter(x, o.Jitter);
        double sc = o.Scales is { Length: > 0 } ? Transforms.Choose(gen, o.Scales) : 1, rot = o.Rotations is { Length: > 0 } ? Transforms.Choose(gen, o.Rotations) : 0;
        x = lucent ? Transforms.RotateZeros(Transforms.ScaleResize(x, sc), rot) : Transforms.Affine(x, sc, rot);
        return Jitter(x, o.JitterAfter);
    }

    /// <summary>Bilinear resize to the model's input size when <see cref="ActivationMaxOptions.ResizeToModel"/> is set.</summary>
    public static Tensor FitToModel(Tensor x, InputSpec input, ActivationMaxOptions o) =>
        o.ResizeToModel && (x.shape[2] != input.Height || x.shape[3] != input.Width) ? Display.Resize(x, input.Height, input.Width) : x;

    /// <summary>Σ over pixels of |∂y| + |∂x| per image (anisotropic L1 total variation), shape N.</summary>
    public static Tensor TotalVariation(Tensor img)
    {
        var dy = (img[.., .., 1.., ..] - img[.., .., ..^1, ..]).abs().sum([1, 2, 3]);
        var dx = (img[.., .., .., 1..] - img[.., .., .., ..^1]).abs().sum([1, 2, 3]);
        return dy + dx;
    }

    /// <summary>Yosinski's clipping: pixels whose <paramref name="score"/> (N×H×W) is below the per-image percentile get parameter 0 (grey).</summary>
    static void ZeroBelowPercentile(Tensor p, Tensor score, double percentile)
    {
        long n = score.shape[0];
        var flat = score.reshape(n, -1);
        long k = (long)Math.Floor(percentile / 100.0 * (flat.shape[1] - 1));
        var (sorted, _) = flat.sort(1);
        var thr = sorted[.., k].view(n, 1, 1);
        var keep = (score >= thr).unsqueeze(1).to(p.dtype);          // N×1×H×W
        p.mul_(keep);
    }

    /// <summary>Lucid's diversity term (Olah et al. 2017; Lucent's <c>diversity(layer)</c>, negated): for each group of
    /// <paramref name="batch"/> consecutive rows, Σ_{i≠j} ⟨Ĝ_i, Ĝ_j⟩ / B, where G_i = F_i F_iᵀ is row i's C×C Gram matrix
    /// (F_i its activation, C × the rest) and Ĝ = G / max(‖G‖_F, 1e-12). One value per group: B − 1 when the group's Gram
    /// matrices are proportional (identical images), 0 when they are pairwise orthogonal.</summary>
    public static Tensor GramSimilarity(Tensor activation, int batch)
    {
        long n = activation.shape[0], c = activation.shape[1];
        var f = activation.reshape(n, c, -1);
        var g = f.bmm(f.transpose(1, 2)).reshape(n, -1);
        var unit = g / g.pow(2).sum(1, keepdim: true).sqrt().clamp_min(1e-12);
        var grouped = unit.view(n / batch, batch, -1);
        var s = grouped.bmm(grouped.transpose(1, 2));                    // groups × B × B
        return (s.sum([1, 2]) - s.diagonal(0, 1, 2).sum(1)) / batch;
    }

    /// <summary>Lucid's alignment term (Lucent's <c>alignment(layer, decay_ratio)</c>): Σ_{d=1..4} Σ_i mean((A_i − A_{i+d})²)
    /// / decay^d over the batch's rows in order, which draws neighbouring images (e.g. the steps of an interpolation
    /// between two objectives) towards the same layout. A scalar.</summary>
    public static Tensor Misalignment(Tensor activation, double decay)
    {
        long n = activation.shape[0];
        var total = zeros([], dtype: activation.dtype, device: activation.device);
        for (long d = 1; d <= 4 && d < n; d++)
        {
            var diff = activation.narrow(0, 0, n - d) - activation.narrow(0, d, n - d);
            total = total + diff.pow(2).flatten(1).mean([1]).sum() / (float)Math.Pow(decay, d);
        }
        return total;
    }

    /// <summary>Objective rows[r] on row r of the batch (shape N); gradients flow to <paramref name="pixels"/>.</summary>
    public static Tensor Scores(IModel model, InputSpec input, IReadOnlyList<Objective> objectives, List<string> layers, Tensor pixels, Tensor rows) =>
        Scores(model, input, objectives, layers, pixels, rows, [], out _);

    /// <summary>As <see cref="Scores(IModel, InputSpec, IReadOnlyList{Objective}, List{string}, Tensor, Tensor)"/>, with the
    /// activations of <paramref name="extraLayers"/> in the same pass.</summary>
    public static Tensor Scores(IModel model, InputSpec input, IReadOnlyList<Objective> objectives, List<string> layers, Tensor pixels, Tensor rows,
        IReadOnlyList<string> extraLayers, out Tensor[] extras)
    {
        using var cap = model.Capture([.. layers.Union(extraLayers)], forGradients: true);
        var output = model.Forward(input.Normalize(pixels));
        extras = [.. extraLayers.Select(l => cap[l].alias())];   // the capture frees its own handles when disposed
        if (rows.shape[0] == output.shape[0] && objectives.All(ob => ob is ClassLogit { Index: >= 0 } c && c.Index < output.shape[1]))
        {
            // Class objectives only (the common case): row i's logit of class i in one gather, not N objectives × N rows.
            var classes = tensor(objectives.Select(ob => (long)((ClassLogit)ob).Index).ToArray());
            return output.reshape(output.shape[0], -1).gather(1, classes.index_select(0, rows).unsqueeze(1)).squeeze(1);
        }
        if (rows.shape[0] == output.shape[0] && objectives.Count > 0 && objectives[0] is DirectionNeuron d0
            && objectives.All(ob => ob is DirectionNeuron d && d.LayerName == d0.LayerName && d.CossimPower == d0.CossimPower && d.Centre == d0.Centre && d.Vector.Length == d0.Vector.Length))
        {
            // Atlas icons: one direction per row, all rows at once (N×C directions) instead of N objectives × N rows.
            var a = cap[d0.LayerName];
            if (a.dim() < 2 || a.shape[1] != d0.Vector.Length)
                throw new LoupeException($"an atlas direction has {d0.Vector.Length} values but layer '{d0.LayerName}' has {(a.dim() < 2 ? 1 : a.shape[1])} channels");
            var v = tensor(objectives.SelectMany(ob => ((DirectionNeuron)ob).Vector).ToArray(), [objectives.Count, d0.Vector.Length]).to(a.dtype).to(a.device);
            return DirectionNeuron.Values(a, v.index_select(0, rows), d0.CossimPower, d0.Centre);
        }
        var oi = new ObjectiveInput(output, l => cap[l]);
        var cols = objectives.Select(ob =>
        {
            var v = ob.Evaluate(oi);
            return v.dim() == 0 ? v.expand(pixels.shape[0]) : v;
        }).ToList();
        var all = stack(cols, 1);                                        // N × objectives
        return all.gather(1, rows.unsqueeze(1)).squeeze(1);
    }

    static float[] Evaluate(IModel model, InputSpec input, IReadOnlyList<Objective> objectives, List<string> layers, Tensor pixels, Tensor rows)
    {
        using var scope = NewDisposeScope();
        return Scores(model, input, objectives, layers, pixels, rows).detach().ToArray<float>();
    }
}
