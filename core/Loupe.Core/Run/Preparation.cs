using Loupe.Abstractions;
using TorchSharp;

namespace Loupe.Core;

public static partial class PipelineRunner
{
    /// <summary>Prepares one parsed pipeline with an open registry, in named steps: resolve ids, bind options, (one-pass
    /// checks when something is already wrong), load the model, check the input and read the labels, probe the layers,
    /// prepare and validate the steps, open the data. Every step adds to <see cref="errors"/>; the run is refused at the
    /// first point where the errors found so far would make the next step meaningless.</summary>
    sealed class Preparation(PipelineSpec spec, ComponentRegistry registry, List<PipelineError> errors, List<string> warnings, ShardRequest? shard, IModel? preloaded)
    {
        readonly string file = spec.File;
        readonly ModelSpec m = spec.Model!;
        ComponentDescriptor? modelDesc, dataDesc;
        List<ComponentDescriptor?> stepDescs = [];
        object? modelOptions, dataOptions;
        bool modelValid;
        List<BoundOptions?> stepOptions = [];
        List<List<PlannedReference>> stepReferences = [];
        string? labelsFile;
        List<TargetRef?> targetRefs = [];
        IModel model = null!;
        IDataSource? data;
        InputSpec input = null!;
        List<string> labels = [];
        HashSet<string> layerNames = [];
        // Layer shapes for the pipeline's input at batch 1: the probe's, then any a target asks for (LayerShape).
        readonly Dictionary<string, long[]?> probedShapes = new(StringComparer.Ordinal);
        HashSet<int> badSteps = [];
        // The steps whose options bound without an error: when another part of the pipeline has one, these still get
        // the checks that need the model (one validation reports everything it can).
        readonly HashSet<int> cleanSteps = [];
        // The steps whose target is that of the step they evaluate: its errors are that step's, reported once, there.
        readonly HashSet<int> inheritedTargets = [];
        // Options a step's component does not read: reported with the checks that need the model, which still run.
        readonly List<PipelineError> unread = [];
        long outputSize;
        long[]? outputShape;

        public PreparedRun Run()
        {
            if (spec.Threads > MaxThreads)
                warnings.Add($"settings.threads = {spec.Threads} is far above the {Environment.ProcessorCount} cores; using {MaxThreads} (4 per core)");
            if (spec.Threads > 0) torch.set_num_threads(Math.Min(spec.Threads, MaxThreads));
            ResolveIds();
            BindOptions();
            if (errors.Count > 0)
            {
                // One pass: layer names and targets are checked too when the model section itself is valid.
                if (modelValid) CheckLayersAndTargets(spec, registry, modelDesc!, modelOptions!, stepDescs, stepOptions, stepReferences, cleanSteps,
                    [.. targetRefs.Select((t, i) => inheritedTargets.Contains(i) ? null : t)], labelsFile, spec.Model!.Input, preloaded, errors, warnings);
                throw new PipelineException([.. errors, .. unread]);
            }
            var modelAdapter = registry.Create<IModelAdapter>(modelDesc!.Id);
            try { LoadModel(modelAdapter); }
            catch (PipelineException p) when (unread.Count > 0) { throw new PipelineException([.. p.Errors, .. unread]); }
            try
            {
                CheckInputAndReadLabels();
                var firstForward = ProbeLayers();
                var prepared = PrepareSteps();
                ValidateSteps(prepared);
                OpenData(prepared);
                ShardInfo? rows = null;
                if (shard is not null) (data, rows) = Slice(spec, prepared, data, shard);
                return new PreparedRun
                {
                    Shard = rows, TopK = spec.TopK,
                    Spec = spec, Registry = registry, Model = model, ModelOptions = modelOptions!, Input = input, Labels = labels,
                    ModelFiles = modelAdapter.Files(modelOptions!, spec.BaseDirectory).ToList(), Data = data, DataOptions = dataOptions,
                    Steps = prepared, Warnings = warnings, FirstForwardAt = firstForward, OwnsModel = preloaded is null,
                    Reload = () => modelAdapter.Load(modelOptions!, new ModelLoadContext(spec.BaseDirectory, spec.Seed)),
                };
            }
            catch (Exception e)
            {
                data?.Dispose();
                if (preloaded is null) model.Dispose();
                if (e is PipelineException p && unread.Count > 0 && !p.Errors.Intersect(unread).Any()) throw new PipelineException([.. p.Errors, .. unread]);
                throw;
            }
        }

        PipelineError At(YamlDotNet.Core.Mark mark, string message) => new(file, (int)mark.Line, (int)mark.Column, message);

        void ResolveIds()
        {
            modelDesc = registry.Find(ComponentKind.Model, m.Uses);
            if (modelDesc is null) errors.Add(At(m.Mark, "model: " + registry.Unknown(ComponentKind.Model, m.Uses)));
            if (spec.Data is { } d)
            {
                dataDesc = registry.Find(ComponentKind.Data, d.Uses);
                if (dataDesc is null) errors.Add(At(d.Mark, "data: " + registry.Unknown(ComponentKind.Data, d.Uses)));
            }
            stepDescs = spec.Steps.Select(s =>
            {
                var desc = registry.Find(ComponentKind.Analysis, s.Uses);
                if (desc is null) errors.Add(At(s.UsesMark, $"step '{s.Id}': " + registry.Unknown(ComponentKind.Analysis, s.Uses)));
                return desc;
            }).ToList();
        }

        /// <summary>Components' options (the steps a step describes in place, e.g. noise-tunnel's inner, are resolved and
        /// bound here into the plan's references; the options stay as bound), the labels file, and the targets: every
        /// naming error is reported before the model loads.</summary>
        void BindOptions()
        {
            int beforeModel = errors.Count;
            modelOptions = modelDesc is null ? null : OptionsBinder.Bind(modelDesc.OptionsType, m.With, file, $"model '{m.Uses}'", spec.BaseDirectory, errors, m.Mark, registry.NotRead(modelDesc)).Value;
            modelValid = modelDesc is not null && errors.Count == beforeModel;
            dataOptions = dataDesc is null ? null : OptionsBinder.Bind(dataDesc.OptionsType, spec.Data!.With, file, $"data '{spec.Data.Uses}'", spec.BaseDirectory, errors, spec.Data.Mark, registry.NotRead(dataDesc)).Value;
            stepOptions = [];
            stepReferences = [];
            for (int i = 0; i < spec.Steps.Count; i++)
            {
                var s = spec.Steps[i];
                int before = errors.Count;
                var bo = stepDescs[i] is { } sd
                    ? OptionsBinder.Bind(sd.OptionsType, s.With, file, $"step '{s.Id}' ({s.Uses})", spec.BaseDirectory, errors, s.Mark, registry.NotRead(sd), unread) : null;
                List<PlannedReference> references = [];
                if (bo is not null) (bo, references) = ResolveReferences(bo, s, registry, spec, errors);
                stepOptions.Add(bo);
                stepReferences.Add(references);
                if (bo is not null && errors.Count == before) cleanSteps.Add(i);
            }
            if (m.Labels is { } lf)
            {
                labelsFile = lf.Contains('\0') ? lf : Path.GetFullPath(Path.Combine(spec.BaseDirectory, lf));
                if (lf.Contains('\0')) errors.Add(At(m.LabelsMark, "model.labels: the path contains a NUL character"));
                else if (!File.Exists(labelsFile)) errors.Add(At(m.LabelsMark, $"model.labels: file not found: {labelsFile}"));
            }
            // A step without a target of its own explains the target of the step it evaluates (of:), so that a metric
            // scores the maps that step made; with none to inherit, top-1.
            var own = spec.Steps.Select(s => s.Target is null ? null : ResolveTarget(s, registry, file, errors)).ToList();
            targetRefs = spec.Steps.Select((s, i) =>
            {
                if (s.Target is not null) return own[i];
                if (InheritedTarget(i, own) is { } inherited) { inheritedTargets.Add(i); return inherited; }
                return ResolveTarget(s, registry, file, errors);
            }).ToList();
        }

        /// <summary>The target step <paramref name="i"/> inherits: that of the one step its <see cref="StepLink"/> options
        /// name (followed through steps without a target of their own), when that step gives one; else null.</summary>
        TargetRef? InheritedTarget(int i, List<TargetRef?> own)
        {
            var seen = new HashSet<int>();
            for (int at = i; seen.Add(at);)
            {
                var linked = stepOptions[at]?.Value is { } o
                    ? OptionsBinder.Properties(o.GetType()).Where(p => p.PropertyType == typeof(StepLink)).Select(p => p.GetValue(o)).OfType<StepLink>()
                        .Select(l => spec.Steps.ToList().FindIndex(x => x.Id == l.Id)).Where(j => j >= 0).Distinct().ToList()
                    : [];
                if (linked.Count != 1) return null;
                at = linked[0];
                if (spec.Steps[at].Target is not null) return own[at];
            }
            return null;
        }

        void LoadModel(IModelAdapter modelAdapter)
        {
            try { model = preloaded ?? modelAdapter.Load(modelOptions!, new ModelLoadContext(spec.BaseDirectory, spec.Seed) { Warn = warnings.Add }); }
            catch (Exception e) when (ComponentFaults.Reported(e))
            {
                throw new PipelineException([At(m.Mark, $"model '{m.Uses}': {ComponentFaults.Describe(e)}")]);
            }
        }

        void CheckInputAndReadLabels()
        {
            input = model.DefaultInput;
            if (m.Input is { } inputOverride) input = inputOverride.Apply(input);
            try { input.Validate(); }
            catch (ArgumentException e) { errors.Add(At(m.Mark, "model.input: " + e.Message)); }
            // The size is bounded before the probe allocates anything (a forward needs many times the input).
            long pixels = (long)input.Height * input.Width, bytes = pixels * input.Channels * sizeof(float);
            if (pixels > spec.MaxImagePixels || bytes > spec.MemoryBudgetBytes)
                errors.Add(At(m.Mark, $"model.input: {input.Channels}×{input.Height}×{input.Width} is over the limits " +
                    $"(settings.max_image_pixels = {spec.MaxImagePixels} pixels, settings.memory_budget_mb = {spec.MemoryBudgetBytes >> 20} MB)"));
            try
            {
                labels = ReadLabels(labelsFile, model);
            }
            catch (Exception e) when (ComponentFaults.Reported(e))
            {
                throw new PipelineException([At(m.LabelsMark, ComponentFaults.Describe(e))]);
            }
            if (errors.Count > 0) throw new PipelineException(errors);
        }

        /// <summary>Probes the model once: output size, and the shape of every layer the steps name (a step whose options
        /// take a 'reshape' accepts token N×T×C and channels-last layers it can lay out as a grid).</summary>
        DateTimeOffset ProbeLayers()
        {
            layerNames = model.Layers.Select(l => l.Name).ToHashSet();
            var refs = stepOptions.Where(o => o is not null).SelectMany(o => o!.Layers).ToList();
            badSteps = new HashSet<int>(Enumerable.Range(0, stepOptions.Count).Where(i => stepOptions[i]?.Layers.Any(r => !layerNames.Contains(r.Layer)) == true));
            foreach (var r in refs.Where(r => !layerNames.Contains(r.Layer)))
                errors.Add(UnknownLayer(file, r, layerNames));
            var probeLayers = refs.Select(r => r.Layer).Where(layerNames.Contains).Distinct().ToList();
            Dictionary<string, long[]> shapes;
            try { (outputSize, shapes, outputShape) = Probe(model, input, probeLayers); }
            catch (Exception e) when (ComponentFaults.Reported(e)) { throw new PipelineException([At(m.Mark, $"model '{m.Uses}': {ComponentFaults.Describe(e)}")]); }
            foreach (var (name, shape) in shapes) probedShapes[name] = shape;
            var firstForward = DateTimeOffset.Now;
            // Steps that attribute to a layer's input are checked on that tensor, not on the layer's output.
            var inputLayers = stepOptions.Where(o => o?.Value is IAttributesToLayerInput { AttributeToLayerInput: true })
                .SelectMany(o => o!.Layers.Where(r => r.Spatial).Select(r => r.Layer)).Where(layerNames.Contains).Distinct().ToList();
            Dictionary<string, long[]> inputShapes = [];
            if (inputLayers.Count > 0 && model is ILayerInputs li)
                try { inputShapes = ProbeInputs(model, li, input, inputLayers); }
                catch (Exception e) when (ComponentFaults.Reported(e)) { throw new PipelineException([At(m.Mark, $"model '{m.Uses}': {ComponentFaults.Describe(e)}")]); }
            foreach (var o in stepOptions.Where(o => o is not null))
                foreach (var r in o!.Layers.Where(r => r.Spatial && shapes.ContainsKey(r.Layer)))
                {
                    bool ofInput = o.Value is IAttributesToLayerInput { AttributeToLayerInput: true };
                    if (ofInput && !inputShapes.ContainsKey(r.Layer)) continue;   // no layer inputs: the step's own check says so
                    var shape = ofInput ? inputShapes[r.Layer] : shapes[r.Layer];
                    string? why = o.Value is IReshapesLayers rl ? LayerReshapes.Resolve(rl.Reshape, shape, TokenLayout.Of(rl, (input.Height, input.Width))).Error
                        : shape.Length != 4 ? "this step needs a spatial N×C×H×W layer" : null;
                    if (why is not null)
                        errors.Add(At(r.Mark, $"option '{r.Option}': layer '{r.Layer}' has {(ofInput ? "input" : "output")} shape ({string.Join("×", shape)}): {why}"));
                }
            // Labels name the classes of dim 1 of an N×K or N×K×H×W output; a detector's N×D×4 boxes have no class axis.
            if (labels.Count > 0 && outputShape!.Length != 3 && labels.Count != outputSize)
                warnings.Add($"the model has {outputSize} outputs but {labels.Count} labels");
            return firstForward;
        }

        /// <summary>A layer's output shape at batch 1 (probed once per layer: a zero batch through the model), null when the
        /// model has no such layer or cannot give it.</summary>
        long[]? ShapeOf(string layer)
        {
            if (probedShapes.TryGetValue(layer, out var known)) return known;
            long[]? shape = null;
            if (layerNames.Contains(layer))
                try { shape = Probe(model, input, [layer]).Shapes.GetValueOrDefault(layer); }
                catch (Exception e) when (e is not OutOfMemoryException) { }   // best effort: the target then checks at run time
            return probedShapes[layer] = shape;
        }

        /// <summary>Each step's analysis and target, with the capability, target and data checks.</summary>
        List<PreparedStep> PrepareSteps()
        {
            var prepared = new List<PreparedStep>();
            var displays = DisplayStyles.Of(spec);
            var tctx = new TargetContext(labels, outputSize, model.Layers.Select(l => l.Name).ToList()) { Model = model, Input = input, LayerShape = ShapeOf };
            for (int i = 0; i < spec.Steps.Count; i++)
            {
                var s = spec.Steps[i];
                var analysis = registry.Create<IAnalysis>(stepDescs[i]!.Id);
                var req = analysis.Requirements;
                var inner = stepReferences[i].Select(r => r.Step.Analysis).ToList();
                var needed = inner.Aggregate(req.Capabilities, (c, a) => c | a.Requirements.Capabilities);
                var missing = needed & ~model.Capabilities;
                if (missing != ModelCapabilities.None)
                    errors.Add(At(s.UsesMark, $"step '{s.Id}' ({s.Uses}) needs {missing.ToString().ToLowerInvariant()}, which model backend '{m.Uses}' does not provide" +
                        (missing.HasFlag(ModelCapabilities.Gradients) ? "; use a differentiable backend (e.g. 'torchvision' or 'onnx')" : "")));
                foreach (var a in inner.Prepend(analysis))
                    if (SideInputs.Check(a.Requirements, model, s.Id, s.Uses) is { } sideError)
                    {
                        errors.Add(At(s.UsesMark, sideError));
                        break;
                    }
                if (!req.UsesTarget && s.Target is not null)
                    errors.Add(PipelineParser.At(file, s.Target, $"step '{s.Id}' ({s.Uses}) does not explain a target; remove 'target'"));
                if (req.UsesData && data is null && spec.Data is null)
                    errors.Add(At(s.Mark, $"step '{s.Id}' ({s.Uses}) reads inputs, but the pipeline has no 'data' section"));
                ITarget target = NoTarget.Instance;
                if (req.UsesTarget && targetRefs[i] is { } tr)
                {
                    bool own = !inheritedTargets.Contains(i);
                    try { target = registry.Create<ITargetFactory>(tr.Descriptor.Id).Create(tr.Options, tctx); }
                    catch (LoupeException e) { if (own) errors.Add(At(tr.Mark, $"step '{s.Id}' target: {e.Message}")); }
                    foreach (var l in target.RequiredLayers.Where(l => own && !layerNames.Contains(l)))
                        errors.Add(At(tr.Mark, $"step '{s.Id}' target: layer '{l}' does not exist{Suggest.DidYouMean(l, layerNames)}"));
                }
                prepared.Add(new PreparedStep(s, stepDescs[i]!, analysis, stepOptions[i]!.Value, target) { Display = displays[i], References = stepReferences[i] });
            }
            ResolveLinks(spec, prepared, errors);
            if (shard is not null) errors.AddRange(RefuseUnshardable(spec, prepared, shard));
            return prepared;
        }

        /// <summary>The analyses' own checks, and each step's <c>expect:</c> lines against the metrics it declares.</summary>
        void ValidateSteps(List<PreparedStep> prepared)
        {
            var vctx = new AnalysisValidationContext(model.Layers, model.Capabilities, model) { Input = input, Labels = labels, OutputShape = outputShape };
            for (int i = 0; i < prepared.Count; i++)
            {
                var s = prepared[i].Spec;
                var missing = prepared[i].Analysis.Requirements.Capabilities & ~model.Capabilities;
                ValidateStep(file, prepared[i], vctx, ownChecks: missing == ModelCapabilities.None && !badSteps.Contains(i), errors);
            }
            errors.AddRange(unread);
            if (errors.Count > 0) throw new PipelineException(errors);
        }

        /// <summary>Opens the data last (after everything cheap was checked), then the checks that depend on it: targets
        /// that read labels the data does not have, and the number of inputs (e.g. t-SNE's perplexity): every other check
        /// passed, so whatever this second round reports is new.</summary>
        void OpenData(List<PreparedStep> prepared)
        {
            if (dataDesc is null) return;
            var d = spec.Data!;
            try { data = registry.Create<IDataAdapter>(dataDesc.Id).Open(dataOptions!, new DataOpenContext(spec.BaseDirectory, input) { Warn = warnings.Add, MaxImagePixels = spec.MaxImagePixels }); }
            catch (Exception e) when (ComponentFaults.Reported(e))
            {
                throw new PipelineException([At(d.Mark, $"data '{d.Uses}': {ComponentFaults.Describe(e)}")]);
            }
            if (spec.MaxItems is { } maxItems && data.Count is { } n && n > maxItems)
                throw new PipelineException([At(d.Mark, $"data '{d.Uses}': {n} items, over settings.max_items = {maxItems} ({string.Join(", ", data.Files.Take(3))}); use the source's limit option or raise the budget")]);
            if (data.Count == 0)
                throw new PipelineException([At(d.Mark, $"data '{d.Uses}': the data source is empty ({string.Join(", ", data.Files.DefaultIfEmpty("no files").Take(3))})")]);
            if (data.HasLabels == false)
                foreach (var st in prepared.Where(st => st.Target is IDataTarget))
                    errors.Add(At(st.Spec.Target?.Start ?? st.Spec.Mark, $"step '{st.Spec.Id}' ({st.Spec.Uses}): its target reads each input's label, and data '{d.Uses}' has none (give the source its labels: 'loupe describe {d.Uses}' lists its options)"));
            if (data.Count is { } count)
            {
                var dctx = new AnalysisValidationContext(model.Layers, model.Capabilities, model) { InputCount = count, Input = input, Labels = labels, OutputShape = outputShape };
                foreach (var st in prepared.Where(st => (st.Analysis.Requirements.Capabilities & ~model.Capabilities) == ModelCapabilities.None))
                    foreach (var msg in st.Check(dctx))
                        errors.Add(At(st.Spec.With?.Start ?? st.Spec.Mark, msg));
            }
            if (errors.Count > 0) { data.Dispose(); throw new PipelineException(errors); }
        }
    }
}

/// <summary>What a component threw while the run was prepared. A model or data file comes from anyone: whatever its
/// adapter throws while reading or probing it (a parser's IndexOutOfRangeException on a truncated file as much as a
/// <see cref="LoupeException"/>) is that component's error, at its line, not the end of the process; only cancellation
/// goes through.</summary>
static class ComponentFaults
{
    /// <summary>Whether the exception becomes an error of the pipeline (all but cancellation).</summary>
    public static bool Reported(Exception e) => e is not OperationCanceledException;

    /// <summary>The message: Loupe's and I/O errors as they are, anything else with its type (it is a fault of the
    /// component, not a sentence written for the user).</summary>
    public static string Describe(Exception e) => e is LoupeException or IOException or UnauthorizedAccessException ? e.Message : $"{e.GetType().Name}: {e.Message}";
}
