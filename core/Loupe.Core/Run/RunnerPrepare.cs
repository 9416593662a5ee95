using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using TorchSharp;
using YamlDotNet.RepresentationModel;
using static TorchSharp.torch;

namespace Loupe.Core;

/// <summary>Preparing a run: parse → resolve ids → bind options → validate everything → load the model, open the data.</summary>
public static partial class PipelineRunner
{
    /// <summary>Parses, resolves, binds and validates; loads the model and opens the data. Throws <see cref="PipelineException"/>.</summary>
    public static PreparedRun Prepare(RunRequest request)
    {
        try { return PrepareAll(request); }
        catch (PipelineException e) when (request.Overrides.Count > 0) { throw new PipelineException(OverrideMarks.Locate(e.Errors, request.Overrides)); }
    }

    static PreparedRun PrepareAll(RunRequest request)
    {
        // Errors of the file's sections are kept, not thrown: ids, options and files are checked in the same pass.
        List<PipelineError> errors;
        var spec = request.PipelineText is { } text
            ? PipelineParser.ParseText(text, Path.GetFullPath(request.PipelineFile), request.Overrides, out errors)
            : PipelineParser.Parse(request.PipelineFile, request.Overrides, out errors);
        var file = spec.File;
        CheckedOutputPath(spec, request.OutDir ?? spec.OutputDir); // refused before anything loads (validate too)
        var warnings = new List<string>();
        // Extra plugins are code: never load them from a pipeline that has errors (a pin may be among them).
        if (errors.Count > 0 && spec.Plugins.Count > 0) throw new PipelineException(errors);

        ComponentRegistry registry;
        try
        {
            registry = ComponentRegistry.Load(request.PluginDirectories.Select(d => new PluginSource(d)).Concat(spec.Plugins), request.Registrars);
        }
        catch (PluginPinException e) { throw new PipelineException([new(file, e.Entry.Line, e.Entry.Column, e.Message)]); }
        catch (LoupeException e) { throw new PipelineException([new(file, 0, 0, e.Message)]); }

        try
        {
            return PrepareWith(spec, registry, errors, warnings, request.Shard);
        }
        catch
        {
            registry.Dispose();
            throw;
        }
    }

    /// <summary>Prepares <paramref name="spec"/> with an open registry. With <paramref name="preloaded"/>, that model is used
    /// (and left to its owner) instead of loading one: in-process hosts keep one model over many runs.</summary>
    internal static PreparedRun PrepareWith(PipelineSpec spec, ComponentRegistry registry, List<PipelineError> errors, List<string> warnings, ShardRequest? shard, IModel? preloaded = null)
    {
        var file = spec.File;
        var m = spec.Model!;
        if (spec.Threads > MaxThreads)
            warnings.Add($"settings.threads = {spec.Threads} is far above the {Environment.ProcessorCount} cores; using {MaxThreads} (4 per core)");
        if (spec.Threads > 0) torch.set_num_threads(Math.Min(spec.Threads, MaxThreads));

        // 1. Resolve ids.
        var modelDesc = registry.Find(ComponentKind.Model, m.Uses);
        if (modelDesc is null) errors.Add(new(file, (int)m.Mark.Line, (int)m.Mark.Column, "model: " + registry.Unknown(ComponentKind.Model, m.Uses)));
        ComponentDescriptor? dataDesc = null;
        if (spec.Data is { } d)
        {
            dataDesc = registry.Find(ComponentKind.Data, d.Uses);
            if (dataDesc is null) errors.Add(new(file, (int)d.Mark.Line, (int)d.Mark.Column, "data: " + registry.Unknown(ComponentKind.Data, d.Uses)));
        }
        var stepDescs = spec.Steps.Select(s =>
        {
            var desc = registry.Find(ComponentKind.Analysis, s.Uses);
            if (desc is null) errors.Add(new(file, (int)s.UsesMark.Line, (int)s.UsesMark.Column, $"step '{s.Id}': " + registry.Unknown(ComponentKind.Analysis, s.Uses)));
            return desc;
        }).ToList();

        // 2. Bind options.
        int beforeModel = errors.Count;
        object? modelOptions = modelDesc is null ? null : OptionsBinder.Bind(modelDesc.OptionsType, m.With, file, $"model '{m.Uses}'", spec.BaseDirectory, errors, m.Mark).Value;
        bool modelValid = modelDesc is not null && errors.Count == beforeModel;
        object? dataOptions = dataDesc is null ? null : OptionsBinder.Bind(dataDesc.OptionsType, spec.Data!.With, file, $"data '{spec.Data.Uses}'", spec.BaseDirectory, errors, spec.Data.Mark).Value;
        var stepOptions = spec.Steps.Select((s, i) => stepDescs[i] is { } sd
            ? OptionsBinder.Bind(sd.OptionsType, s.With, file, $"step '{s.Id}' ({s.Uses})", spec.BaseDirectory, errors, s.Mark) : null).ToList();
        // Steps that wrap other steps (e.g. noise-tunnel's inner): resolve and bind the inner step here.
        for (int i = 0; i < stepOptions.Count; i++)
            if (stepOptions[i] is { } bo) stepOptions[i] = ResolveReferences(bo, spec.Steps[i], registry, spec, errors);
        var displays = DisplayStyles.Bind(spec, errors);
        var topK = DisplayStyles.TopK(spec, errors);
        var inputOverride = m.Input is null ? null : (InputOptions)OptionsBinder.Bind(typeof(InputOptions), m.Input, file, "model.input", spec.BaseDirectory, errors, m.Mark).Value;
        string? labelsFile = null;
        if (m.Labels is { } lf)
        {
            labelsFile = lf.Contains('\0') ? lf : Path.GetFullPath(Path.Combine(spec.BaseDirectory, lf));
            if (lf.Contains('\0')) errors.Add(new(file, (int)m.LabelsMark.Line, (int)m.LabelsMark.Column, "model.labels: the path contains a NUL character"));
            else if (!File.Exists(labelsFile)) errors.Add(new(file, (int)m.LabelsMark.Line, (int)m.LabelsMark.Column, $"model.labels: file not found: {labelsFile}"));
        }
        // Target ids resolve before the model loads, so every naming error is reported together.
        var targetRefs = spec.Steps.Select(s => ResolveTarget(s, registry, file, errors)).ToList();
        if (errors.Count > 0)
        {
            // One pass: layer names and targets are checked too when the model section itself is valid.
            if (modelValid) CheckLayersAndTargets(spec, registry, modelDesc!, modelOptions!, stepDescs, stepOptions, targetRefs, labelsFile, inputOverride, preloaded, errors, warnings);
            throw new PipelineException(errors);
        }

        // 3. Load the model (its layers are needed to validate the steps).
        var modelAdapter = registry.Create<IModelAdapter>(modelDesc!.Id);
        IModel model;
        try
        {
            model = preloaded ?? modelAdapter.Load(modelOptions!, new ModelLoadContext(spec.BaseDirectory, spec.Seed) { Warn = warnings.Add });
        }
        catch (Exception e) when (e is LoupeException or IOException or UnauthorizedAccessException)
        {
            throw new PipelineException([new(file, (int)m.Mark.Line, (int)m.Mark.Column, $"model '{m.Uses}': {e.Message}")]);
        }
        IDataSource? data = null;
        try
        {
            var input = model.DefaultInput;
            if (inputOverride is not null) input = inputOverride.Apply(input);
            try { input.Validate(); }
            catch (ArgumentException e) { errors.Add(new(file, (int)m.Mark.Line, (int)m.Mark.Column, "model.input: " + e.Message)); }
            // The size is bounded before the probe allocates anything (a forward needs many times the input).
            long pixels = (long)input.Height * input.Width, bytes = pixels * input.Channels * sizeof(float);
            if (pixels > spec.MaxImagePixels || bytes > spec.MemoryBudgetBytes)
                errors.Add(new(file, (int)m.Mark.Line, (int)m.Mark.Column, $"model.input: {input.Channels}×{input.Height}×{input.Width} is over the limits " +
                    $"(settings.max_image_pixels = {spec.MaxImagePixels} pixels, settings.memory_budget_mb = {spec.MemoryBudgetBytes >> 20} MB)"));
            List<string> labels;
            try
            {
                labels = labelsFile is not null ? SafeFile.ReadAllText(labelsFile, MaxLabelsBytes, $"model.labels: {labelsFile}").Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToList()
                    : model.DefaultLabels?.ToList() ?? [];
            }
            catch (Exception e) when (e is LoupeException or IOException or UnauthorizedAccessException)
            {
                throw new PipelineException([new(file, (int)m.LabelsMark.Line, (int)m.LabelsMark.Column, e.Message)]);
            }
            if (errors.Count > 0) throw new PipelineException(errors);

            // Probe the model once: output size, and the shape of every layer the steps name.
            var layerNames = model.Layers.Select(l => l.Name).ToHashSet();
            var refs = stepOptions.Where(o => o is not null).SelectMany(o => o!.Layers).ToList();
            var badSteps = new HashSet<int>(Enumerable.Range(0, stepOptions.Count).Where(i => stepOptions[i]?.Layers.Any(r => !layerNames.Contains(r.Layer)) == true));
            foreach (var r in refs.Where(r => !layerNames.Contains(r.Layer)))
                errors.Add(UnknownLayer(file, r, layerNames));
            var probeLayers = refs.Select(r => r.Layer).Where(layerNames.Contains).Distinct().ToList();
            long outputSize;
            Dictionary<string, long[]> shapes;
            try { (outputSize, shapes) = Probe(model, input, probeLayers); }
            catch (LoupeException e) { throw new PipelineException([new(file, (int)m.Mark.Line, (int)m.Mark.Column, $"model '{m.Uses}': {e.Message}")]); }
            var firstForward = DateTimeOffset.Now;
            foreach (var o in stepOptions.Where(o => o is not null))
                foreach (var r in o!.Layers.Where(r => r.Spatial && shapes.ContainsKey(r.Layer)))
                {
                    // A step whose options take a 'reshape' accepts token (N×T×C) and channels-last layers it can lay out as a grid.
                    string? why = o.Value is IReshapesLayers rl ? LayerReshapes.Resolve(rl.Reshape, shapes[r.Layer]).Error
                        : shapes[r.Layer].Length != 4 ? "this step needs a spatial N×C×H×W layer" : null;
                    if (why is not null)
                        errors.Add(new(file, (int)r.Mark.Line, (int)r.Mark.Column, $"option '{r.Option}': layer '{r.Layer}' has output shape ({string.Join("×", shapes[r.Layer])}): {why}"));
                }
            if (labels.Count > 0 && labels.Count != outputSize)
                warnings.Add($"the model has {outputSize} outputs but {labels.Count} labels");

            // Steps: capabilities, targets, analysis-specific checks.
            var prepared = new List<PreparedStep>();
            var vctx = new AnalysisValidationContext(model.Layers, model.Capabilities, model);
            var tctx = new TargetContext(labels, outputSize, model.Layers.Select(l => l.Name).ToList()) { Model = model, Input = input };
            for (int i = 0; i < spec.Steps.Count; i++)
            {
                var s = spec.Steps[i];
                var analysis = registry.Create<IAnalysis>(stepDescs[i]!.Id);
                var req = analysis.Requirements;
                var needed = InnerAnalyses(stepOptions[i]!.Value).Aggregate(req.Capabilities, (c, a) => c | a.Requirements.Capabilities);
                var missing = needed & ~model.Capabilities;
                if (missing != ModelCapabilities.None)
                    errors.Add(new(file, (int)s.UsesMark.Line, (int)s.UsesMark.Column,
                        $"step '{s.Id}' ({s.Uses}) needs {missing.ToString().ToLowerInvariant()}, which model backend '{m.Uses}' does not provide" +
                        (missing.HasFlag(ModelCapabilities.Gradients) ? "; use a differentiable backend (e.g. 'torchvision' or 'onnx')" : "")));
                if (!req.UsesTarget && s.Target is not null)
                    errors.Add(PipelineParser.At(file, s.Target, $"step '{s.Id}' ({s.Uses}) does not explain a target; remove 'target'"));
                if (req.UsesData && data is null && spec.Data is null)
                    errors.Add(new(file, (int)s.Mark.Line, (int)s.Mark.Column, $"step '{s.Id}' ({s.Uses}) reads inputs, but the pipeline has no 'data' section"));
                ITarget target = NoTarget.Instance;
                if (req.UsesTarget && targetRefs[i] is { } tr)
                {
                    try { target = registry.Create<ITargetFactory>(tr.Descriptor.Id).Create(tr.Options, tctx); }
                    catch (LoupeException e) { errors.Add(new(file, (int)tr.Mark.Line, (int)tr.Mark.Column, $"step '{s.Id}' target: {e.Message}")); }
                    foreach (var l in target.RequiredLayers.Where(l => !layerNames.Contains(l)))
                        errors.Add(new(file, (int)tr.Mark.Line, (int)tr.Mark.Column, $"step '{s.Id}' target: layer '{l}' does not exist{Suggest.DidYouMean(l, layerNames)}"));
                }
                prepared.Add(new PreparedStep(s, stepDescs[i]!, analysis, stepOptions[i]!.Value, target) { Display = displays[i] });
            }
            ResolveLinks(spec, prepared, errors);
            if (shard is not null) errors.AddRange(RefuseUnshardable(spec, prepared, shard));
            for (int i = 0; i < prepared.Count; i++)
            {
                var s = prepared[i].Spec;
                var missing = prepared[i].Analysis.Requirements.Capabilities & ~model.Capabilities;
                if (missing == ModelCapabilities.None && !badSteps.Contains(i))
                    foreach (var msg in prepared[i].Analysis.Validate(prepared[i].Options, vctx))
                        errors.Add(new(file, (int)(s.With?.Start.Line ?? s.Mark.Line), (int)(s.With?.Start.Column ?? s.Mark.Column), $"step '{s.Id}' ({s.Uses}): {msg}"));
                // Step-level expect: lines are checked against the metrics the step declares (the same names as with: expect).
                if (prepared[i].Analysis is IDeclaresMetrics declares)
                    foreach (var e in s.Expect)
                        if (e.Unknown(declares.MetricNamesFor(prepared[i].Options, model)) is { } why) errors.Add(new(file, (int)e.Mark.Line, (int)e.Mark.Column, $"step '{s.Id}': {why}"));
            }
            if (errors.Count > 0) throw new PipelineException(errors);

            // Open the data last (after everything cheap was checked).
            if (dataDesc is not null)
            {
                try { data = registry.Create<IDataAdapter>(dataDesc.Id).Open(dataOptions!, new DataOpenContext(spec.BaseDirectory, input) { Warn = warnings.Add, MaxImagePixels = spec.MaxImagePixels }); }
                catch (Exception e) when (e is LoupeException or IOException or UnauthorizedAccessException)
                {
                    throw new PipelineException([new(file, (int)spec.Data!.Mark.Line, (int)spec.Data.Mark.Column, $"data '{spec.Data.Uses}': {e.Message}")]);
                }
                if (spec.MaxItems is { } maxItems && data.Count is { } n && n > maxItems)
                    throw new PipelineException([new(file, (int)spec.Data!.Mark.Line, (int)spec.Data.Mark.Column, $"data '{spec.Data.Uses}': {n} items, over settings.max_items = {maxItems} ({string.Join(", ", data.Files.Take(3))}); use the source's limit option or raise the budget")]);
                if (data.Count == 0)
                    throw new PipelineException([new(file, (int)spec.Data!.Mark.Line, (int)spec.Data.Mark.Column, $"data '{spec.Data.Uses}': the data source is empty ({string.Join(", ", data.Files.DefaultIfEmpty("no files").Take(3))})")]);
                // Checks that depend on the number of inputs (e.g. t-SNE's perplexity): every other check passed above,
                // so whatever this second round reports is new.
                if (data.Count is { } count)
                {
                    var dctx = vctx with { InputCount = count };
                    foreach (var st in prepared.Where(st => (st.Analysis.Requirements.Capabilities & ~model.Capabilities) == ModelCapabilities.None))
                        foreach (var msg in st.Analysis.Validate(st.Options, dctx))
                            errors.Add(new(file, (int)(st.Spec.With?.Start.Line ?? st.Spec.Mark.Line), (int)(st.Spec.With?.Start.Column ?? st.Spec.Mark.Column), $"step '{st.Spec.Id}' ({st.Spec.Uses}): {msg}"));
                    if (errors.Count > 0) { data.Dispose(); throw new PipelineException(errors); }
                }
            }
            ShardInfo? rows = null;
            if (shard is not null) (data, rows) = Slice(spec, prepared, data, shard);
            return new PreparedRun
            {
                Shard = rows, TopK = topK,
                Spec = spec, Registry = registry, Model = model, ModelOptions = modelOptions!, Input = input, Labels = labels,
                ModelFiles = modelAdapter.Files(modelOptions!, spec.BaseDirectory).ToList(), Data = data, DataOptions = dataOptions,
                Steps = prepared, Warnings = warnings, FirstForwardAt = firstForward, OwnsModel = preloaded is null,
                Reload = () => modelAdapter.Load(modelOptions!, new ModelLoadContext(spec.BaseDirectory, spec.Seed)),
            };
        }
        catch
        {
            data?.Dispose();
            if (preloaded is null) model.Dispose();
            throw;
        }
    }

    static BoundOptions ResolveReferences(BoundOptions bound, StepSpec s, ComponentRegistry registry, PipelineSpec spec, List<PipelineError> errors)
    {
        var layers = bound.Layers.ToList();
        foreach (var p in OptionsBinder.Properties(bound.Value.GetType()).Where(p => p.PropertyType == typeof(StepReference)))
        {
            if (p.GetValue(bound.Value) is not StepReference r) continue;
            var mark = (r.With as YamlNode)?.Start ?? s.With?.Start ?? s.Mark;
            var desc = registry.Find(ComponentKind.Analysis, r.Uses);
            if (desc is null)
            {
                errors.Add(new(spec.File, (int)mark.Line, (int)mark.Column, $"step '{s.Id}' option '{OptionsBinder.YamlName(p)}': " + registry.Unknown(ComponentKind.Analysis, r.Uses)));
                continue;
            }
            var inner = OptionsBinder.Bind(desc.OptionsType, r.With as YamlNode, spec.File, $"step '{s.Id}' {OptionsBinder.YamlName(p)} ({r.Uses})", spec.BaseDirectory, errors, mark);
            var nested = ResolveReferences(inner, s, registry, spec, errors);
            r.Analysis = registry.Create<IAnalysis>(desc.Id);
            r.Options = nested.Value;
            layers.AddRange(nested.Layers);
        }
        return bound with { Layers = layers };
    }

    static IEnumerable<IAnalysis> InnerAnalyses(object options) =>
        OptionsBinder.Properties(options.GetType()).Where(p => p.PropertyType == typeof(StepReference))
            .Select(p => p.GetValue(options) as StepReference).Where(r => r?.Analysis is not null)
            .SelectMany(r => new[] { r!.Analysis! }.Concat(InnerAnalyses(r.Options!)));

    /// <summary>Fills every <see cref="StepLink"/> option (<c>of: step-id</c>) with the linked step's analysis and options.</summary>
    static void ResolveLinks(PipelineSpec spec, List<PreparedStep> steps, List<PipelineError> errors)
    {
        foreach (var step in steps)
            foreach (var p in OptionsBinder.Properties(step.Options.GetType()).Where(p => p.PropertyType == typeof(StepLink)))
            {
                if (p.GetValue(step.Options) is not StepLink link) continue;
                var mark = step.Spec.With?.Start ?? step.Spec.Mark;
                var target = steps.FirstOrDefault(s => s.Spec.Id == link.Id);
                if (target is null || ReferenceEquals(target, step))
                {
                    var ids = steps.Where(s => !ReferenceEquals(s, step)).Select(s => s.Spec.Id).ToList();
                    errors.Add(new(spec.File, (int)mark.Line, (int)mark.Column,
                        $"step '{step.Spec.Id}' option '{OptionsBinder.YamlName(p)}': no other step with id '{link.Id}'{Suggest.DidYouMean(link.Id, ids)}; steps: {string.Join(", ", ids)}"));
                    continue;
                }
                link.Analysis = target.Analysis;
                link.Options = target.Options;
            }
    }

    sealed record TargetRef(ComponentDescriptor Descriptor, object Options, YamlDotNet.Core.Mark Mark);

    static TargetRef? ResolveTarget(StepSpec s, ComponentRegistry registry, string file, List<PipelineError> errors)
    {
        string id; YamlNode? args; var mark = s.Target?.Start ?? s.Mark;
        switch (s.Target)
        {
            case null: id = "top-1"; args = null; break;
            case YamlScalarNode sc: id = sc.Value ?? ""; args = null; break;
            case YamlMappingNode mp when mp.Children.Count == 1:
                id = (mp.Children.Keys.First() as YamlScalarNode)?.Value ?? ""; args = mp.Children.Values.First(); break;
            default:
                errors.Add(PipelineParser.At(file, s.Target, $"step '{s.Id}': 'target' must be an id (e.g. top-1) or a mapping with one key (e.g. {{ class: 3 }})"));
                return null;
        }
        var desc = registry.Find(ComponentKind.Target, id);
        if (desc is null)
        {
            errors.Add(new(file, (int)mark.Line, (int)mark.Column, $"step '{s.Id}': " + registry.Unknown(ComponentKind.Target, id)));
            return null;
        }
        var bound = OptionsBinder.Bind(desc.OptionsType, args, file, $"step '{s.Id}' target '{id}'", Path.GetDirectoryName(file)!, errors, mark);
        return new TargetRef(desc, bound.Value, mark);
    }

    /// <summary>Most intra-op threads a pipeline may ask for: 4 per core (thousands of threads stall the machine).</summary>
    static int MaxThreads => 4 * Environment.ProcessorCount;

    /// <summary>Largest labels file read (one class name a line).</summary>
    const long MaxLabelsBytes = 16L << 20;

    /// <summary>Runs a zero batch through the model, capturing <paramref name="layers"/>; returns the output size and layer shapes.</summary>
    public static (long OutputSize, Dictionary<string, long[]> Shapes) Probe(IModel model, InputSpec input, IReadOnlyCollection<string> layers)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var cap = model.Capture(layers, forGradients: false);
        var x = zeros(1, input.Channels, input.Height, input.Width);
        Tensor y;
        try { y = model.Forward(x); }
        catch (Exception e) { throw new LoupeException($"the model cannot run on input 1×{input.Channels}×{input.Height}×{input.Width}: {e.Message.Split('\n')[0]}", e); }
        var shapes = new Dictionary<string, long[]>();
        foreach (var l in layers) if (cap.TryGet(l, out var a)) shapes[l] = a.shape;
        return (y.dim() >= 2 ? y.shape[1] : y.numel(), shapes);
    }
}
