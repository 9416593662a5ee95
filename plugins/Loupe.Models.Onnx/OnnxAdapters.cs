using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Google.Protobuf;
using Loupe.Abstractions;
using Onnx;

namespace Loupe.Models.Onnx;

/// <summary>Options of the <c>onnx</c> and <c>onnx-runtime</c> backends.</summary>
public sealed record OnnxOptions
{
    /// <summary>The .onnx file.</summary>
    [FilePath, Description("the .onnx file (or use 'model' for a built-in model)")]
    public string? Path { get; init; }

    /// <summary>A built-in model.</summary>
    [Description("built-in model instead of a path: mlnet-resnet18 (ImageNet ResNet-18 features from ML.NET, 512 outputs)")]
    public string? Model { get; init; }

    /// <summary>Preprocessing preset for a file given by path.</summary>
    [Description("preprocessing preset for 'path': imagenet (torchvision's mean [0.485, 0.456, 0.406] and std [0.229, 0.224, 0.225]) or mlnet-resnet18 (prepends ML.NET's ResNet preprocessing graph: ×255, RGB→BGR, minus the mean image)")]
    public string? Preset { get; init; }

    /// <summary>Per-channel mean of the input normalisation.</summary>
    [Description("per-channel mean subtracted from pixels÷255 (default 0); one value or one per channel")]
    public float[]? Mean { get; init; }

    /// <summary>Per-channel std of the input normalisation.</summary>
    [Description("per-channel std dividing pixels÷255 − mean (default 1); one value or one per channel")]
    public float[]? Std { get; init; }

    /// <summary>Channels, where the input shape is symbolic.</summary>
    [Range(1, 3), Description("input channels, where the model's input shape does not fix them")]
    public int? Channels { get; init; }

    /// <summary>Height, where the input shape is symbolic.</summary>
    [Range(1, 16384), Description("input height, where the model's input shape does not fix it")]
    public int? Height { get; init; }

    /// <summary>Width, where the input shape is symbolic.</summary>
    [Range(1, 16384), Description("input width, where the model's input shape does not fix it")]
    public int? Width { get; init; }

    /// <summary>Which value is the model output.</summary>
    [Description("value used as the model output (default: the first graph output)")]
    public string? Output { get; init; }

    /// <summary>Flatten N×K×1×1 style outputs to N×K.</summary>
    [Description("reshape an output of rank > 2 to N×K (scores per input; default true)")]
    public bool FlattenOutput { get; init; } = true;

    /// <summary>The graph input that takes the image.</summary>
    [Description("where the model has several inputs: the graph input that takes the image (default: its only N×C×H×W input); the others are side inputs")]
    public string? ImageInput { get; init; }

    /// <summary>Sources of the side inputs.</summary>
    [Description("values of the model's side inputs (inputs besides the image, e.g. a metadata vector), one entry per input: { name: NAME, folder: DIR } (one <id>.npy per input id) or { name: NAME, file: X.npy } (the same for every input)")]
    public SideInputSource[]? SideInputs { get; init; }

    /// <summary>Largest accepted model file.</summary>
    [Range(1, 2048), Description("refuse .onnx files (and external data) larger than this many MB (default 2048)")]
    public int MaxFileMb { get; init; } = 2048;

    /// <summary>Memory layout of image batches in the differentiable interpreter.</summary>
    [Description("onnx only: memory layout of image batches: auto (channels-last for batches of 2+ multi-channel images, as the torchvision backend), always, never")]
    public OnnxLayout Layout { get; init; } = OnnxLayout.Auto;

    /// <summary>ONNX Runtime intra-op threads.</summary>
    [Range(0, 256), Description("onnx-runtime only: intra-op threads (0 = as many as libtorch uses)")]
    public int Threads { get; init; }

    [Range(0, 86400), Description("onnx-runtime only: seconds one ONNX Runtime run may take before it is stopped, for files whose Loop never ends (the onnx backend stops a Loop after 10,000 iterations); 0 = no limit")]
    public int RunTimeoutS { get; init; } = 300;

    [Description("onnx-runtime only: run ONNX Runtime's own operators (domains com.microsoft, com.microsoft.nchwc, ...) that Loupe does not expand into standard ones; only for files you trust: their kernels are not hardened against malformed graphs (default false: refused by name)")]
    public bool ContribOperators { get; init; }
}

/// <summary>How the <c>onnx</c> backend lays out 4-D image batches (the torchvision backend's <c>layout</c> rule).</summary>
public enum OnnxLayout
{
    /// <summary>Channels-last (NHWC strides) for batches of 2 or more images with more than one channel: libtorch's
    /// oneDNN convolutions are faster so at batch 8, slower for single images.</summary>
    Auto,
    /// <summary>Channels-last for every multi-channel 4-D input.</summary>
    Always,
    /// <summary>The input as given (NCHW).</summary>
    Never,
}

/// <summary>Resolves options to a checked, self-contained model (built-ins, presets, external data).</summary>
public static class OnnxSources
{
    /// <summary>Built-in model names.</summary>
    public static readonly string[] BuiltIns = ["mlnet-resnet18"];
    static readonly string[] Presets = ["mlnet-resnet18", "imagenet"];

    /// <summary>torchvision's ImageNet normalisation (mean and std of the RGB channels, pixels÷255).</summary>
    public static readonly float[] ImageNetMean = [0.485f, 0.456f, 0.406f], ImageNetStd = [0.229f, 0.224f, 0.225f];

    /// <summary>Mean and std from the options: given ones, else those of <c>preset: imagenet</c>, else null (0 and 1).</summary>
    public static (float[]? Mean, float[]? Std) Normalisation(OnnxOptions o) =>
        o.Preset?.Trim().ToLowerInvariant() == "imagenet" ? (o.Mean ?? ImageNetMean, o.Std ?? ImageNetStd) : (o.Mean, o.Std);

    /// <summary>Folder of the built-in ML.NET ResNet-18 files (copied from the NuGet package at build).</summary>
    public static string MlNetDirectory =>
        System.IO.Path.Combine(System.IO.Path.GetDirectoryName(typeof(OnnxSources).Assembly.Location)!, "models", "mlnet-resnet18");

    /// <summary>The files that identify the model (hashed into the manifest).</summary>
    public static IEnumerable<string> Files(OnnxOptions o, string baseDirectory)
    {
        if (o.Model is not null)
        {
            if (o.Model.Trim().ToLowerInvariant() == "mlnet-resnet18")
                return [System.IO.Path.Combine(MlNetDirectory, "ResNet18.onnx"), System.IO.Path.Combine(MlNetDirectory, "ResNetPreprocess.onnx")];
            return [];
        }
        if (o.Path is null) return [];
        var p = System.IO.Path.GetFullPath(System.IO.Path.Combine(baseDirectory, o.Path));
        return o.Preset?.Trim().ToLowerInvariant() != "mlnet-resnet18" ? [p] : [p, System.IO.Path.Combine(MlNetDirectory, "ResNetPreprocess.onnx")];
    }

    /// <summary>Loads and checks the model the options name.</summary>
    public static OnnxFile Load(OnnxOptions o, ModelLoadContext context)
    {
        long max = (long)o.MaxFileMb * 1024 * 1024;
        if (o.Model is null == (o.Path is null))
            throw new LoupeException($"set exactly one of 'path' (an .onnx file) or 'model' (built-in: {string.Join(", ", BuiltIns)})");
        string? preset = o.Preset?.Trim().ToLowerInvariant();
        string path;
        if (o.Model is not null)
        {
            var name = o.Model.Trim().ToLowerInvariant();
            if (!BuiltIns.Contains(name))
                throw new LoupeException($"unknown built-in model '{o.Model}'{Suggest.DidYouMean(name, BuiltIns)}; built-in models: {string.Join(", ", BuiltIns)}");
            path = System.IO.Path.Combine(MlNetDirectory, "ResNet18.onnx");
            if (!File.Exists(path))
                throw new LoupeException($"built-in model {name} is missing ({path}); it is copied from the NuGet package Microsoft.ML.DnnImageFeaturizer.ResNet18 when the plugin is built: rebuild the plugin");
            preset ??= name;
        }
        else path = System.IO.Path.GetFullPath(System.IO.Path.Combine(context.BaseDirectory, o.Path!));
        if (preset is not null && !Presets.Contains(preset))
            throw new LoupeException($"unknown preset '{o.Preset}'{Suggest.DidYouMean(preset, Presets)}; presets: {string.Join(", ", Presets)}");
        var file = OnnxFile.Load(path, max).WithImageInput(o.ImageInput);
        if (preset == "mlnet-resnet18" && file.Inputs.Count > 1)
            throw new LoupeException($"{path}: preset mlnet-resnet18 is for ML.NET's single-input ResNet18.onnx; this model has {file.Inputs.Count} inputs");
        if (preset == "mlnet-resnet18")
        {
            if (o.Mean is not null || o.Std is not null)
                throw new LoupeException("preset mlnet-resnet18 fixes the preprocessing inside the graph (input = pixels÷255, mean 0, std 1): remove options mean/std");
            var prep = OnnxFile.Load(System.IO.Path.Combine(MlNetDirectory, "ResNetPreprocess.onnx"), max);
            file = OnnxFile.FromProto(MlNetPreprocess.Prepend(prep.Model, file.Model, path), path, max);
        }
        else if (preset is null && o.Mean is null && o.Std is null && file.InputSpecFor(o).Spec.Channels == 3)
            context.Warn($"{path}: an RGB model runs with mean 0 and std 1 (no 'mean'/'std' given); models trained on ImageNet-normalised inputs (torchvision's) need 'preset: imagenet'");
        return file;
    }
}

/// <summary>ML.NET's DnnImageFeaturizer runs ResNetPreprocess.onnx (RGB 0–255 planar → BGR minus a 224×224 mean
/// image) before ResNet18.onnx. A Loupe <see cref="InputSpec"/> only expresses per-channel (pixels÷255 − mean)/std,
/// so the preprocessing graph is prepended to the model instead: the model input is pixels÷255 (mean 0, std 1), the
/// first node multiplies by 255, then ML.NET's own Split/Concat/Sub nodes and mean image follow.</summary>
public static class MlNetPreprocess
{
    /// <summary>Name of the model input after the merge.</summary>
    public const string InputName = "pixels";

    /// <summary>Returns a copy of <paramref name="model"/> with <paramref name="prep"/> in front of its input.</summary>
    public static ModelProto Prepend(ModelProto prep, ModelProto model, string source)
    {
        var merged = model.Clone();
        var g = merged.Graph;
        var init = g.Initializer.Select(t => t.Name).ToHashSet();
        var input = g.Input.Single(i => !init.Contains(i.Name));
        var pg = prep.Graph;
        var prepInit = pg.Initializer.Select(t => t.Name).ToHashSet();
        var prepIn = pg.Input.Single(i => !prepInit.Contains(i.Name)).Name;
        var prepOut = pg.Output.Single().Name;
        var inDims = OnnxFile.Dims(input);
        var prepDims = OnnxFile.Dims(pg.Output[0]);
        if (inDims is null || prepDims is null || !inDims.SequenceEqual(prepDims))
            throw new LoupeException($"{source}: input '{input.Name}' {OnnxFile.Describe(inDims)} does not match the ML.NET preprocessing output {OnnxFile.Describe(prepDims)}; preset mlnet-resnet18 is for ML.NET's ResNet18.onnx");

        var used = g.Node.SelectMany(n => n.Input.Concat(n.Output)).Concat(init).ToHashSet();
        string Fresh(string name) { var n = name; while (used.Contains(n)) n = "mlnet_prep_" + n; used.Add(n); return n; }
        var rename = new Dictionary<string, string> { [prepOut] = input.Name };
        foreach (var t in pg.Initializer) rename[t.Name] = Fresh(t.Name);
        foreach (var n in pg.Node) foreach (var o in n.Output) rename.TryAdd(o, Fresh(o));
        var scaled = Fresh("pixels_0_255");
        rename[prepIn] = scaled;
        var scale = new TensorProto { Name = Fresh("pixel_scale_255"), DataType = (int)TensorProto.Types.DataType.Float };
        scale.FloatData.Add(255f);

        var nodes = new List<NodeProto> { new() { OpType = "Mul", Name = "ScalePixels", Input = { InputName, scale.Name }, Output = { scaled } } };
        string[] names = ["SplitRGB", "ConcatBGR", "SubtractMeanImage"];
        int k = 0;
        foreach (var n in pg.Node)
        {
            var c = n.Clone();
            if (c.Name.Length == 0 && k < names.Length) c.Name = names[k];
            k++;
            for (int i = 0; i < c.Input.Count; i++) c.Input[i] = rename.GetValueOrDefault(c.Input[i], c.Input[i]);
            for (int i = 0; i < c.Output.Count; i++) c.Output[i] = rename.GetValueOrDefault(c.Output[i], c.Output[i]);
            nodes.Add(c);
        }
        for (int i = nodes.Count - 1; i >= 0; i--) g.Node.Insert(0, nodes[i]);
        foreach (var t in pg.Initializer) { var c = t.Clone(); c.Name = rename[t.Name]; g.Initializer.Add(c); }
        g.Initializer.Add(scale);
        var newInput = input.Clone();
        newInput.Name = InputName;
        g.Input[g.Input.IndexOf(input)] = newInput;
        return merged;
    }
}

/// <summary>The <c>onnx</c> backend: an ONNX file as a differentiable TorchSharp graph.</summary>
public sealed class OnnxAdapter : ModelAdapter<OnnxOptions>
{
    /// <inheritdoc/>
    public override IModel Load(OnnxOptions options, ModelLoadContext context)
    {
        var model = OnnxModel.Create(OnnxSources.Load(options, context), options);
        if (model.RowByRow && !model.Unbatched)
            context.Warn($"{model.Source}: the graph was exported for a batch of one and does not run larger batches as it runs each image (its reshapes have the 1 written in): batches run as rows of one, in step — correct, slower than a batched graph; export with a dynamic batch (dynamic_axes, or dynamic_shapes with dynamo=True) for speed");
        return model;
    }

    /// <inheritdoc/>
    public override IEnumerable<string> Files(OnnxOptions options, string baseDirectory) => OnnxSources.Files(options, baseDirectory);
}

/// <summary>The <c>onnx-runtime</c> backend: ONNX Runtime, forward and layer activations only.</summary>
public sealed class OnnxRuntimeAdapter : ModelAdapter<OnnxOptions>
{
    /// <inheritdoc/>
    public override IModel Load(OnnxOptions options, ModelLoadContext context) => OrtModel.Create(OnnxSources.Load(options, context), options);

    /// <inheritdoc/>
    public override IEnumerable<string> Files(OnnxOptions options, string baseDirectory) => OnnxSources.Files(options, baseDirectory);
}

/// <summary>Registers the ONNX backends.</summary>
public sealed class Registrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services)
    {
        services.AddLoupeModel<OnnxAdapter>("onnx", "ONNX models (opsets 7-23) interpreted in TorchSharp; differentiable; built-in: mlnet-resnet18");
        services.AddLoupeModel<OnnxRuntimeAdapter>("onnx-runtime", "ONNX models run by ONNX Runtime; forward and layer activations only (no gradients)");
    }
}
