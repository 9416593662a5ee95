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
    internal static PreparedRun PrepareWith(PipelineSpec spec, ComponentRegistry registry, List<PipelineError> errors, List<string> warnings, ShardRequest? shard, IModel? preloaded = null) =>
        new Preparation(spec, registry, errors, warnings, shard, preloaded).Run();

    /// <summary>Resolves and binds the steps a step's options describe in place (<see cref="StepReference"/>,
    /// <c>inner: { uses, with }</c>), nested ones included, depth first: the plan's references (the options are left as
    /// bound) and the layers their options name, added to the step's.</summary>
    static (BoundOptions Bound, List<PlannedReference> References) ResolveReferences(BoundOptions bound, StepSpec s, ComponentRegistry registry, PipelineSpec spec, List<PipelineError> errors)
    {
        var references = new List<PlannedReference>();
        var layers = bound.Layers.ToList();
        void Resolve(object options, string path, string idPath)
        {
            foreach (var p in OptionsBinder.Properties(options.GetType()).Where(p => p.PropertyType == typeof(StepReference)))
            {
                if (p.GetValue(options) is not StepReference r) continue;
                var mark = (r.With as YamlNode)?.Start ?? s.With?.Start ?? s.Mark;
                var name = OptionsBinder.YamlName(p);
                var desc = registry.Find(ComponentKind.Analysis, r.Uses);
                if (desc is null)
                {
                    errors.Add(new(spec.File, (int)mark.Line, (int)mark.Column, $"step '{s.Id}' option '{name}': " + registry.Unknown(ComponentKind.Analysis, r.Uses)));
                    continue;
                }
                var inner = OptionsBinder.Bind(desc.OptionsType, r.With as YamlNode, spec.File, $"step '{s.Id}' {name} ({r.Uses})", spec.BaseDirectory, errors, mark, registry.NotRead(desc));
                var step = new ReferencedStep($"{idPath}/{name}", desc.Id, registry.Create<IAnalysis>(desc.Id), inner.Value);
                references.Add(new PlannedReference(r, step, path + p.Name, null));
                layers.AddRange(inner.Layers);
                Resolve(inner.Value, path + p.Name + ".", step.Id);
            }
        }
        Resolve(bound.Value, "", s.Id);
        return (bound with { Layers = layers }, references);
    }

    /// <summary>Links every <see cref="StepLink"/> option (<c>of: step-id</c>) to the named step's plan entry, then gives
    /// each step the references of the steps it links to (transitively: a metric of a noise-tunnel step runs that
    /// step's inner method too). A link to one of <paramref name="unprepared"/> (steps of the pipeline left out of
    /// <paramref name="steps"/>) is skipped, not reported.</summary>
    static void ResolveLinks(PipelineSpec spec, List<PreparedStep> steps, List<PipelineError> errors, IReadOnlySet<string>? unprepared = null)
    {
        var own = steps.Select(s => s.References.ToList()).ToList();
        for (int i = 0; i < steps.Count; i++)
        {
            var step = steps[i];
            foreach (var p in OptionsBinder.Properties(step.Options.GetType()).Where(p => p.PropertyType == typeof(StepLink)))
            {
                if (p.GetValue(step.Options) is not StepLink link) continue;
                var mark = step.Spec.With?.Start ?? step.Spec.Mark;
                var target = steps.FirstOrDefault(s => s.Spec.Id == link.Id);
                if (target is null && unprepared?.Contains(link.Id) == true) continue;   // a step of the pipeline not planned (its own errors said why)
                if (target is null || ReferenceEquals(target, step))
                {
                    var ids = steps.Where(s => !ReferenceEquals(s, step)).Select(s => s.Spec.Id).ToList();
                    errors.Add(new(spec.File, (int)mark.Line, (int)mark.Column,
                        $"step '{step.Spec.Id}' option '{OptionsBinder.YamlName(p)}': no other step with id '{link.Id}'{Suggest.DidYouMean(link.Id, ids)}; steps: {string.Join(", ", ids)}"));
                    continue;
                }
                own[i].Add(new PlannedReference(link, new ReferencedStep(target.Spec.Id, target.Descriptor.Id, target.Analysis, target.Options), p.Name, target));
            }
        }
        for (int i = 0; i < steps.Count; i++)
        {
            var all = new List<PlannedReference>(own[i]);
            var seen = new HashSet<int> { i };
            var queue = new Queue<PreparedStep>(own[i].Select(r => r.Entry).OfType<PreparedStep>());
            while (queue.TryDequeue(out var linked))
            {
                int k = steps.FindIndex(s => ReferenceEquals(s, linked));
                if (!seen.Add(k)) continue;
                foreach (var r in own[k])
                {
                    all.Add(r with { OptionPath = null });
                    if (r.Entry is not null) queue.Enqueue(r.Entry);
                }
            }
            steps[i].References = all;
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
        var bound = OptionsBinder.Bind(desc.OptionsType, args, file, $"step '{s.Id}' target '{id}'", Path.GetDirectoryName(file)!, errors, mark, registry.NotRead(desc));
        return new TargetRef(desc, bound.Value, mark);
    }

    /// <summary>Most intra-op threads a pipeline may ask for: 4 per core (thousands of threads stall the machine).</summary>
    static int MaxThreads => 4 * Environment.ProcessorCount;

    /// <summary>Largest labels file read (one class name a line).</summary>
    const long MaxLabelsBytes = 16L << 20;

    /// <summary>Runs a zero batch through the model, capturing the inputs of <paramref name="layers"/>; returns their shapes.</summary>
    internal static Dictionary<string, long[]> ProbeInputs(IModel model, ILayerInputs li, InputSpec input, IReadOnlyCollection<string> layers)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var cap = li.CaptureInputs(layers, forGradients: false);
        try { model.Forward(zeros(1, input.Channels, input.Height, input.Width)); }
        catch (Exception e) { throw new LoupeException($"the model cannot run on input 1×{input.Channels}×{input.Height}×{input.Width}: {e.Message.Split('\n')[0]}", e); }
        var shapes = new Dictionary<string, long[]>();
        foreach (var l in layers) if (cap.TryGet(l, out var a)) shapes[l] = a.shape;
        return shapes;
    }

    /// <summary>Runs a zero batch through the model, capturing <paramref name="layers"/>; returns the output size (its dim
    /// 1), the layer shapes and the output's shape (batch 1).</summary>
    public static (long OutputSize, Dictionary<string, long[]> Shapes, long[] OutputShape) Probe(IModel model, InputSpec input, IReadOnlyCollection<string> layers)
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
        return (y.dim() >= 2 ? y.shape[1] : y.numel(), shapes, y.shape);
    }
}
