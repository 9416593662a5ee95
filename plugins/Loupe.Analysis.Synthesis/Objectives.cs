using System.Globalization;
using System.Text;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Synthesis;

/// <summary>What an objective sees after a forward pass: the model output and the captured layers (full batch).</summary>
public sealed record ObjectiveInput(Tensor Output, Func<string, Tensor> Layer);

/// <summary>A differentiable scalar per batch row, composable with + − × ÷ and constants.</summary>
public abstract record Objective
{
    /// <summary>Layers this objective reads.</summary>
    public virtual IEnumerable<string> Layers => [];
    /// <summary>One value per batch row (shape N), or a 0-d tensor for constants.</summary>
    public abstract Tensor Evaluate(ObjectiveInput input);
    /// <summary>Canonical text form.</summary>
    public abstract override string ToString();

    /// <summary>Sum.</summary>
    public static Objective operator +(Objective a, Objective b) => new Binary('+', a, b);
    /// <summary>Difference.</summary>
    public static Objective operator -(Objective a, Objective b) => new Binary('-', a, b);
    /// <summary>Weight.</summary>
    public static Objective operator *(double w, Objective a) => new Binary('*', new Constant(w), a);
}

/// <summary>A number.</summary>
public sealed record Constant(double Value) : Objective
{
    /// <inheritdoc/>
    public override Tensor Evaluate(ObjectiveInput input) => tensor((float)Value);
    /// <inheritdoc/>
    public override string ToString() => Value.ToString("G", CultureInfo.InvariantCulture);
}

/// <summary>The logit of a class (pre-softmax); <see cref="Name"/> is resolved to <see cref="Index"/> against the labels.</summary>
public sealed record ClassLogit(string Name, int Index = -1) : Objective
{
    /// <inheritdoc/>
    public override Tensor Evaluate(ObjectiveInput input)
    {
        if (Index < 0) throw new LoupeException($"class '{Name}' was not resolved against the labels");
        if (Index >= input.Output.shape[1]) throw new LoupeException($"class {Index} is out of range: the model has {input.Output.shape[1]} outputs");
        return input.Output.reshape(input.Output.shape[0], -1)[.., Index];
    }
    /// <inheritdoc/>
    public override string ToString() => $"class:{(Index >= 0 ? Index.ToString(CultureInfo.InvariantCulture) : Quote(Name))}";
    internal static string Quote(string s) => s.All(c => char.IsLetterOrDigit(c) || c is '_' or '.') ? s : "'" + s + "'";
}

/// <summary>A layer's mean (all channels), a channel's mean, or one neuron (channel, y, x); with <see cref="Centre"/>
/// the neuron at (h/2, w/2) of the layer's h×w output (integer halves: the bottom-right of the central 2×2 when a side
/// is even), Lucent's <c>neuron(layer, n)</c> without x and y.</summary>
public sealed record LayerUnit(string LayerName, int? Channel = null, int? Y = null, int? X = null, bool Centre = false) : Objective
{
    /// <inheritdoc/>
    public override IEnumerable<string> Layers => [LayerName];
    /// <inheritdoc/>
    public override Tensor Evaluate(ObjectiveInput input)
    {
        var a = input.Layer(LayerName);
        long n = a.shape[0];
        if (Channel is not int c) return a.reshape(n, -1).mean([1]);
        if (a.dim() < 2 || c >= a.shape[1]) throw new LoupeException($"channel {c} of layer '{LayerName}' is out of range: its output has shape ({string.Join("×", a.shape)})");
        var ch = a[.., c];
        if (Centre && a.dim() == 4) return ch[.., a.shape[2] / 2, a.shape[3] / 2];
        if (Centre) throw new LoupeException($"the centre neuron of layer '{LayerName}' needs an N×C×h×w output, it has shape ({string.Join("×", a.shape)})");
        if (Y is not int y || X is not int x) return ch.reshape(n, -1).mean([1]);
        if (a.dim() != 4 || y >= a.shape[2] || x >= a.shape[3])
            throw new LoupeException($"neuron ({c}, {y}, {x}) of layer '{LayerName}' is out of range: its output has shape ({string.Join("×", a.shape)}) at this image size");
        return ch[.., y, x];
    }
    /// <inheritdoc/>
    public override string ToString() => ClassLogit.Quote(LayerName) + (Channel is int c ? $":{c}" : "") + (Centre ? ":center" : Y is int y && X is int x ? $":{y}:{x}" : "");
}

/// <summary>A direction v in a layer's channel space: the mean over positions of ⟨v, A[:, :, y, x]⟩ (Olah et al. 2017), or
/// of their cosine similarity (<paramref name="Cosine"/>: Lucent's <c>direction</c>, PyTorch's CosineSimilarity with
/// each vector divided by max(‖·‖, 1e-8)); <paramref name="Centre"/>: at (h // 2, w // 2) only (Lucent's
/// <c>direction_neuron</c>).</summary>
public sealed record Direction(string LayerName, float[] Vector, string Source, bool Cosine = false, bool Centre = false) : Objective
{
    /// <inheritdoc/>
    public override IEnumerable<string> Layers => [LayerName];
    /// <inheritdoc/>
    public override Tensor Evaluate(ObjectiveInput input)
    {
        var a = input.Layer(LayerName);
        if (a.dim() < 2 || a.shape[1] != Vector.Length)
            throw new LoupeException($"direction from {Source} has {Vector.Length} values but layer '{LayerName}' has {(a.dim() < 2 ? 1 : a.shape[1])} channels");
        if (Centre && a.dim() > 2)
            a = a.dim() == 4 ? a[.., .., TensorIndex.Slice(a.shape[2] / 2, a.shape[2] / 2 + 1), TensorIndex.Slice(a.shape[3] / 2, a.shape[3] / 2 + 1)]
                : a.flatten(2)[.., .., TensorIndex.Slice(a.flatten(2).shape[2] / 2, a.flatten(2).shape[2] / 2 + 1)];
        var shape = new long[a.dim()]; Array.Fill(shape, 1L); shape[1] = Vector.Length;
        var v = tensor(Vector).to(a.dtype).view(shape);
        if (Cosine)
        {
            v = v / v.pow(2).sum([1], keepdim: true).sqrt().clamp_min(1e-8);
            a = a / a.pow(2).sum([1], keepdim: true).sqrt().clamp_min(1e-8);
        }
        var dot = (a * v).sum([1]);
        return dot.reshape(a.shape[0], -1).mean([1]);
    }
    /// <inheritdoc/>
    public override string ToString() => $"direction({ClassLogit.Quote(LayerName)}, {Path.GetFileName(Source)}{(Cosine ? ", cosine" : "")}{(Centre ? ", centre" : "")})";
}

/// <summary>Carter et al.'s activation-atlas objective (Lucid's <c>direction_neuron</c> with <c>cossim_pow</c>): for the
/// layer's activation vector a (at the centre position ⌊H/2⌋, ⌊W/2⌋ when <see cref="Centre"/>, else averaged over
/// positions; a 2-D layer's row as it is) and the direction v, S = ⟨a, v⟩ · max(cos, 0.1)^p with
/// cos = ⟨a, v⟩ / ((ε + ‖a‖)(ε + ‖v‖)), ε = 1e-4 (Lucid's <c>_dot_cossim</c>: the 0.1 floor keeps the factor positive,
/// so a wrong-way activation is still pushed along v); p = 0 gives the plain dot product.</summary>
public sealed record DirectionNeuron(string LayerName, float[] Vector, double CossimPower, bool Centre = true) : Objective
{
    /// <summary>Lucid's ε in the cosine's denominators.</summary>
    public const double Epsilon = 1e-4;
    /// <summary>Lucid's floor of the cosine.</summary>
    public const double CosineFloor = 0.1;

    /// <inheritdoc/>
    public override IEnumerable<string> Layers => [LayerName];

    /// <inheritdoc/>
    public override Tensor Evaluate(ObjectiveInput input)
    {
        var a = input.Layer(LayerName);
        if (a.dim() < 2 || a.shape[1] != Vector.Length)
            throw new LoupeException($"an atlas direction has {Vector.Length} values but layer '{LayerName}' has {(a.dim() < 2 ? 1 : a.shape[1])} channels");
        return Values(a, tensor(Vector).to(a.dtype).to(a.device).unsqueeze(0).expand(a.shape[0], -1), CossimPower, Centre);
    }

    /// <summary>The activation vector each row's objective reads (N×C): the centre position, the mean over positions, or the row of a 2-D layer.</summary>
    public static Tensor Vectors(Tensor a, bool centre) => a.dim() switch
    {
        2 => a,
        4 => centre ? a[.., .., a.shape[2] / 2, a.shape[3] / 2] : a.mean([2, 3]),
        _ => centre ? a.flatten(2)[.., .., a.flatten(2).shape[2] / 2] : a.flatten(2).mean([2]),
    };

    /// <summary>The objective of row i against direction row i of <paramref name="v"/> (N×C), shape N.</summary>
    public static Tensor Values(Tensor a, Tensor v, double power, bool centre)
    {
        var x = Vectors(a, centre);
        var dot = (x * v).sum([1]);
        if (power == 0) return dot;
        var cos = dot / ((x.pow(2).sum([1]).sqrt() + Epsilon) * (v.pow(2).sum([1]).sqrt() + Epsilon));
        return dot * cos.clamp_min(CosineFloor).pow(power);
    }

    /// <inheritdoc/>
    public override string ToString() => $"direction-neuron({ClassLogit.Quote(LayerName)}, {Vector.Length} values, cossim^{CossimPower.ToString("G", CultureInfo.InvariantCulture)}{(Centre ? ", centre" : ", mean")})";
}

/// <summary>a op b.</summary>
public sealed record Binary(char Op, Objective Left, Objective Right) : Objective
{
    /// <inheritdoc/>
    public override IEnumerable<string> Layers => Left.Layers.Concat(Right.Layers);
    /// <inheritdoc/>
    public override Tensor Evaluate(ObjectiveInput input)
    {
        var a = Left.Evaluate(input); var b = Right.Evaluate(input);
        return Op switch { '+' => a + b, '-' => a - b, '*' => a * b, _ => a / b };
    }
    /// <inheritdoc/>
    public override string ToString() => $"({Left} {Op} {Right})";
}

/// <summary>−a.</summary>
public sealed record Negate(Objective Operand) : Objective
{
    /// <inheritdoc/>
    public override IEnumerable<string> Layers => Operand.Layers;
    /// <inheritdoc/>
    public override Tensor Evaluate(ObjectiveInput input) => -Operand.Evaluate(input);
    /// <inheritdoc/>
    public override string ToString() => $"-{Operand}";
}

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
