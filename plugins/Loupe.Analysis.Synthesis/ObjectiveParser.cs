using System.Globalization;
using System.Text;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Synthesis;

/// <summary>A parse error; <see cref="Position"/> is the 0-based character offset.</summary>
public sealed class ObjectiveSyntaxException(string text, int position, string expected)
    : LoupeException($"objective '{text}' — {expected} at position {position}")
{
    /// <summary>0-based offset of the offending character.</summary>
    public int Position { get; } = position;
}

/// <summary>Recursive-descent parser of objective expressions.
/// <code>
/// expr    := term (('+' | '-') term)*
/// term    := unary (('*' | '/') unary)*
/// unary   := ('-' | '+') unary | primary
/// primary := number | '(' expr ')' | 'class' ':' (integer | name) | layer (':' channel (':' y ':' x)?)?
/// name    := [A-Za-z_][A-Za-z0-9_.]* | '…' | "…"      (quote names with other characters: 'ankle boot')
/// </code>
/// Examples: <c>class:sneaker</c>, <c>relu3:12 - 0.5 * relu3:7</c>, <c>layer4.1.conv2:5:3:3</c>, <c>-(relu2:1 + relu2:2) / 2</c>.</summary>
public sealed class ObjectiveParser
{
    readonly string _s;
    int _p;

    ObjectiveParser(string s) => _s = s;

    /// <summary>Parses one objective; throws <see cref="ObjectiveSyntaxException"/> with the position.</summary>
    public static Objective Parse(string text)
    {
        var p = new ObjectiveParser(text ?? "");
        p.Skip();
        if (p._p >= p._s.Length) p.Fail("expected an objective");
        var e = p.Expr();
        p.Skip();
        if (p._p < p._s.Length) p.Fail($"unexpected '{p._s[p._p]}' (expected an operator + - * / or the end)");
        return e;
    }

    void Fail(string expected) => throw new ObjectiveSyntaxException(_s, _p, expected);
    void Skip() { while (_p < _s.Length && char.IsWhiteSpace(_s[_p])) _p++; }
    bool Eat(char c) { Skip(); if (_p < _s.Length && _s[_p] == c) { _p++; return true; } return false; }

    Objective Expr()
    {
        var left = Term();
        while (true)
        {
            if (Eat('+')) left = new Binary('+', left, Term());
            else if (Eat('-')) left = new Binary('-', left, Term());
            else return left;
        }
    }

    Objective Term()
    {
        var left = Unary();
        while (true)
        {
            if (Eat('*')) left = new Binary('*', left, Unary());
            else if (Eat('/')) left = new Binary('/', left, Unary());
            else return left;
        }
    }

    Objective Unary()
    {
        if (Eat('-')) return new Negate(Unary());
        if (Eat('+')) return Unary();
        return Primary();
    }

    Objective Primary()
    {
        Skip();
        if (_p >= _s.Length) Fail("expected a term (a number, a class, a layer or '(')");
        char c = _s[_p];
        if (c == '(')
        {
            _p++;
            var e = Expr();
            if (!Eat(')')) Fail("expected ')'");
            return e;
        }
        if (char.IsDigit(c) || c == '.') return new Constant(Number());
        if (c is '\'' or '"' || char.IsLetter(c) || c == '_')
        {
            int start = _p;
            bool quoted = c is '\'' or '"';
            var name = Name();
            if (!quoted && name == "class")
            {
                if (!Eat(':')) Fail("expected ':' after 'class' (class:3 or class:sneaker)");
                Skip();
                if (_p < _s.Length && char.IsDigit(_s[_p])) { int k = Int("class index"); return new ClassLogit(k.ToString(CultureInfo.InvariantCulture), k); }
                if (_p < _s.Length && (_s[_p] is '\'' or '"' || char.IsLetter(_s[_p]) || _s[_p] == '_')) return new ClassLogit(Name());
                Fail("expected a class index or name");
            }
            _ = start;
            if (!Eat(':')) return new LayerUnit(name);
            int ch = Int("channel index");
            if (!Eat(':')) return new LayerUnit(name, ch);
            Skip();
            if (_s.AsSpan(_p).StartsWith("center", StringComparison.Ordinal) || _s.AsSpan(_p).StartsWith("centre", StringComparison.Ordinal))
            {
                _p += 6;
                return new LayerUnit(name, ch, Centre: true);
            }
            int y = Int("neuron row (y)");
            if (!Eat(':')) Fail("expected ':' and the neuron column (x)");
            int x = Int("neuron column (x)");
            return new LayerUnit(name, ch, y, x);
        }
        Fail("expected a term (a number, a class, a layer or '(')");
        return null!;
    }

    int ScanDigits() { int q = _p; while (q < _s.Length && char.IsDigit(_s[q])) q++; return q; }

    int Int(string what)
    {
        Skip();
        int start = _p;
        int end = ScanDigits();
        if (end == start) Fail($"expected a {what} (a non-negative integer)");
        if (end < _s.Length && (_s[end] == '.' || char.IsLetter(_s[end]))) { _p = end; Fail($"expected a {what} (a non-negative integer)"); }
        if (!int.TryParse(_s.AsSpan(start, end - start), NumberStyles.None, CultureInfo.InvariantCulture, out var v)) Fail($"{what} is too large");
        _p = end;
        return v;
    }

    double Number()
    {
        int start = _p;
        while (_p < _s.Length && (char.IsDigit(_s[_p]) || _s[_p] == '.')) _p++;
        if (_p < _s.Length && _s[_p] is 'e' or 'E')
        {
            int q = _p + 1;
            if (q < _s.Length && _s[q] is '+' or '-') q++;
            if (q < _s.Length && char.IsDigit(_s[q])) { _p = q; while (_p < _s.Length && char.IsDigit(_s[_p])) _p++; }
        }
        if (!double.TryParse(_s.AsSpan(start, _p - start), NumberStyles.Float, CultureInfo.InvariantCulture, out var v))
        {
            _p = start;
            Fail("expected a number");
        }
        return v;
    }

    string Name()
    {
        char c = _s[_p];
        if (c is '\'' or '"')
        {
            int start = _p++;
            var sb = new StringBuilder();
            while (_p < _s.Length && _s[_p] != c) sb.Append(_s[_p++]);
            if (_p >= _s.Length) { _p = start; Fail("unterminated quoted name"); }
            _p++;
            if (sb.Length == 0) { _p = start; Fail("expected a non-empty name"); }
            return sb.ToString();
        }
        int s0 = _p;
        while (_p < _s.Length && (char.IsLetterOrDigit(_s[_p]) || _s[_p] is '_' or '.')) _p++;
        return _s[s0.._p];
    }
}

/// <summary>Resolves class names and checks layers, channels and neurons against the model.</summary>
public static class ObjectiveBinder
{
    /// <summary>Resolves class names against <paramref name="labels"/> (case-insensitive; '_' and ' ' match '-').</summary>
    public static Objective ResolveClasses(Objective o, IReadOnlyList<string> labels) => o switch
    {
        ClassLogit { Index: < 0 } c => new ClassLogit(c.Name, LabelIndex(c.Name, labels)),
        Binary b => b with { Left = ResolveClasses(b.Left, labels), Right = ResolveClasses(b.Right, labels) },
        Negate n => new Negate(ResolveClasses(n.Operand, labels)),
        _ => o,
    };

    static string Norm(string s) => s.Trim().ToLowerInvariant().Replace('_', '-').Replace(' ', '-');

    /// <summary>Index of a label.</summary>
    public static int LabelIndex(string name, IReadOnlyList<string> labels)
    {
        for (int i = 0; i < labels.Count; i++) if (Norm(labels[i]) == Norm(name)) return i;
        if (labels.Count == 0) throw new LoupeException($"class '{name}': the model has no labels; give 'model.labels' or use a class index");
        throw new LoupeException($"class '{name}' is not a label{Suggest.DidYouMean(name, labels)}; labels: {string.Join(", ", labels)}");
    }

    /// <summary>Every leaf objective.</summary>
    public static IEnumerable<Objective> Leaves(Objective o) => o switch
    {
        Binary b => Leaves(b.Left).Concat(Leaves(b.Right)),
        Negate n => Leaves(n.Operand),
        _ => [o],
    };

    /// <summary>Checks layers, channels, neurons and class indices against the model (probed shapes and output size); messages name the objective.</summary>
    public static IEnumerable<string> Check(Objective o, string text, IReadOnlyCollection<string> layerNames, IReadOnlyDictionary<string, long[]> shapes, long outputs, IReadOnlyList<string>? labels)
    {
        foreach (var leaf in Leaves(o))
        {
            switch (leaf)
            {
                case LayerUnit u when !layerNames.Contains(u.LayerName):
                    yield return $"objective '{text}': layer '{u.LayerName}' does not exist in the model{Suggest.DidYouMean(u.LayerName, layerNames)}";
                    break;
                case LayerUnit u when shapes.TryGetValue(u.LayerName, out var s):
                    if (u.Channel is int c && (s.Length < 2 || c >= s[1]))
                        yield return $"objective '{text}': channel {c} is out of range for layer '{u.LayerName}' (output {string.Join("×", s)}: channels 0..{(s.Length < 2 ? 0 : s[1] - 1)})";
                    else if (u.Centre && s.Length != 4)
                        yield return $"objective '{text}': the centre neuron needs a layer with an h×w output; '{u.LayerName}' gives {string.Join("×", s)}";
                    else if (u.Y is int y && u.X is int x && (s.Length != 4 || y >= s[2] || x >= s[3]))
                        yield return $"objective '{text}': neuron ({u.Channel}, {y}, {x}) is out of range for layer '{u.LayerName}' (output {string.Join("×", s)} at the model's input size)";
                    break;
                case Direction d when !layerNames.Contains(d.LayerName):
                    yield return $"direction: layer '{d.LayerName}' does not exist in the model{Suggest.DidYouMean(d.LayerName, layerNames)}";
                    break;
                case Direction d when shapes.TryGetValue(d.LayerName, out var s) && (s.Length < 2 || s[1] != d.Vector.Length):
                    yield return $"direction: {Path.GetFileName(d.Source)} has {d.Vector.Length} values but layer '{d.LayerName}' has {(s.Length < 2 ? 1 : s[1])} channels";
                    break;
                case ClassLogit { Index: >= 0 } k when outputs > 0 && k.Index >= outputs:
                    yield return $"objective '{text}': class {k.Index} is out of range: the model has {outputs} outputs (0..{outputs - 1})";
                    break;
                case ClassLogit { Index: < 0 } k when labels is { Count: > 0 }:
                    string? err = null;
                    try { LabelIndex(k.Name, labels); } catch (LoupeException e) { err = e.Message; }
                    if (err is not null) yield return $"objective '{text}': {err}";
                    break;
            }
        }
    }
}
