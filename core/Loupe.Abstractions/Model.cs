using TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Abstractions;

/// <summary>What a loaded model can do. Analyses declare what they need; the validator compares.</summary>
[Flags]
public enum ModelCapabilities
{
    /// <summary>No capability.</summary>
    None = 0,
    /// <summary>Runs a forward pass.</summary>
    Forward = 1,
    /// <summary>Exposes intermediate layer activations.</summary>
    LayerActivations = 2,
    /// <summary>Differentiable: gradients w.r.t. inputs and activations.</summary>
    Gradients = 4,
    /// <summary>Exposes parameters (weights) by name.</summary>
    Parameters = 8,
    /// <summary>Layer outputs can be replaced during a forward pass (<see cref="IModelInterventions.Intervene"/>).</summary>
    Interventions = 16,
    /// <summary>Every ReLU's backward rule can be replaced (guided backprop, deconvnet: <see cref="IModelInterventions.OverrideRelu(ReluRule)"/>).</summary>
    ReluOverride = 32,
    /// <summary>The model describes itself as a dataflow graph of standard operators (<see cref="IModelGraphSource.Graph"/>).</summary>
    Graph = 64,
}

/// <summary>Backward rules for ReLUs (Springenberg et al. 2015; Zeiler &amp; Fergus 2014).</summary>
public enum ReluRule
{
    /// <summary>Guided backprop: pass the gradient where the forward input &gt; 0 and the incoming gradient &gt; 0.</summary>
    Guided,
    /// <summary>DeconvNet: pass relu(incoming gradient), whatever the forward input was.</summary>
    Deconvnet,
    /// <summary>DeepLift's rescale rule (Captum's conventions): the batch is [inputs; references] (2N rows); every ReLU
    /// back-propagates Δout/Δin between the two halves, and so does every max pool (Captum's maxpool rule); the onnx
    /// interpreter also gives Sigmoid, Tanh and Softmax nodes Captum's rules (<see cref="Rescale"/>).</summary>
    Rescale,
    /// <summary>β-smooth (Dombrowski et al. 2019; Zennit's ReLUBetaSmooth): the gradient times sigmoid(β·x), x the
    /// ReLU's input — softplus's derivative in place of the step (β from
    /// <see cref="IModelInterventions.OverrideRelu(ReluRule, double)"/>).</summary>
    BetaSmooth,
}

/// <summary>Optional: parameters handed out for reading only. <see cref="IModel.GetParameter"/> prepares the model for
/// the caller changing the tensor (a TorchSharp model runs a folded convolution–BatchNorm pair unfolded from then on);
/// reading through this leaves the model as it is. The caller must neither change nor dispose the tensor.</summary>
public interface IModelParameterReader
{
    /// <summary>A named parameter to read, or null.</summary>
    Tensor? ReadParameter(string name);
}

/// <summary>Reading a model's parameters without preparing it for their change.</summary>
public static class ModelParameters
{
    /// <summary>A named parameter to look at only (<see cref="IModelParameterReader"/> where the model offers it, else
    /// <see cref="IModel.GetParameter"/>), or null. The caller must neither change nor dispose it.</summary>
    public static Tensor? Read(IModel model, string name) => model is IModelParameterReader r ? r.ReadParameter(name) : model.GetParameter(name);
}

/// <summary>Optional model features behind <see cref="ModelCapabilities.Interventions"/> and <see cref="ModelCapabilities.ReluOverride"/>.</summary>
public interface IModelInterventions
{
    /// <summary>While the returned handle lives, the output of <paramref name="layer"/> is replaced by
    /// <paramref name="transform"/>(output) on every forward pass (e.g. zero a channel for Ablation-CAM).</summary>
    IDisposable Intervene(string layer, Func<Tensor, Tensor> transform);
    /// <summary>While the returned handle lives, every ReLU of the model (modules and the ReLUs inside residual blocks)
    /// back-propagates with <paramref name="rule"/>. The forward pass is unchanged.</summary>
    IDisposable OverrideRelu(ReluRule rule);
    /// <summary>As <see cref="OverrideRelu(ReluRule)"/>, with the rule's parameter: β of <see cref="ReluRule.BetaSmooth"/>
    /// (a backend without that rule refuses it; the other rules take no parameter).</summary>
    IDisposable OverrideRelu(ReluRule rule, double beta) => rule == ReluRule.BetaSmooth
        ? throw new LoupeException("this model backend has no beta-smooth ReLU rule") : OverrideRelu(rule);
}

/// <summary>Optional model feature: a layer's *input* instead of its output (Captum's <c>attribute_to_layer_input=True</c>).
/// The TorchSharp backend uses forward pre-hooks (the tensor the module receives); the onnx interpreter the value the
/// node reads (its first input).</summary>
public interface ILayerInputs
{
    /// <summary>As <see cref="IModel.Capture"/>, for the inputs of <paramref name="layers"/> (indexed by layer name).</summary>
    ILayerCapture CaptureInputs(IReadOnlyCollection<string> layers, bool forGradients);
    /// <summary>As <see cref="IModelInterventions.Intervene"/>, for the input of <paramref name="layer"/>.</summary>
    IDisposable InterveneInput(string layer, Func<Tensor, Tensor> transform);
}

/// <summary>Implemented by options records with an <c>attribute_to_layer_input</c> option: when it is true, the host
/// checks the shape of each spatial layer's *input* (the tensor attributed) instead of its output.</summary>
public interface IAttributesToLayerInput
{
    /// <summary>True when the step attributes to its layers' inputs.</summary>
    bool AttributeToLayerInput { get; }
}

/// <summary>Helpers for options that attribute to a layer's input.</summary>
public static class LayerInputs
{
    /// <summary>Description of the <c>attribute_to_layer_input</c> options.</summary>
    public const string Description = "attribute to the layer's input instead of its output (Captum's attribute_to_layer_input=True): the tensor the module receives (torchvision) or the value the node reads (onnx)";

    /// <summary>The model's layer-input feature, or a clear error naming <paramref name="who"/>.</summary>
    public static ILayerInputs Of(IModel model, string who) => model as ILayerInputs
        ?? throw new LoupeException($"{who}: attribute_to_layer_input needs a backend that exposes layer inputs (torchvision, onnx); {model.GetType().Name} does not");

    /// <summary>A validation error when the model cannot give layer inputs (null when it can, or when not asked).</summary>
    public static string? Check(bool asked, object? model) =>
        asked && model is IModel m && m is not ILayerInputs ? $"attribute_to_layer_input: this model backend ({m.GetType().Name}) does not expose layer inputs; the torchvision and onnx backends do" : null;

    /// <summary>Replaces the output (or, with <paramref name="input"/>, the input) of <paramref name="layer"/> on every forward.</summary>
    public static IDisposable Intervene(IModel model, string layer, bool input, Func<Tensor, Tensor> transform, string who) =>
        input ? Of(model, who).InterveneInput(layer, transform) : ((IModelInterventions)model).Intervene(layer, transform);
}

/// <summary>How raw pixels become model input: resize to <see cref="Height"/>×<see cref="Width"/>,
/// scale uint8 to [0,1] (÷255), then (x − mean) / std per channel.</summary>
public sealed record InputSpec(int Channels, int Height, int Width, float[] Mean, float[] Std)
{
    /// <summary>Checks the spec is consistent.</summary>
    public void Validate()
    {
        if (Channels is not (1 or 3)) throw new ArgumentException($"input channels must be 1 or 3, got {Channels}");
        if (Height <= 0 || Width <= 0) throw new ArgumentException($"input size must be positive, got {Height}×{Width}");
        if (Mean.Length != Channels || Std.Length != Channels)
            throw new ArgumentException($"input mean/std need {Channels} value(s), got {Mean.Length}/{Std.Length}");
        if (Std.Any(s => s <= 0)) throw new ArgumentException("input std values must be > 0");
    }

    /// <summary>Normalises pixels in [0,1] (N×C×H×W) to model input.</summary>
    public Tensor Normalize(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var m = tensor(Mean).view(1, Channels, 1, 1);
        var s = tensor(Std).view(1, Channels, 1, 1);
        return scope.MoveToOuter((pixels - m) / s);
    }

    /// <summary>Inverse of <see cref="Normalize"/>, clamped to [0,1] (for display of preprocessed inputs).</summary>
    public Tensor Denormalize(Tensor input)
    {
        using var scope = NewDisposeScope();
        var m = tensor(Mean).view(1, Channels, 1, 1);
        var s = tensor(Std).view(1, Channels, 1, 1);
        return scope.MoveToOuter((input * s + m).clamp(0, 1));
    }
}

/// <summary>One named layer of a model.</summary>
/// <param name="Name">Dotted name, as a step names it (e.g. <c>layer4.1.conv2</c>).</param>
/// <param name="Kind">Module type (Conv2d, ReLU, ...).</param>
public sealed record LayerInfo(string Name, string Kind)
{
    /// <summary>Convolution/pooling geometry where the layer has one (for receptive fields).</summary>
    public LayerGeometry? Geometry { get; init; }

    /// <summary>Set when this name is another name for the output of the listed layer named here (an ONNX node's name
    /// beside its output's, a PyTorch module path of an exported graph): capturing both captures one tensor twice.
    /// </summary>
    public string? AliasOf { get; init; }

    /// <summary>Whether the layer is a module of the network as its source code built it (a TorchSharp module, a
    /// PyTorch module path recovered from an exported graph) rather than a node of a graph; what a PyTorch forward
    /// hook would see.</summary>
    public bool IsModule { get; init; }
}

/// <summary>Kernel, stride, padding and dilation of a spatial layer.</summary>
public sealed record LayerGeometry(int[] Kernel, int[] Stride, int[] Padding, int[] Dilation);

/// <summary>A loaded model. Implementations own native memory: dispose it.</summary>
public interface IModel : IDisposable
{
    /// <summary>What this model can do.</summary>
    ModelCapabilities Capabilities { get; }
    /// <summary>The preprocessing the model was trained with (a pipeline's <c>model.input</c> overrides it).</summary>
    InputSpec DefaultInput { get; }
    /// <summary>Class labels the model carries, or null (a pipeline's <c>model.labels</c> overrides it).</summary>
    IReadOnlyList<string>? DefaultLabels { get; }
    /// <summary>Every layer a step may name.</summary>
    IReadOnlyList<LayerInfo> Layers { get; }
    /// <summary>Runs the model on a normalised batch (N×C×H×W). Gradients flow when the input or a captured layer requires them.</summary>
    Tensor Forward(Tensor input);
    /// <summary>Starts capturing the outputs of <paramref name="layers"/> on subsequent forwards. With
    /// <paramref name="forGradients"/>, each captured activation is a leaf that requires grad, so
    /// <c>CheckedOps.Grad(score, capture[layer])</c> works without a backward pass to the input.</summary>
    ILayerCapture Capture(IReadOnlyCollection<string> layers, bool forGradients);
    /// <summary>A named parameter (e.g. <c>conv1.weight</c>), or null. The caller must not dispose it.</summary>
    Tensor? GetParameter(string name);
    /// <summary>Names of all parameters.</summary>
    IReadOnlyList<string> ParameterNames { get; }
}

/// <summary>Active layer capture; disposing removes every hook (also after exceptions).</summary>
public interface ILayerCapture : IDisposable
{
    /// <summary>Output of <paramref name="layer"/> in the latest forward; owned by the capture until the next forward or dispose.</summary>
    Tensor this[string layer] { get; }
    /// <summary>True when the layer produced an output in the latest forward.</summary>
    bool TryGet(string layer, out Tensor activation);
}

/// <summary>What a model adapter gets when loading.</summary>
/// <param name="BaseDirectory">Directory of the pipeline file: relative paths resolve against it.</param>
/// <param name="Seed">Run seed (for models built without weights).</param>
public sealed record ModelLoadContext(string BaseDirectory, int Seed)
{
    /// <summary>Warnings to put in the manifest.</summary>
    public Action<string> Warn { get; init; } = _ => { };
}

/// <summary>Creates models from options (a backend). Derive from <see cref="ModelAdapter{TOptions}"/>.</summary>
public interface IModelAdapter : IHasOptions
{
    /// <summary>Loads the model; throws <see cref="LoupeException"/> with a clear message on bad input.</summary>
    IModel Load(object options, ModelLoadContext context);
    /// <summary>Files that identify the model (hashed into the manifest).</summary>
    IEnumerable<string> Files(object options, string baseDirectory);
}

/// <summary>Base class of model adapters.</summary>
public abstract class ModelAdapter<TOptions> : IModelAdapter, IHasOptions<TOptions> where TOptions : class, new()
{
    /// <inheritdoc/>
    public Type OptionsType => typeof(TOptions);
    /// <summary>Loads the model.</summary>
    public abstract IModel Load(TOptions options, ModelLoadContext context);
    /// <summary>Files that identify the model.</summary>
    public virtual IEnumerable<string> Files(TOptions options, string baseDirectory) => [];
    IModel IModelAdapter.Load(object options, ModelLoadContext context) => Load((TOptions)options, context);
    IEnumerable<string> IModelAdapter.Files(object options, string baseDirectory) => Files((TOptions)options, baseDirectory);
}

/// <summary>An error with a message meant for the user (no stack trace needed).</summary>
public class LoupeException(string message, Exception? inner = null) : Exception(message, inner);
