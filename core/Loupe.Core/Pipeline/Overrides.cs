using Loupe.Abstractions;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Loupe.Core;

/// <summary><c>--set path=value</c> overrides on the YAML tree. Steps are addressed by id: <c>steps.cam.with.layer=layer3</c>.</summary>
public static class Overrides
{
    static string Shorten(string s) => SafeFile.Printable(s.Length > 80 ? s[..80] + "…" : s);

    /// <summary>Applies one override to <paramref name="root"/>.</summary>
    public static void Apply(YamlMappingNode root, string assignment, string file, List<PipelineError> errors, int index = 0)
    {
        var eq = assignment.IndexOf('=');
        if (eq <= 0) { errors.Add(new(file, 0, 0, $"--set '{assignment}': expected key=value")); return; }
        var path = assignment[..eq].Split('.');
        // The value gets the file's limits (nesting, alias expansion) before a tree is built: the builder recurses.
        if (path.Length > PipelineParser.MaxDepth) { errors.Add(new(file, 0, 0, $"--set: key nesting deeper than {PipelineParser.MaxDepth} levels")); return; }
        YamlNode value;
        try
        {
            try { PipelineParser.CheckStructure(assignment[(eq + 1)..], file); }
            catch (PipelineException e) { errors.Add(new(file, 0, 0, $"--set '{Shorten(assignment)}': {e.Errors[0].Message}")); return; }
            // Marked as the override's own text, so later errors point at --set, not at the file.
            value = OverrideMarks.Parse(assignment[(eq + 1)..].Length == 0 ? "''" : assignment[(eq + 1)..], index);
        }
        catch (YamlException e) { errors.Add(new(file, 0, 0, $"--set '{Shorten(assignment)}': value is not valid YAML: {e.Message}")); return; }

        YamlNode current = root;
        for (int i = 0; i < path.Length; i++)
        {
            var key = path[i];
            bool last = i == path.Length - 1;
            switch (current)
            {
                case YamlMappingNode m:
                    // The key as the file writes it, tagged or not (a second, untagged one would be a duplicate).
                    var keyNode = PipelineParser.KeyNode(m, key) ?? new YamlScalarNode(key);
                    if (last) { m.Children[keyNode] = value; return; }
                    if (!m.Children.TryGetValue(keyNode, out var next))
                    {
                        next = new YamlMappingNode();
                        m.Children[keyNode] = next;
                    }
                    current = next;
                    break;
                case YamlSequenceNode s:
                    var match = s.Children.OfType<YamlMappingNode>().FirstOrDefault(c =>
                        PipelineParser.Child(c, "id") is YamlScalarNode id && id.Value == key ||
                        PipelineParser.Child(c, "id") is null && PipelineParser.Child(c, "uses") is YamlScalarNode u && u.Value == key);
                    if (match is null && int.TryParse(key, out var idx) && idx >= 0 && idx < s.Children.Count) match = s.Children[idx] as YamlMappingNode;
                    if (match is null)
                    {
                        var ids = s.Children.OfType<YamlMappingNode>().Select(c => (PipelineParser.Child(c, "id") as YamlScalarNode)?.Value).OfType<string>();
                        errors.Add(new(file, 0, 0, $"--set '{assignment}': no step with id '{key}'{Suggest.DidYouMean(key, ids)}"));
                        return;
                    }
                    if (last) { errors.Add(new(file, 0, 0, $"--set '{assignment}': cannot replace a whole step")); return; }
                    current = match;
                    break;
                default:
                    errors.Add(new(file, 0, 0, $"--set '{assignment}': '{string.Join('.', path[..i])}' is a value, not a section"));
                    return;
            }
        }
    }
}
