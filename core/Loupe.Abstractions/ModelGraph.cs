using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Abstractions;

/// <summary>Standard operators of a <see cref="ModelGraph"/>: what a CNN is made of once its framework is abstracted away.</summary>
public enum GraphOp
{
    /// <summary>2-D convolution: <see cref="GraphNode.Weight"/> O×(I/groups)×kh×kw, optional bias, stride/padding/dilation/groups.</summary>
    Conv,
    /// <summary>Dense layer y = x Wᵀ + b on N×F inputs: <see cref="GraphNode.Weight"/> out×in, optional bias.</summary>
    Linear,
    /// <summary>Eval-mode batch norm over channels (dim 1): weight γ, bias β, <see cref="GraphNode.Mean"/>, <see cref="GraphNode.Var"/>, <see cref="GraphNode.Eps"/>.</summary>
    BatchNorm,
    /// <summary>max(x, 0).</summary>
    Relu,
    /// <summary>2-D max pooling (kernel, stride, padding, dilation, ceil mode).</summary>
    MaxPool,
    /// <summary>2-D average pooling (kernel, stride, padding, ceil mode, count_include_pad).</summary>
    AvgPool,
    /// <summary>Adaptive average pooling to <see cref="GraphNode.Kernel"/> (output height × width; 1×1 = global average pooling).</summary>
    AdaptiveAvgPool,
    /// <summary>Flattens every dimension after the batch.</summary>
    Flatten,
    /// <summary>Reshape to N × <see cref="GraphNode.Shape"/> (the batch dimension kept; 0 copies the input's size, −1 is inferred).</summary>
    Reshape,
    /// <summary>Element-wise sum of the inputs (residual connections).</summary>
    Add,
    /// <summary>Concatenation of the inputs along <see cref="GraphNode.Axis"/>.</summary>
    Concat,
    /// <summary>The input unchanged (dropout in eval mode, identity modules).</summary>
    Identity,
    /// <summary>Constant padding of the last two dimensions by <see cref="GraphNode.Pads"/> (left, right, top, bottom; as
    /// <c>F.pad</c>) with <see cref="GraphNode.PadValue"/>.</summary>
    Pad,
    /// <summary>clamp(x, <see cref="GraphNode.Min"/>, <see cref="GraphNode.Max"/>) (ReLU6, Hardtanh; ONNX Clip).</summary>
    Clip,
    /// <summary>1 / (1 + e^−x).</summary>
    Sigmoid,
    /// <summary>Element-wise product of the inputs (broadcast as in PyTorch: squeeze-and-excitation's x · scale), times
    /// <see cref="GraphNode.Weight"/> when it is set (a constant factor, e.g. ONNX's Mul by an initializer).</summary>
    Mul,
    /// <summary>x · σ(x) (SiLU, Swish).</summary>
    Silu,
    /// <summary>x · clamp(x + 3, 0, 6) / 6 (PyTorch's Hardswish; ONNX HardSwish).</summary>
    Hardswish,
    /// <summary>clamp(α·x + β, 0, 1) with <see cref="GraphNode.Alpha"/> and <see cref="GraphNode.Beta"/> (PyTorch's
    /// Hardsigmoid: α = 1/6, β = 1/2; ONNX HardSigmoid: its attributes).</summary>
    Hardsigmoid,
    /// <summary>Reorders the dimensions by <see cref="GraphNode.Dims"/> (the batch dimension first: ConvNeXt's channels-last
    /// sections).</summary>
    Permute,
    /// <summary>Layer norm over the last dimension: (x − mean) / √(var + ε) · γ + β, γ = <see cref="GraphNode.Weight"/>
    /// and β = <see cref="GraphNode.Bias"/> (null: none), ε = <see cref="GraphNode.Eps"/>.</summary>
    LayerNorm,
    /// <summary>The exact GELU, x · Φ(x); with <see cref="GraphNode.Tanh"/>, its tanh approximation.</summary>
    Gelu,
    /// <summary><see cref="GraphNode.Length"/> entries of dimension <see cref="GraphNode.Axis"/> from
    /// <see cref="GraphNode.Start"/> (a chunk or slice: ShuffleNet's halves).</summary>
    Narrow,
    /// <summary>The channels (dimension 1) split into <see cref="GraphNode.Groups"/> groups and interleaved (ShuffleNet's
    /// channel shuffle: view N×g×C/g×…, swap the two, view N×C×…).</summary>
    ChannelShuffle,
}

/// <summary>One operator of a <see cref="ModelGraph"/>. Inputs are indices of earlier nodes (−1: the graph input). Parameter
/// tensors are the model's own (do not dispose or modify them).</summary>
public sealed record GraphNode(string Name, GraphOp Op, int[] Inputs)
{
    /// <summary>Weight (Conv, Linear: as in PyTorch; BatchNorm: γ).</summary>
    public Tensor? Weight { get; init; }
    /// <summary>Bias (Conv, Linear; BatchNorm: β), or null.</summary>
    public Tensor? Bias { get; init; }
    /// <summary>Batch norm running mean.</summary>
    public Tensor? Mean { get; init; }
    /// <summary>Batch norm running variance.</summary>
    public Tensor? Var { get; init; }
    /// <summary>Batch norm ε.</summary>
    public double Eps { get; init; } = 1e-5;
    /// <summary>Kernel size (pools); AdaptiveAvgPool: output size.</summary>
    public long[] Kernel { get; init; } = [1, 1];
    /// <summary>Stride.</summary>
    public long[] Stride { get; init; } = [1, 1];
    /// <summary>Symmetric zero padding (height, width).</summary>
    public long[] Padding { get; init; } = [0, 0];
    /// <summary>Dilation.</summary>
    public long[] Dilation { get; init; } = [1, 1];
    /// <summary>Convolution groups; ChannelShuffle: the groups interleaved.</summary>
    public long Groups { get; init; } = 1;
    /// <summary>Pools: ceil instead of floor for the output size.</summary>
    public bool CeilMode { get; init; }
    /// <summary>AvgPool: padded zeros count in the average.</summary>
    public bool CountIncludePad { get; init; } = true;
    /// <summary>Concat, Narrow: the axis.</summary>
    public long Axis { get; init; } = 1;
    /// <summary>Reshape: target dimensions after the batch.</summary>
    public long[] Shape { get; init; } = [];
    /// <summary>Pad: left, right, top, bottom (negative values crop).</summary>
    public long[] Pads { get; init; } = [0, 0, 0, 0];
    /// <summary>Pad: the constant written in the padded border.</summary>
    public double PadValue { get; init; }
    /// <summary>Clip: lower bound, or null for none.</summary>
    public double? Min { get; init; }
    /// <summary>Clip: upper bound, or null for none.</summary>
    public double? Max { get; init; }
    /// <summary>Permute: the new order of the dimensions (the first one 0, the batch).</summary>
    public long[] Dims { get; init; } = [];
    /// <summary>Narrow: the first entry kept.</summary>
    public long Start { get; init; }
    /// <summary>Narrow: how many entries are kept.</summary>
    public long Length { get; init; }
    /// <summary>Gelu: the tanh approximation instead of the exact form.</summary>
    public bool Tanh { get; init; }
    /// <summary>Hardsigmoid: the slope α.</summary>
    public double Alpha { get; init; } = 1.0 / 6;
    /// <summary>Hardsigmoid: the offset β.</summary>
    public double Beta { get; init; } = 0.5;

    /// <summary>True for the operators with weights that act linearly on their input (Conv, Linear).</summary>
    public bool IsLinearLayer => Op is GraphOp.Conv or GraphOp.Linear;

    /// <summary>Computes the node on <paramref name="inputs"/> with its own parameters.</summary>
    public Tensor Apply(IReadOnlyList<Tensor> inputs) => Apply(inputs, Weight, Bias);

    /// <summary>Computes a Conv or Linear node with <paramref name="weight"/> and <paramref name="bias"/> (null: none) in place
    /// of its own (for rules that modify parameters); other operators ignore them.</summary>
    public Tensor Apply(IReadOnlyList<Tensor> inputs, Tensor? weight, Tensor? bias)
    {
        var x = inputs[0];
        switch (Op)
        {
            case GraphOp.Conv: return nn.functional.conv2d(x, weight!, bias, Stride, Padding, Dilation, Groups);
            case GraphOp.Linear: return nn.functional.linear(x, weight!, bias);
            case GraphOp.BatchNorm:
            {
                using var scope = NewDisposeScope();
                var shape = new long[x.dim()]; Array.Fill(shape, 1L); shape[1] = -1;
                var scale = Weight! / (Var! + Eps).sqrt();
                return scope.MoveToOuter(x * scale.view(shape) + (Bias! - Mean! * scale).view(shape));
            }
            case GraphOp.Relu: return nn.functional.relu(x);
            case GraphOp.MaxPool: return nn.functional.max_pool2d(x, Kernel, Stride, Padding, Dilation, CeilMode);
            case GraphOp.AvgPool: return nn.functional.avg_pool2d(x, Kernel, Stride, Padding, CeilMode, CountIncludePad);
            case GraphOp.AdaptiveAvgPool: return nn.functional.adaptive_avg_pool2d(x, Kernel);
            case GraphOp.Flatten: return x.flatten(1);
            case GraphOp.Reshape:
                return x.reshape([x.shape[0], .. Shape.Select((d, i) => d == 0 ? x.shape[i + 1] : d)]);
            case GraphOp.Add:
            {
                var sum = inputs[0];
                for (int i = 1; i < inputs.Count; i++) sum = sum + inputs[i];
                return inputs.Count == 1 ? sum.alias() : sum;
            }
            case GraphOp.Concat: return cat(inputs.ToArray(), Axis);
            case GraphOp.Identity: return x.alias();
            case GraphOp.Pad: return nn.functional.pad(x, Pads, PaddingModes.Constant, PadValue);
            case GraphOp.Clip: return x.clamp(Min is { } lo ? (Scalar)lo : null, Max is { } hi ? (Scalar)hi : null);
            case GraphOp.Sigmoid: return x.sigmoid();
            case GraphOp.Mul:
            {
                var product = inputs[0];
                for (int i = 1; i < inputs.Count; i++) product = product * inputs[i];
                if (Weight is not null) product = product * Weight;
                return inputs.Count == 1 && Weight is null ? product.alias() : product;
            }
            case GraphOp.Silu: return nn.functional.silu(x);
            case GraphOp.Hardswish: return nn.functional.hardswish(x);
            case GraphOp.Hardsigmoid:
                return Alpha == 1.0 / 6 && Beta == 0.5 ? nn.functional.hardsigmoid(x) : (x * Alpha + Beta).clamp(0, 1);
            case GraphOp.Permute: return x.permute(Dims);
            case GraphOp.LayerNorm: return nn.functional.layer_norm(x, [x.shape[^1]], Weight, Bias, Eps);
            case GraphOp.Gelu: return nn.functional.gelu(x, Tanh ? TorchSharp.Modules.GELU.Approximate.tanh : TorchSharp.Modules.GELU.Approximate.none);
            case GraphOp.Narrow: return x.narrow(Axis, Start, Length);
            case GraphOp.ChannelShuffle:
            {
                using var scope = NewDisposeScope();
                long[] grouped = [x.shape[0], Groups, x.shape[1] / Groups, .. x.shape[2..]];
                return scope.MoveToOuter(x.reshape(grouped).transpose(1, 2).reshape(x.shape));
            }
            default: throw new LoupeException($"graph node '{Name}': unknown operator {Op}");
        }
    }
}

/// <summary>A model as a dataflow graph of <see cref="GraphOp"/> operators in topological order; the last node is the
/// output. Techniques that propagate something other than gradients layer by layer (relevance rules, ...) run on it.</summary>
public sealed record ModelGraph(IReadOnlyList<GraphNode> Nodes)
{
    /// <summary>The layout a graph runs fastest in on this input: a batch of 2 or more multi-channel images with NHWC
    /// strides (channels-last, same N×C×H×W shape and values; libtorch's convolutions and pools keep that layout layer
    /// after layer, as the TorchSharp backend's own forward does for such batches), otherwise the input itself.
    /// Differentiable: gradients come back in the input's layout.</summary>
    public static Tensor PreferredLayout(Tensor input) =>
        input.dim() == 4 && input.shape[0] >= 2 && input.shape[1] > 1 && !input.permute(0, 2, 3, 1).is_contiguous()
            ? input.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2) : input;

    /// <summary>Runs the graph, returning every node's output (index = node index). Give the input in
    /// <see cref="PreferredLayout"/> for speed.</summary>
    public Tensor[] Run(Tensor input)
    {
        var values = new Tensor[Nodes.Count];
        for (int i = 0; i < Nodes.Count; i++)
        {
            var n = Nodes[i];
            values[i] = n.Apply(n.Inputs.Select(j => j < 0 ? input : values[j]).ToArray());
        }
        return values;
    }

    /// <summary>The graph with each batch norm fed only by a convolution/dense layer merged into it (w′ = w·s,
    /// b′ = b·s + t with s = γ/√(σ² + ε), t = β − μs; the batch norm becomes an identity) and any other batch norm made
    /// a depthwise 1×1 convolution with bias t, whose index goes in <paramref name="standalone"/>. <paramref name="merged"/>
    /// (when given) receives, per merged layer, its own bias (or null) and the batch norm's s and t. A merged layer's
    /// output is the batch norm's, so the gradient there is the batch norm's output gradient. Tensors made here belong
    /// to the caller's dispose scope. <paramref name="keepSeparate"/> (batch norm index → true) leaves a batch norm its
    /// own node (the depthwise convolution) even where it could be merged: LRP under Captum's conventions, whose rules
    /// treat the convolution and the batch norm as two layers.</summary>
    public ModelGraph FoldBatchNorms(out HashSet<int> standalone, Dictionary<int, (Tensor? Bias, Tensor Scale, Tensor Shift)>? merged = null, Func<int, bool>? keepSeparate = null)
    {
        var nodes = Nodes.ToList();
        var consumers = Consumers();
        standalone = [];
        for (int i = 0; i < nodes.Count; i++)
        {
            var bn = nodes[i];
            if (bn.Op != GraphOp.BatchNorm) continue;
            var scale = bn.Weight! / (bn.Var! + bn.Eps).sqrt();
            var shift = bn.Bias! - bn.Mean! * scale;
            int p = bn.Inputs[0];
            if (p >= 0 && nodes[p].IsLinearLayer && consumers[p].Count == 1 && keepSeparate?.Invoke(i) != true)
            {
                var layer = nodes[p];
                var view = new long[layer.Weight!.dim()]; Array.Fill(view, 1L); view[0] = -1;
                merged?.Add(p, (layer.Bias, scale, shift));
                nodes[p] = layer with
                {
                    Weight = layer.Weight * scale.view(view),
                    Bias = (layer.Bias is null ? shift : layer.Bias * scale + shift),
                };
                nodes[i] = new GraphNode(bn.Name, GraphOp.Identity, bn.Inputs);
            }
            else
            {
                nodes[i] = new GraphNode(bn.Name, GraphOp.Conv, bn.Inputs) { Weight = scale.view(-1, 1, 1, 1), Bias = shift, Groups = scale.shape[0] };
                standalone.Add(i);
            }
        }
        return new ModelGraph(nodes);
    }

    /// <summary>For each node, the nodes that read its output.</summary>
    public List<int>[] Consumers()
    {
        var consumers = Nodes.Select(_ => new List<int>()).ToArray();
        for (int i = 0; i < Nodes.Count; i++)
            foreach (var j in Nodes[i].Inputs.Where(j => j >= 0)) consumers[j].Add(i);
        return consumers;
    }

    /// <summary>Checks indices (every input an earlier node or the graph input) and parameters.</summary>
    public void Validate(string source)
    {
        if (Nodes.Count == 0) throw new LoupeException($"{source}: the model graph is empty");
        for (int i = 0; i < Nodes.Count; i++)
        {
            var n = Nodes[i];
            if (n.Inputs.Length == 0 || n.Inputs.Any(j => j < -1 || j >= i))
                throw new LoupeException($"{source}: graph node '{n.Name}' ({n.Op}) reads inputs [{string.Join(", ", n.Inputs)}]: each must be an earlier node or −1 (the input)");
            if (n.IsLinearLayer && n.Weight is null || n.Op == GraphOp.BatchNorm && (n.Weight is null || n.Bias is null || n.Mean is null || n.Var is null))
                throw new LoupeException($"{source}: graph node '{n.Name}' ({n.Op}) lacks its parameters");
            if (n.Op == GraphOp.Permute && (n.Dims.Length < 2 || n.Dims[0] != 0 || !n.Dims.Order().SequenceEqual(Enumerable.Range(0, n.Dims.Length).Select(d => (long)d))))
                throw new LoupeException($"{source}: graph node '{n.Name}' permutes dimensions ({string.Join(", ", n.Dims)}): a permutation that keeps the batch first is needed");
        }
    }
}

/// <summary>Implemented by models that can describe themselves as a <see cref="ModelGraph"/> (capability
/// <see cref="ModelCapabilities.Graph"/>).</summary>
public interface IModelGraphSource
{
    /// <summary>The model as a graph of standard operators, or a <see cref="LoupeException"/> naming the first part of the
    /// model that has no <see cref="GraphOp"/> equivalent. Running it gives the model's output (same weights).</summary>
    ModelGraph Graph();
}
