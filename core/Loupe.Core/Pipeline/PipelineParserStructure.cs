using YamlDotNet.Core;
using YamlDotNet.Core.Events;

namespace Loupe.Core;

/// <summary>The parser's checks on the raw YAML event stream (before any tree is built).</summary>
public static partial class PipelineParser
{
    /// <summary>Streams the YAML events once, before any tree is built: refuses deep nesting (the tree builder recurses),
    /// alias bombs (the tree shares aliased nodes, but binding and the manifest walk them expanded) and duplicate keys
    /// (which YamlDotNet reports without a position).</summary>
    internal static void CheckStructure(string text, string file)
    {
        var parser = new Parser(new StringReader(text));
        var frames = new List<Frame>();
        var sizes = new Dictionary<string, long>();
        long expanded = 0;
        while (parser.MoveNext())
        {
            var ev = parser.Current!;
            PipelineError Error(string message) => new(file, (int)ev.Start.Line, (int)ev.Start.Column, message);
            switch (ev)
            {
                case MappingStart or SequenceStart:
                    if (frames.Count >= MaxDepth) throw new PipelineException([Error($"nesting deeper than {MaxDepth} levels")]);
                    KeyCheck(null);
                    frames.Add(new Frame(ev is MappingStart, ((NodeEvent)ev).Anchor.IsEmpty ? null : ((NodeEvent)ev).Anchor.Value, expanded));
                    Count(1);
                    break;
                case MappingEnd or SequenceEnd:
                    var done = frames[^1];
                    frames.RemoveAt(frames.Count - 1);
                    if (done.Anchor is not null) sizes[done.Anchor] = expanded - done.StartCount;
                    Completed();
                    break;
                case YamlDotNet.Core.Events.Scalar sc:
                    KeyCheck(sc);
                    if (!sc.Anchor.IsEmpty) sizes[sc.Anchor.Value] = 1;
                    Count(1);
                    Completed();
                    break;
                case AnchorAlias al:
                    KeyCheck(null);
                    Count(sizes.GetValueOrDefault(al.Value.Value, 1));
                    Completed();
                    break;
            }
            void Count(long n)
            {
                expanded += n;
                if (expanded > MaxNodes) throw new PipelineException([Error($"the pipeline expands to more than {MaxNodes} YAML nodes (aliases of aliases?)")]);
            }
            void KeyCheck(YamlDotNet.Core.Events.Scalar? key)
            {
                if (frames.Count == 0 || frames[^1] is not { IsMapping: true, ExpectKey: true } f || key is null) return;
                if (!f.Keys.TryAdd(key.Value, key.Start))
                    throw new PipelineException([Error($"duplicate key '{key.Value}' (first at line {f.Keys[key.Value].Line})")]);
            }
            void Completed() { if (frames.Count > 0 && frames[^1].IsMapping) frames[^1].ExpectKey = !frames[^1].ExpectKey; }
        }
    }

    sealed class Frame(bool isMapping, string? anchor, long startCount)
    {
        public bool IsMapping { get; } = isMapping;
        public string? Anchor { get; } = anchor;
        public long StartCount { get; } = startCount;
        public bool ExpectKey { get; set; } = true;
        public Dictionary<string, Mark> Keys { get; } = [];
    }

    static Mark LastGoodMark(string text)
    {
        var last = new Mark(0, 1, 1);
        try
        {
            // YamlDotNet's scanner can emit Error tokens forever (found by tools/Loupe.Fuzz): stop at the first one,
            // and never read more tokens than the text has characters.
            var scanner = new Scanner(new StringReader(text));
            for (int n = 0; n <= text.Length && scanner.MoveNext() && scanner.Current is not YamlDotNet.Core.Tokens.Error; n++) last = scanner.Current!.End;
        }
        catch (Exception) { /* stop at the first token that cannot be read */ }
        return last;
    }
}
