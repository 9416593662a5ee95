using System.ComponentModel;
using System.Reflection;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Core;

/// <summary>One row of <c>loupe layers</c>.</summary>
public sealed record LayerRow(string Name, string Kind, long[]? OutputShape);

/// <summary>One option of a component, for <c>loupe describe</c> (and the schema later).</summary>
public sealed record OptionInfo(string Name, string Type, string? Default, string? Description, bool Required);

/// <summary>Inspection helpers behind <c>loupe layers</c> and <c>loupe describe</c>.</summary>
public static class Inspector
{
    /// <summary>Loads only the model of a pipeline file and lists its layers with output shapes (one probe forward).</summary>
    public static (IReadOnlyList<LayerRow> Layers, InputSpec Input) Layers(string pipelineFile, IReadOnlyList<string> overrides, IReadOnlyList<string> pluginDirs)
    {
        var spec = PipelineParser.Parse(pipelineFile, overrides);
        var errors = new List<PipelineError>();
        using var registry = ComponentRegistry.Load(pluginDirs.Select(d => new PluginSource(d)).Concat(spec.Plugins));
        var m = spec.Model!;
        var desc = registry.Find(ComponentKind.Model, m.Uses)
            ?? throw new PipelineException([new(spec.File, (int)m.Mark.Line, (int)m.Mark.Column, "model: " + registry.Unknown(ComponentKind.Model, m.Uses))]);
        var options = OptionsBinder.Bind(desc.OptionsType, m.With, spec.File, $"model '{m.Uses}'", spec.BaseDirectory, errors, m.Mark, registry.NotRead(desc)).Value;
        var input = m.Input;
        if (errors.Count > 0) throw new PipelineException(errors);
        using var model = registry.Create<IModelAdapter>(desc.Id).Load(options, new ModelLoadContext(spec.BaseDirectory, spec.Seed));
        var inputSpec = input?.Apply(model.DefaultInput) ?? model.DefaultInput;
        return (Layers(model, inputSpec), inputSpec);
    }

    /// <summary>A loaded model's layers with their output shapes for one input of <paramref name="input"/> (one probe forward;
    /// layers that do not map a tensor to a tensor have no shape).</summary>
    public static IReadOnlyList<LayerRow> Layers(IModel model, InputSpec input)
    {
        var captures = new List<(string Name, ILayerCapture Capture)>();
        try
        {
            foreach (var l in model.Layers)
            {
                try { captures.Add((l.Name, model.Capture([l.Name], forGradients: false))); }
                catch (LoupeException) { /* layers that do not map tensor → tensor have no single shape */ }
            }
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            model.Forward(zeros(1, input.Channels, input.Height, input.Width));
            var shapes = captures.ToDictionary(c => c.Name, c => c.Capture.TryGet(c.Name, out var t) ? t.shape : null);
            return model.Layers.Select(l => new LayerRow(l.Name, l.Kind, shapes.GetValueOrDefault(l.Name))).ToList();
        }
        finally
        {
            foreach (var c in captures) c.Capture.Dispose();
        }
    }

    /// <summary>Options of an options record, with YAML names, types, defaults and descriptions; with
    /// <paramref name="component"/>, only those it reads (<see cref="ReadsOptionsAttribute"/>).</summary>
    public static IReadOnlyList<OptionInfo> Options(Type optionsType, Type? component = null)
    {
        object? defaults = null;
        try { defaults = Activator.CreateInstance(optionsType); } catch { /* no defaults */ }
        var read = component is null ? null : ReadsOptionsAttribute.Of(component, optionsType);
        return OptionsBinder.Properties(optionsType).Where(p => read?.Contains(p.Name) != false).Select(p =>
        {
            var d = defaults is null ? null : p.GetValue(defaults);
            string? shown = d switch
            {
                null => null,
                string s when s.Length == 0 => null,
                bool b => b ? "true" : "false",
                Enum e => OptionsBinder.Kebab(e.ToString()),
                Array a => "[" + string.Join(", ", a.Cast<object>()) + "]",
                IFormattable f => f.ToString(null, System.Globalization.CultureInfo.InvariantCulture),
                string s => s,
                _ => "{...}",
            };
            var type = OptionsBinder.Describe(p.PropertyType)
                + (p.GetCustomAttribute<OrConstantAttribute>() is not null ? ", or a number / one per channel" : "")
                + (p.GetCustomAttribute<AliasAttribute>() is { } alias ? $" (key also: {string.Join(", ", alias.Names)})" : "");
            return new OptionInfo(OptionsBinder.YamlName(p), type, shown,
                p.GetCustomAttribute<DescriptionAttribute>()?.Description,
                p.GetCustomAttribute<System.ComponentModel.DataAnnotations.RequiredAttribute>() != null);
        }).ToList();
    }
}
