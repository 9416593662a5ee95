using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using TorchSharp;
using YamlDotNet.RepresentationModel;
using static TorchSharp.torch;

namespace Loupe.Core;

/// <summary>Runs pipelines: parse → resolve ids → bind options → validate everything → run each step.</summary>
public static partial class PipelineRunner
{
    static PipelineRunner() => NativeHeap.LimitArenas();

    /// <summary>Parses, resolves, binds and validates; loads the model and opens the data. Throws <see cref="PipelineException"/>.</summary>
    public static PreparedRun Prepare(RunRequest request)
    {
        var spec = PipelineParser.Parse(request.PipelineFile, request.Overrides);
        var file = spec.File;
        var errors = new List<PipelineError>();
        var warnings = new List<string>();

        ComponentRegistry registry;
        try
        {
            registry = ComponentRegistry.Load(request.PluginDirectories.Select(d => new PluginSource(d)).Concat(spec.Plugins), request.Registrars);
        }
        catch (PluginPinException e) { throw new PipelineException([new(file, e.Source.Line, e.Source.Column, e.Message)]); }
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

    static PreparedRun PrepareWith(PipelineSpec spec, ComponentRegistry registry, List<PipelineError> errors, List<string> warnings, ShardRequest? shard)
    {
        var file = spec.File;
        var m = spec.Model!;
        if (spec.Threads > 0) torch.set_num_threads(spec.Threads);

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
        object? modelOptions = modelDesc is null ? null : OptionsBinder.Bind(modelDesc.OptionsType, m.With, file, $"model '{m.Uses}'", spec.BaseDirectory, errors, m.Mark).Value;
        object? dataOptions = dataDesc is null ? null : OptionsBinder.Bind(dataDesc.OptionsType, spec.Data!.With, file, $"data '{spec.Data.Uses}'", spec.BaseDirectory, errors, spec.Data.Mark).Value;
        var stepOptions = spec.Steps.Select((s, i) => stepDescs[i] is { } sd
            ? OptionsBinder.Bind(sd.OptionsType, s.With, file, $"step '{s.Id}' ({s.Uses})", spec.BaseDirectory, errors, s.Mark) : null).ToList();
        // Steps that wrap other steps (e.g. noise-tunnel's inner): resolve and bind the inner step here.
        for (int i = 0; i < stepOptions.Count; i++)
            if (stepOptions[i] is { } bo) stepOptions[i] = ResolveReferences(bo, spec.Steps[i], registry, spec, errors);
        var inputOverride = m.Input is null ? null : (InputOptions)OptionsBinder.Bind(typeof(InputOptions), m.Input, file, "model.input", spec.BaseDirectory, errors, m.Mark).Value;
        string? labelsFile = null;
        if (m.Labels is { } lf)
        {
            labelsFile = Path.GetFullPath(Path.Combine(spec.BaseDirectory, lf));
            if (!File.Exists(labelsFile)) errors.Add(new(file, (int)m.LabelsMark.Line, (int)m.LabelsMark.Column, $"model.labels: file not found: {labelsFile}"));
        }
        // Target ids resolve before the model loads, so every naming error is reported together.
        var targetRefs = spec.Steps.Select(s => ResolveTarget(s, registry, file, errors)).ToList();
        if (errors.Count > 0) throw new PipelineException(errors);

        // 3. Load the model (its layers are needed to validate the steps).
        var modelAdapter = registry.Create<IModelAdapter>(modelDesc!.Id);
        IModel model;
        try
        {
            model = modelAdapter.Load(modelOptions!, new ModelLoadContext(spec.BaseDirectory, spec.Seed) { Warn = warnings.Add });
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
            var labels = labelsFile is not null ? File.ReadAllLines(labelsFile).Select(l => l.Trim()).Where(l => l.Length > 0).ToList()
                : model.DefaultLabels?.ToList() ?? [];
            if (errors.Count > 0) throw new PipelineException(errors);

            // Probe the model once: output size, and the shape of every layer the steps name.
            var layerNames = model.Layers.Select(l => l.Name).ToHashSet();
            var refs = stepOptions.Where(o => o is not null).SelectMany(o => o!.Layers).ToList();
            var badSteps = new HashSet<int>(Enumerable.Range(0, stepOptions.Count).Where(i => stepOptions[i]?.Layers.Any(r => !layerNames.Contains(r.Layer)) == true));
            foreach (var r in refs.Where(r => !layerNames.Contains(r.Layer)))
                errors.Add(new(file, (int)r.Mark.Line, (int)r.Mark.Column, $"option '{r.Option}': layer '{r.Layer}' does not exist in the model{Suggest.DidYouMean(r.Layer, layerNames)}; run 'loupe layers {Path.GetFileName(file)}' to list them"));
            var probeLayers = refs.Select(r => r.Layer).Where(layerNames.Contains).Distinct().ToList();
            var (outputSize, shapes) = Probe(model, input, probeLayers);
            var firstForward = DateTimeOffset.Now;
            foreach (var r in refs.Where(r => r.Spatial && shapes.TryGetValue(r.Layer, out var s) && s.Length != 4))
                errors.Add(new(file, (int)r.Mark.Line, (int)r.Mark.Column, $"option '{r.Option}': layer '{r.Layer}' has output shape ({string.Join("×", shapes[r.Layer])}), but this step needs a spatial N×C×H×W layer"));
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
                prepared.Add(new PreparedStep(s, stepDescs[i]!, analysis, stepOptions[i]!.Value, target));
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
                Shard = rows,
                Spec = spec, Registry = registry, Model = model, ModelOptions = modelOptions!, Input = input, Labels = labels,
                ModelFiles = modelAdapter.Files(modelOptions!, spec.BaseDirectory).ToList(), Data = data, DataOptions = dataOptions,
                Steps = prepared, Warnings = warnings, FirstForwardAt = firstForward,
                Reload = () => modelAdapter.Load(modelOptions!, new ModelLoadContext(spec.BaseDirectory, spec.Seed)),
            };
        }
        catch
        {
            data?.Dispose();
            model.Dispose();
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

    /// <summary>Runs a zero batch through the model, capturing <paramref name="layers"/>; returns the output size and layer shapes.</summary>
    public static (long OutputSize, Dictionary<string, long[]> Shapes) Probe(IModel model, InputSpec input, IReadOnlyCollection<string> layers)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var cap = model.Capture(layers, forGradients: false);
        var x = zeros(1, input.Channels, input.Height, input.Width);
        Tensor y;
        try { y = model.Forward(x); }
        catch (Exception e) { throw new LoupeException($"the model cannot run on input 1×{input.Channels}×{input.Height}×{input.Width}: {e.Message}", e); }
        var shapes = new Dictionary<string, long[]>();
        foreach (var l in layers) if (cap.TryGet(l, out var a)) shapes[l] = a.shape;
        return (y.dim() >= 2 ? y.shape[1] : y.numel(), shapes);
    }

    /// <summary>Runs a pipeline end to end. Never throws for pipeline problems: they come back as errors.</summary>
    public static RunResult Run(RunRequest request, CancellationToken cancellation = default)
    {
        PreparedRun prepared;
        try { prepared = Prepare(request); }
        catch (PipelineException e) { return new RunResult(2, null, null, e.Errors); }
        try
        {
            using (prepared)
                return Execute(prepared, request, cancellation);
        }
        finally { NativeHeap.Trim(); }
    }

    /// <summary>Creates the run's folder; returns it and whether it was created (rather than an existing empty one).</summary>
    static (string Dir, bool Created) CreateOutputDirectory(PipelineSpec spec, string? explicitDir)
    {
        if (explicitDir is not null)
        {
            var full = Path.GetFullPath(explicitDir);
            if (File.Exists(full) || Directory.Exists(full) && Directory.EnumerateFileSystemEntries(full).Any())
                throw new PipelineException([new(spec.File, 0, 0, $"output folder {full} already exists and is not empty; Loupe never overwrites a run — choose another --out")]);
            var existed = Directory.Exists(full);
            Directory.CreateDirectory(full);
            return (full, !existed);
        }
        var name = string.Concat(spec.Name.Select(c => char.IsLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '_'));
        var baseDir = Path.GetFullPath(spec.OutputDir.Replace("{name}", name).Replace("{timestamp}", DateTime.Now.ToString("yyyyMMdd-HHmmss")));
        var dir = baseDir;
        for (int i = 2; Directory.Exists(dir) || File.Exists(dir); i++) dir = $"{baseDir}-{i}";
        Directory.CreateDirectory(dir);
        return (dir, true);
    }

    static RunResult Execute(PreparedRun run, RunRequest request, CancellationToken cancellation)
    {
        var spec = run.Spec;
        string outDir;
        bool created;
        try { (outDir, created) = CreateOutputDirectory(spec, request.OutDir); }
        catch (PipelineException e) { return new RunResult(2, null, null, e.Errors); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return new RunResult(2, null, null, [new(spec.File, 0, 0, $"cannot create the output folder: {e.Message}")]);
        }
        var observer = request.Observer;
        var artifacts = new List<ArtifactRecord>();
        var stepRecords = run.Steps.Select(s => new JsonObject { ["id"] = s.Spec.Id, ["uses"] = s.Spec.Uses, ["status"] = "pending" }).ToList();
        var started = DateTimeOffset.Now;
        var manifest = BuildManifest(run, request, started);
        manifest["steps"] = new JsonArray(stepRecords.Cast<JsonNode>().ToArray());
        if (run.Shard is { } shard)
            manifest["shard"] = new JsonObject { ["index"] = shard.Index, ["count"] = shard.Count, ["firstRow"] = shard.FirstRow, ["rows"] = shard.Rows };
        string? manifestError = null;
        void Save(string status)
        {
            manifest["status"] = status;
            manifest["finishedAt"] = status == "running" ? null : DateTimeOffset.Now.ToString("o");
            manifest["artifacts"] = JsonSerializer.SerializeToNode(artifacts, Manifest.JsonOptions);
            // Run-level warnings also arrive while steps run (e.g. a data source skipping an unreadable image).
            manifest["warnings"] = new JsonArray(run.Warnings.Distinct().Select(w => (JsonNode)JsonValue.Create(w)!).ToArray());
            // The manifest is replaced atomically: when it cannot be written, the copy on disk stays valid JSON.
            try { Manifest.Write(outDir, manifest); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { manifestError ??= e.Message; }
        }
        // The first write checks the folder is writable before any step runs.
        Save("running");
        if (manifestError is not null)
        {
            if (created) try { Directory.Delete(outDir); } catch (Exception) { /* leave it */ }
            return new RunResult(2, null, null, [new(spec.File, 0, 0, $"the output folder {outDir} is not writable: {manifestError}")]);
        }
        foreach (var w in run.Warnings) observer?.Warning(w);

        int failed = 0;
        string? stop = null; // why the remaining steps do not run
        bool outputFault = false;
        for (int i = 0; i < run.Steps.Count; i++)
        {
            var step = run.Steps[i];
            var rec = stepRecords[i];
            if (cancellation.IsCancellationRequested) stop ??= "not run: the run was cancelled";
            if (stop is not null) { rec["status"] = "not run"; rec["error"] = stop; failed++; continue; }
            observer?.StepStarted(step.Spec.Id, step.Spec.Uses, i, run.Steps.Count);
            var metrics = new Dictionary<string, double>();
            var warnings = new List<string>();
            var sink = new StepArtifactSink(outDir, step.Spec.Id, artifacts, metrics);
            var stepCancellation = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
            var ctx = new AnalysisContext(run, step, sink, stepCancellation.Token, observer, warnings);
            var timeout = step.Spec.Timeout ?? spec.StepTimeout;
            if (timeout == TimeSpan.Zero) timeout = null;
            rec["status"] = "running";
            rec["startedAt"] = DateTimeOffset.Now.ToString("o");
            rec["options"] = Manifest.ToNode(step.Options);
            rec["target"] = step.Target.Describe();
            if (LinkedStep(step) is { } of) rec["of"] = of;
            if (timeout is { } t) rec["timeoutMs"] = t.TotalMilliseconds;
            var sw = Stopwatch.StartNew();
            int runWarnings = run.Warnings.Count;
            var outcome = StepThread.Run(() => step.Analysis.Run(step.Options, ctx), stepCancellation, timeout, cancellation);
            sw.Stop();
            var (status, error) = (outcome.Status, outcome.Error);
            if (outcome.Abandoned)
            {
                ctx.Detached = true;
                sink.Close();
                run.Abandoned = true;
                // The abandoned thread keeps its model; later steps get a fresh copy.
                try { run.Model = run.Reload!(); }
                catch (Exception e) { stop = $"not run: the model could not be reloaded after step '{step.Spec.Id}' was abandoned: {e.Message}"; }
            }
            if (outcome.Exception is { } ex && status == "failed") rec["errorDetail"] = ex.ToString();
            if (outcome.Fault is { } fault) rec["fault"] = fault;
            if (outcome.Fault == "out-of-memory") GC.Collect();
            // A full or unwritable output folder stops the run: later steps could not keep their outputs either.
            if (sink.Fault is { } wf)
            {
                (status, error) = ("failed", wf.Message);
                rec["fault"] = wf.Fault;
                stop = $"not run: {wf.Message}";
                outputFault = true;
            }
            // expect: thresholds, checked after the step's outputs are written.
            if (status == "succeeded" && step.Spec.Expect.Count > 0 && run.Shard is not null)
                rec["expectations"] = new JsonArray(step.Spec.Expect.Select(e => (JsonNode)new JsonObject { ["expect"] = e.Text, ["passed"] = "after merge" }).ToArray());
            else if (status == "succeeded" && step.Spec.Expect.Count > 0)
            {
                var failures = step.Spec.Expect.Select(e => e.Check(metrics)).OfType<string>().ToList();
                rec["expectations"] = new JsonArray(step.Spec.Expect.Select(e => (JsonNode)new JsonObject
                {
                    ["expect"] = e.Text, ["passed"] = e.Check(metrics) is null,
                }).ToArray());
                if (failures.Count > 0) { status = "failed"; error = string.Join("; ", failures); }
            }
            if (status != "succeeded") failed++;
            rec["status"] = status;
            rec["durationMs"] = Math.Round(sw.Elapsed.TotalMilliseconds, 1);
            if (error != null) rec["error"] = error;
            lock (warnings)
                if (warnings.Count > 0) rec["warnings"] = new JsonArray(warnings.Select(w => (JsonNode)JsonValue.Create(w)!).ToArray());
            if (!outcome.Abandoned && metrics.Count > 0) rec["metrics"] = JsonSerializer.SerializeToNode(metrics, Manifest.JsonOptions);
            // Tensors created on the step's thread and still alive after it (0 = no leak; absent when abandoned).
            if (outcome.LiveTensors is { } live) rec["liveTensorDelta"] = live;
            foreach (var w in run.Warnings.Skip(runWarnings).Distinct()) observer?.Warning(w);
            observer?.StepFinished(step.Spec.Id, status, sw.Elapsed, error);
            if (!outcome.Abandoned) stepCancellation.Dispose(); // an abandoned step may still read its token
            Save("running");
        }
        // A shard's run-level outputs are written by 'loupe merge', over all shards; none after a full disk.
        if (run.Shard is null && !outputFault)
        {
            try { WriteRunOutputs(outDir, stepRecords, artifacts, manifest, observer); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                observer?.Warning($"run-level outputs not written: {e.Message}");
            }
        }
        if (run.Shard is not null && run.Data is ShardedDataSource { Ids: { } ids }) manifest["shard"]!["ids"] = new JsonArray(ids.Select(i => (JsonNode)JsonValue.Create(i)!).ToArray());
        manifest["durationMs"] = Math.Round((DateTimeOffset.Now - started).TotalMilliseconds, 1);
        var cancelled = cancellation.IsCancellationRequested && failed > 0; // a run that finished anyway is not cancelled
        Save(failed == 0 ? "succeeded" : cancelled ? "cancelled" : "failed");
        Report.RunReport.AfterRun(run, outDir, manifest, observer);
        IReadOnlyList<PipelineError> errors = manifestError is null ? [] :
            [new(spec.File, 0, 0, $"manifest.json could not be updated ({manifestError}); the copy in {outDir} is valid but shows an earlier state of the run")];
        return new RunResult(cancelled ? ExitCancelled : failed == 0 && manifestError is null ? 0 : 1, outDir, manifest, errors);
    }

    /// <summary>Exit code of a run stopped by Ctrl+C (128 + SIGINT, as shells report it).</summary>
    public const int ExitCancelled = 130;

    sealed class NoTarget : ITarget
    {
        public static readonly NoTarget Instance = new();
        public IReadOnlyCollection<string> RequiredLayers => [];
        public TargetSelection Select(TargetInput original) => throw new LoupeException("this step has no target");
        public Tensor Scores(TargetInput input, TargetSelection selection) => throw new LoupeException("this step has no target");
        public string Describe() => "none";
    }
}
