using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.RepresentationModel;

namespace Loupe.Core;

/// <summary>Where a <c>--set</c> value came from. A value parsed from the command line has no place in the pipeline
/// file, so its nodes get a mark on a line no file has (<see cref="LineBase"/> + the override's index), and
/// <see cref="Locate"/> turns errors at such marks into errors that quote the override.</summary>
public static class OverrideMarks
{
    /// <summary>First line number used for overrides' nodes.</summary>
    public const int LineBase = 100_000_000;

    /// <summary>Parses an override's value with every node marked as coming from override number <paramref name="index"/>.</summary>
    public static YamlNode Parse(string text, int index)
    {
        var mark = new Mark(0, LineBase + index, 1);
        var ys = new YamlStream();
        ys.Load(new Remarked(new Parser(new StringReader(text)), mark));
        return ys.Documents[0].RootNode;
    }

    /// <summary>Errors at an override's mark, rewritten to name the override (<c>--set 'a.b=c': ...</c>).</summary>
    public static List<PipelineError> Locate(IEnumerable<PipelineError> errors, IReadOnlyList<string> overrides) => errors.Select(e =>
        e.Line >= LineBase && e.Line - LineBase < overrides.Count ? new PipelineError(e.File, 0, 0, $"--set '{overrides[e.Line - LineBase]}': {e.Message}") : e).ToList();

    /// <summary>A parser whose events all carry one mark.</summary>
    sealed class Remarked(IParser inner, Mark mark) : IParser
    {
        public ParsingEvent? Current { get; private set; }

        public bool MoveNext()
        {
            if (!inner.MoveNext()) { Current = null; return false; }
            Current = inner.Current switch
            {
                Scalar s => new Scalar(s.Anchor, s.Tag, s.Value, s.Style, s.IsPlainImplicit, s.IsQuotedImplicit, mark, mark),
                MappingStart m => new MappingStart(m.Anchor, m.Tag, m.IsImplicit, m.Style, mark, mark),
                SequenceStart q => new SequenceStart(q.Anchor, q.Tag, q.IsImplicit, q.Style, mark, mark),
                MappingEnd => new MappingEnd(mark, mark),
                SequenceEnd => new SequenceEnd(mark, mark),
                AnchorAlias a => new AnchorAlias(a.Value, mark, mark),
                var other => other,
            };
            return true;
        }
    }
}
