using System.Text;
using Loupe.Abstractions;
using Onnx;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>One ONNX node, ready to run: its attributes parsed, its operator resolved.</summary>
public sealed class OnnxNode
{
    readonly Dictionary<string, AttributeProto> _attributes;
    readonly string _source;
    /// <summary>"file: node" for messages about this node's data.</summary>
    public string Where => $"{_source}: {Display}";

    internal OnnxNode(NodeProto node, long opset, string source, int index)
    {
        OpType = node.OpType;
        Name = node.Name;
        Domain = node.Domain;
        Inputs = node.Input.ToArray();
        Outputs = node.Output.ToArray();
        Opset = opset;
        Index = index;
        _source = source;
        _attributes = new Dictionary<string, AttributeProto>(StringComparer.Ordinal);
        foreach (var a in node.Attribute) _attributes[a.Name] = a;
    }

    /// <summary>A node made at load time from others (a fusion): <paramref name="like"/>'s name, place and attributes,
    /// another operator type and other inputs and outputs.</summary>
    internal OnnxNode(OnnxNode like, string opType, string[] inputs, string[] outputs)
    {
        OpType = opType;
        Name = like.Name;
        Domain = like.Domain;
        Inputs = inputs;
        Outputs = outputs;
        Opset = like.Opset;
        Index = like.Index;
        _source = like._source;
        _attributes = like._attributes;
    }

    /// <summary>Operator type (Conv, Relu, ...).</summary>
    public string OpType { get; }
    /// <summary>Node name (may be empty).</summary>
    public string Name { get; }
    /// <summary>Operator domain ("" or ai.onnx for the standard operators).</summary>
    public string Domain { get; }
    /// <summary>Input value names ("" = optional input left out).</summary>
    public string[] Inputs { get; }
    /// <summary>Output value names ("" = optional output not produced).</summary>
    public string[] Outputs { get; }
    /// <summary>Opset of the default domain.</summary>
    public long Opset { get; }
    /// <summary>Position in the graph.</summary>
    public int Index { get; }
    /// <summary>An If node's branches (null for other operators).</summary>
    internal (Branch Then, Branch Else)? Branches { get; set; }
    /// <summary>A Loop node's body (null for other operators).</summary>
    internal Branch? Body { get; set; }
    /// <summary>Values of the enclosing graphs that an If node's branches or a Loop's body read (empty for other
    /// operators).</summary>
    internal string[] OuterReads { get; set; } = [];
    /// <summary>Every value the node reads: its inputs and its branches' outer reads.</summary>
    internal IEnumerable<string> Reads => Inputs.Where(i => i.Length > 0).Concat(OuterReads);

    /// <summary>The function that computes the outputs (set once the operator is resolved).</summary>
    internal Func<OnnxNode, Tensor?[], Tensor[]> Run { get; set; } = null!;

    /// <summary>How a message names this node.</summary>
    public string Display => $"{OpType} node '{(Name.Length > 0 ? Name : Outputs.FirstOrDefault() ?? "#" + Index)}'";

    /// <summary>A LoupeException about this node.</summary>
    public LoupeException Error(string message) => new($"{_source}: {Display} (opset {Opset}): {message}");

    /// <summary>Largest tensor an operator whose output size comes from the file (Pad, Resize, Expand, ...) may create:
    /// the default memory budget (settings.memory_budget_mb), checked before anything is allocated.</summary>
    public const long MaxOutputBytes = 1L << 30;

    /// <summary>Throws unless a float tensor of <paramref name="shape"/> fits <see cref="MaxOutputBytes"/> (no overflow);
    /// <paramref name="copies"/>: how many tensors of that size the operator holds at once (an interpolation's output
    /// and libtorch's working copy).</summary>
    /// <remarks>A graph run row by row (<see cref="RowsInStep"/>) holds each row's output: the rows together are held to the
    /// budget, before the first row's is allocated.</remarks>
    public void CheckOutput(IEnumerable<long> shape, int copies = 1)
    {
        long elements = 1;
        int rows = Math.Max(1, _rows);
        foreach (var d in shape)
            if (d < 0 || d > 0 && elements > MaxOutputBytes / 4 / copies / rows / d)
                throw Error(rows > 1
                    ? $"its outputs for {rows} images ({string.Join("×", shape)} each) would be over the memory budget of {MaxOutputBytes >> 20} MB{(copies > 1 ? $" (the operator holds {copies} tensors of that size)" : "")}; run fewer images per batch (settings: batch_size)"
                    : $"output shape ({string.Join("×", shape)}) is over the memory budget of {MaxOutputBytes >> 20} MB{(copies > 1 ? $" (the operator holds {copies} tensors of that size)" : "")}");
            else elements *= d;
    }

    [ThreadStatic] static int _rows;

    /// <summary>While the result is held (<c>using</c>): this thread runs a graph row by row over <paramref name="rows"/>
    /// images, node by node in step (<see cref="CheckOutput"/> holds the rows' outputs together to the budget).</summary>
    internal static RowsScope RowsInStep(int rows) => new(rows);

    internal readonly struct RowsScope : IDisposable
    {
        readonly int _saved;
        public RowsScope(int rows) => (_saved, _rows) = (_rows, rows);
        public void Dispose() => _rows = _saved;
    }

    public bool Has(string name) => _attributes.ContainsKey(name);

    public long Int(string name, long fallback) => _attributes.TryGetValue(name, out var a) ? a.I : fallback;

    public float Float(string name, float fallback) => _attributes.TryGetValue(name, out var a) ? a.F : fallback;

    public string String(string name, string fallback) => _attributes.TryGetValue(name, out var a) ? Encoding.UTF8.GetString(a.S.Span) : fallback;

    public long[]? Ints(string name) => _attributes.TryGetValue(name, out var a) ? a.Ints.ToArray() : null;

    public float[]? Floats(string name) => _attributes.TryGetValue(name, out var a) ? a.Floats.ToArray() : null;

    public AttributeProto? Attribute(string name) => _attributes.GetValueOrDefault(name);

    /// <summary>Number of inputs actually given (trailing optional inputs may be absent).</summary>
    public bool HasInput(int i) => i < Inputs.Length && Inputs[i].Length > 0;

    /// <summary>True when output <paramref name="i"/> is requested by the graph.</summary>
    public bool HasOutput(int i) => i < Outputs.Length && Outputs[i].Length > 0;
}
