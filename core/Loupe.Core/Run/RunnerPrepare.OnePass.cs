using Loupe.Abstractions;

namespace Loupe.Core;

public static partial class PipelineRunner
{
    /// <summary>A step option naming a layer the model does not have.</summary>
    static PipelineError UnknownLayer(string file, LayerReference r, IReadOnlyCollection<string> layerNames) =>
        new(file, (int)r.Mark.Line, (int)r.Mark.Column, $"option '{r.Option}': layer '{r.Layer}' does not exist in the model{Suggest.DidYouMean(r.Layer, layerNames)}; run 'loupe layers {Path.GetFileName(file)}' to list them");

    /// <summary>Validation in one pass (issue 23): when the first pass found errors elsewhere but the model section is
    /// valid, the model is still loaded so that layer names and targets are reported with the other errors (nothing is
    /// run but the one-input probe that gives the output size targets are checked against). A model that cannot load
    /// is reported once, and the rest still stands.</summary>
    static void CheckLayersAndTargets(PipelineSpec spec, ComponentRegistry registry, ComponentDescriptor modelDesc, object modelOptions,
        IReadOnlyList<ComponentDescriptor?> stepDescs, IReadOnlyList<BoundOptions?> stepOptions, IReadOnlyList<TargetRef?> targetRefs,
        string? labelsFile, InputOptions? inputOverride, IModel? preloaded, List<PipelineError> errors, List<string> warnings)
    {
        var file = spec.File;
        var m = spec.Model!;
        IModel model;
        try { model = preloaded ?? registry.Create<IModelAdapter>(modelDesc.Id).Load(modelOptions, new ModelLoadContext(spec.BaseDirectory, spec.Seed) { Warn = warnings.Add }); }
        catch (Exception e) when (e is LoupeException or IOException or UnauthorizedAccessException)
        {
            errors.Add(new(file, (int)m.Mark.Line, (int)m.Mark.Column, $"model '{m.Uses}': {e.Message} (layer names and targets could not be checked)"));
            return;
        }
        try
        {
            var layerNames = model.Layers.Select(l => l.Name).ToHashSet();
            foreach (var r in stepOptions.Where(o => o is not null).SelectMany(o => o!.Layers).Where(r => !layerNames.Contains(r.Layer)))
                errors.Add(UnknownLayer(file, r, layerNames));
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
                labels = labelsFile is not null && File.Exists(labelsFile)
                    ? SafeFile.ReadAllText(labelsFile, MaxLabelsBytes, $"model.labels: {labelsFile}").Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToList()
                    : model.DefaultLabels?.ToList() ?? [];
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
}
