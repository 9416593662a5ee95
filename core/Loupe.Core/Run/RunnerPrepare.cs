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
