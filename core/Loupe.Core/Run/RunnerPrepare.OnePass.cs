using Loupe.Abstractions;

namespace Loupe.Core;

public static partial class PipelineRunner
{
    /// <summary>A step option naming a layer the model does not have.</summary>
    static PipelineError UnknownLayer(string file, LayerReference r, IReadOnlyCollection<string> layerNames) =>
        new(file, (int)r.Mark.Line, (int)r.Mark.Column, $"option '{r.Option}': layer '{r.Layer}' does not exist in the model{Suggest.DidYouMean(r.Layer, layerNames)}; run 'loupe layers {Path.GetFileName(file)}' to list them");

    /// <summary>Validation in one pass (issue 23): when the first pass found errors elsewhere but the model section is
    /// valid, the model is still loaded so that layer names, targets, links (<c>of:</c>) and the analyses' own checks of
    /// the steps whose options bound cleanly are reported with the other errors (nothing is run but the one-input probe
    /// that gives the output size targets are checked against). A model that cannot load is reported once, and the rest
    /// still stands.</summary>
    static void CheckLayersAndTargets(PipelineSpec spec, ComponentRegistry registry, ComponentDescriptor modelDesc, object modelOptions,
        IReadOnlyList<ComponentDescriptor?> stepDescs, IReadOnlyList<BoundOptions?> stepOptions, IReadOnlyList<List<PlannedReference>> stepReferences,
        IReadOnlySet<int> cleanSteps, IReadOnlyList<TargetRef?> targetRefs,
        string? labelsFile, InputOptions? inputOverride, IModel? preloaded, List<PipelineError> errors, List<string> warnings)
    {
        var file = spec.File;
        var m = spec.Model!;
        IModel model;
        try { model = preloaded ?? registry.Create<IModelAdapter>(modelDesc.Id).Load(modelOptions, new ModelLoadContext(spec.BaseDirectory, spec.Seed) { Warn = warnings.Add }); }
        catch (Exception e) when (ComponentFaults.Reported(e))
        {
            errors.Add(new(file, (int)m.Mark.Line, (int)m.Mark.Column, $"model '{m.Uses}': {ComponentFaults.Describe(e)} (layer names and targets could not be checked)"));
            return;
        }
        try
        {
            var layerNames = model.Layers.Select(l => l.Name).ToHashSet();
            foreach (var r in stepOptions.Where(o => o is not null).SelectMany(o => o!.Layers).Where(r => !layerNames.Contains(r.Layer)))
                errors.Add(UnknownLayer(file, r, layerNames));
            InputSpec? effective;
            try { effective = inputOverride is null ? model.DefaultInput : inputOverride.Apply(model.DefaultInput); effective.Validate(); }
            catch (ArgumentException) { effective = null; }   // reported with the model's other checks
            List<string>? runLabels;
            try { runLabels = ReadLabels(labelsFile, model); }
            catch (Exception e) when (ComponentFaults.Reported(e)) { runLabels = null; }   // reported by the full pass
            CheckCleanSteps(spec, registry, model, effective, runLabels, stepDescs, stepOptions, stepReferences, cleanSteps, layerNames, errors);
            var targeted = Enumerable.Range(0, stepDescs.Count)
                .Where(i => stepDescs[i] is { } d && targetRefs[i] is not null && registry.Create<IAnalysis>(d.Id).Requirements.UsesTarget).ToList();
            if (targeted.Count == 0) return;
            List<string> labels;
            long outputSize;
            InputSpec input;
            try
            {
                input = inputOverride is null ? model.DefaultInput : inputOverride.Apply(model.DefaultInput);
                input.Validate();
                labels = ReadLabels(labelsFile, model);
                if ((long)input.Height * input.Width > spec.MaxImagePixels || (long)input.Height * input.Width * input.Channels * sizeof(float) > spec.MemoryBudgetBytes) return;
                outputSize = Probe(model, input, []).OutputSize;
            }
            catch (Exception e) when (e is LoupeException or ArgumentException or IOException) { return; } // reported by the full pass once the rest is fixed
            var tctx = new TargetContext(labels, outputSize, layerNames.ToList()) { Model = model, Input = input };
            foreach (var i in targeted)
            {
                var (s, tr) = (spec.Steps[i], targetRefs[i]!);
                try
                {
                    var target = registry.Create<ITargetFactory>(tr.Descriptor.Id).Create(tr.Options, tctx);
                    foreach (var l in target.RequiredLayers.Where(l => !layerNames.Contains(l)))
                        errors.Add(new(file, (int)tr.Mark.Line, (int)tr.Mark.Column, $"step '{s.Id}' target: layer '{l}' does not exist{Suggest.DidYouMean(l, layerNames)}"));
                }
                catch (LoupeException e) { errors.Add(new(file, (int)tr.Mark.Line, (int)tr.Mark.Column, $"step '{s.Id}' target: {e.Message}")); }
            }
        }
        finally
        {
            if (preloaded is null) model.Dispose();
        }
    }

    /// <summary>The one-pass checks of the steps whose options bound without an error (<paramref name="cleanSteps"/>):
    /// their links to steps that do not exist, their analyses' own checks and their <c>expect:</c> names — for a step
    /// whose layers all exist, whose linked steps bound cleanly too (a check may read their options) and whose
    /// capabilities the model has (else the full pass reports that once the rest is fixed).</summary>
    /// <summary>The labels a run names outputs with: <c>model.labels</c> when the file exists, else the backend's.</summary>
    static List<string> ReadLabels(string? labelsFile, IModel model) => labelsFile is not null && File.Exists(labelsFile)
        ? SafeFile.ReadAllText(labelsFile, MaxLabelsBytes, $"model.labels: {labelsFile}").Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToList()
        : model.DefaultLabels?.ToList() ?? [];

    static void CheckCleanSteps(PipelineSpec spec, ComponentRegistry registry, IModel model, InputSpec? input, IReadOnlyList<string>? labels, IReadOnlyList<ComponentDescriptor?> stepDescs,
        IReadOnlyList<BoundOptions?> stepOptions, IReadOnlyList<List<PlannedReference>> stepReferences, IReadOnlySet<int> cleanSteps,
        IReadOnlySet<string> layerNames, List<PipelineError> errors)
    {
        var prepared = new List<PreparedStep>();
        var index = new Dictionary<PreparedStep, int>(ReferenceEqualityComparer.Instance);
        for (int i = 0; i < spec.Steps.Count; i++)
            if (cleanSteps.Contains(i) && stepDescs[i] is { } d && stepOptions[i] is { } o)
            {
                var step = new PreparedStep(spec.Steps[i], d, registry.Create<IAnalysis>(d.Id), o.Value, NoTarget.Instance) { References = stepReferences[i] };
                prepared.Add(step);
                index[step] = i;
            }
        var planned = prepared.Select(p => p.Spec.Id).ToHashSet();
        ResolveLinks(spec, prepared, errors, spec.Steps.Select(s => s.Id).Where(id => !planned.Contains(id)).ToHashSet());
        var vctx = new AnalysisValidationContext(model.Layers, model.Capabilities, model) { Input = input, Labels = labels };
        foreach (var step in prepared)
        {
            int i = index[step];
            bool linksPlanned = OptionsBinder.Properties(step.Options.GetType()).Where(p => p.PropertyType == typeof(StepLink))
                .Select(p => p.GetValue(step.Options)).OfType<StepLink>().All(l => planned.Contains(l.Id));
            var needed = step.References.Select(r => r.Step.Analysis).Aggregate(step.Analysis.Requirements.Capabilities, (c, a) => c | a.Requirements.Capabilities);
            if (!linksPlanned || (needed & ~model.Capabilities) != ModelCapabilities.None) continue;
            ValidateStep(spec.File, step, vctx, ownChecks: stepOptions[i]!.Layers.All(r => layerNames.Contains(r.Layer)), errors);
        }
    }

    /// <summary>One prepared step's analysis checks (when <paramref name="ownChecks"/>: the model has what it needs and
    /// its layers exist) and its <c>expect:</c> lines against the metrics it declares.</summary>
    static void ValidateStep(string file, PreparedStep step, AnalysisValidationContext vctx, bool ownChecks, List<PipelineError> errors)
    {
        var s = step.Spec;
        if (ownChecks)
            foreach (var msg in step.Check(vctx))
            {
                var mark = s.With?.Start ?? s.Mark;
                errors.Add(new(file, (int)mark.Line, (int)mark.Column, msg));
            }
        if (step.Analysis is IDeclaresMetrics declares && s.Expect.Count > 0 && declares.MetricNamesFor(step.Options, vctx) is { } names)
            foreach (var e in s.Expect)
                if (e.Unknown(names) is { } why) errors.Add(new(file, (int)e.Mark.Line, (int)e.Mark.Column, $"step '{s.Id}': {why}"));
    }
}
