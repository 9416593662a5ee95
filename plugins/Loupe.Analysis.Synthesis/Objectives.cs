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
