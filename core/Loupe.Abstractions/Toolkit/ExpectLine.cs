using System.Globalization;

namespace Loupe.Abstractions.Toolkit;

/// <summary>The one <c>expect:</c> grammar, shared by a step's <c>expect:</c> lines (the host) and a metric step's
/// <c>expect</c> option: <c>[prefix.]metric op number</c>, op one of <c>&lt; &lt;= &gt; &gt;= == !=</c>. A name is
/// letters, digits, <c>_</c>, <c>-</c> and <c>.</c>; it names a metric as itself, by its last dotted part
/// (<c>deletion.auc</c> → <c>auc</c>), or by that part's <c>_mean</c> (<c>auc</c> → <c>auc_mean</c>), in that order.</summary>
public sealed record ExpectLine(string Text, string Name, string Op, double Value)
{
    static readonly string[] Ops = ["<=", ">=", "==", "!=", "<", ">"];

    /// <summary>Parses one line; null with what was expected (<paramref name="error"/>) and the 1-based character
    /// where (<paramref name="position"/>) when it does not parse.</summary>
    public static ExpectLine? Parse(string text, out string? error, out int position)
    {
        (var line, error, position) = Scan(text);
        return line;
    }

    static (ExpectLine? Line, string? Error, int Position) Scan(string text)
    {
        int p = 0;
        void Skip() { while (p < text.Length && char.IsWhiteSpace(text[p])) p++; }
        Skip();
        int start = p;
        while (p < text.Length && (char.IsAsciiLetterOrDigit(text[p]) || text[p] is '_' or '.' or '-')) p++;
        if (p == start || !(char.IsAsciiLetterOrDigit(text[start]) || text[start] == '_')) return (null, "expected a metric name", start + 1);
        var name = text[start..p];
        Skip();
        var op = Ops.FirstOrDefault(o => string.CompareOrdinal(text, p, o, 0, o.Length) == 0);
        if (op is null) return (null, "expected a comparison (<, <=, >, >=, ==, !=)", p + 1);
        p += op.Length;
        Skip();
        int number = p;
        if (!Number(text, ref p) || !double.TryParse(text.AsSpan(number, p - number), NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || !double.IsFinite(value))
            return (null, "expected a number", number + 1);
        Skip();
        if (p < text.Length) return (null, $"unexpected '{text[p..]}'", p + 1);
        return (new ExpectLine(text.Trim(), name, op, value), null, 0);
    }

    /// <summary>Advances over <c>[-+]?(d+.?d*|.d+)([eE][-+]?d+)?</c>; false when no number starts at <paramref name="p"/>.</summary>
    static bool Number(string s, ref int p)
    {
        int i = p;
        if (i < s.Length && s[i] is '-' or '+') i++;
        int digits = 0;
        while (i < s.Length && char.IsAsciiDigit(s[i])) { i++; digits++; }
        if (i < s.Length && s[i] == '.') { i++; while (i < s.Length && char.IsAsciiDigit(s[i])) { i++; digits++; } }
        if (digits == 0) return false;
        if (i < s.Length && s[i] is 'e' or 'E')
        {
            int j = i + 1;
            if (j < s.Length && s[j] is '-' or '+') j++;
            int exponent = j;
            while (j < s.Length && char.IsAsciiDigit(s[j])) j++;
            if (j > exponent) i = j;
        }
        p = i;
        return true;
    }

    /// <summary>The metric part of the name: after its last dot.</summary>
    public string Metric => Name.Contains('.') ? Name[(Name.LastIndexOf('.') + 1)..] : Name;

    /// <summary>The metric names the line may mean, in the order they are tried.</summary>
    public IReadOnlyList<string> Candidates => [Name, Metric, Metric + "_mean"];

    /// <summary>The first candidate <paramref name="has"/> holds, or null.</summary>
    public string? Key(Func<string, bool> has) => Candidates.FirstOrDefault(has);

    /// <summary>Whether <paramref name="value"/> satisfies the comparison (NaN fails all but <c>!=</c>).</summary>
    public bool Holds(double value) => Op switch
    {
        "<" => value < Value, "<=" => value <= Value, ">" => value > Value, ">=" => value >= Value, "==" => value == Value, _ => value != Value,
    };

    /// <summary>" (did you mean 'x'?)" for the metric part among <paramref name="names"/> (and their names without
    /// <c>_mean</c>), or an empty string.</summary>
    public string DidYouMean(IReadOnlyList<string> names) =>
        Suggest.DidYouMean(Metric, names.Concat(names.Where(d => d.EndsWith("_mean", StringComparison.Ordinal)).Select(d => d[..^5])).Distinct().ToList());
}
