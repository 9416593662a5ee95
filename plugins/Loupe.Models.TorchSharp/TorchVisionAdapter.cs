using System.Reflection;
using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Models.TorchSharp;

/// <summary>Options of the <c>torchvision</c> backend.</summary>
public sealed record TorchVisionOptions
{
    /// <summary>Architecture name.</summary>
    [Required, Description("architecture: alexnet, vgg11..vgg19 (+_bn), resnet18..resnet152, wide_resnet50_2, wide_resnet101_2, resnext50_32x4d, googlenet, inception_v3, mobilenet_v2, mobilenet_v3_small, mobilenet_v3_large, convnext_tiny/small/base/large, efficientnet_b0..b7, efficientnet_v2_s/m/l, densenet121/161/169/201, squeezenet1_0/1_1, shufflenet_v2_x0_5/x1_0/x1_5/x2_0, mnasnet0_5/0_75/1_0/1_3, regnet_x_400mf/800mf/1_6gf/3_2gf/8gf/16gf/32gf, regnet_y_400mf/800mf/1_6gf/3_2gf/8gf/16gf/32gf/128gf, swin_t/s/b, swin_v2_t/s/b, maxvit_t (224×224), vit_b_16/b_32/l_16/l_32/h_14 (224×224 inputs), or fashion-cnn (the Loupe demo CNN)")]
    public string Architecture { get; init; } = "";

    /// <summary>Number of outputs of the classifier head.</summary>
    [Range(1, 100_000), Description("number of classes of the classifier head (default: 1000, or 10 for fashion-cnn)")]
    public int? NumClasses { get; init; }

    /// <summary>Memory layout of 4-D inputs.</summary>
    [Description("memory layout of image batches: auto (channels-last for batches of 2 or more, where libtorch's oneDNN convolutions are faster; NCHW for single images, except RegNet, DenseNet, MNASNet, MobileNet v3 and EfficientNet, measured faster channels-last at batch 1 too), always, or never")]
    public MemoryLayout Layout { get; init; } = MemoryLayout.Auto;

    /// <summary>Fold eval-mode batch norms into the convolutions before them.</summary>
    [Description("fold batch norms into the convolutions before them (ResNets, VGG-BN, the demo CNN): the same outputs to float rounding, ~5 % faster passes; layers keep their names, and capturing a folded convolution unfolds it while captured")]
    public bool FoldBatchnorm { get; init; } = true;

    /// <summary>Run max pools and first-layer convolution gradients on faster kernels.</summary>
    [Description("faster kernels with the same results: max pools of NCHW batches through libtorch's channels-last kernel, and the input gradient of convolutions with at most 4 input channels as one matrix product (resnet18 at batch 1: forward ~13 %, forward+backward ~9 % faster)")]
    public bool FastKernels { get; init; } = true;

    /// <summary>Weights file.</summary>
    [FilePath, Description("weights: PyTorch state_dict (.pt/.pth, zip format), .safetensors, or TorchSharp .dat; omit for a seeded random initialisation")]
    public string? Weights { get; init; }

    /// <summary>Entry of a checkpoint dict that holds the state_dict.</summary>
    [Description("the checkpoint entry holding the state_dict, for files such as {'state_dict': ..., 'epoch': ...} (default: the file itself when it is a state_dict, else the first of state_dict, model_state_dict, model, net, module found)")]
    public string? WeightsKey { get; init; }

    /// <summary>GoogLeNet's and Inception v3's input transform.</summary>
    [Description("googlenet and inception_v3: re-normalise the input inside the model from ImageNet's mean and std to [-1, 1], as torchvision's pretrained GoogLeNet and Inception v3 do (their builders set transform_input=True when given weights); default: true when weights are given (torchvision's checkpoints and the models fine-tuned from them), false for a random initialisation — set false for weights trained from scratch")]
    public bool? TransformInput { get; init; }

    /// <summary>Prefix removed from every parameter name.</summary>
    [Description("prefix removed from every parameter name, e.g. 'model.' (Lightning) or 'module.' (DataParallel; removed automatically when every name has it)")]
    public string? StripPrefix { get; init; }
}

/// <summary>TorchVision architectures (and the demo CNN) as a differentiable TorchSharp model.</summary>
public sealed class TorchVisionAdapter : ModelAdapter<TorchVisionOptions>
{
    static readonly InputSpec ImageNet = new(3, 224, 224, [0.485f, 0.456f, 0.406f], [0.229f, 0.224f, 0.225f]);
    /// <summary>Fashion-MNIST training-set statistics (pixels ÷255).</summary>
    public static readonly InputSpec FashionMnist = new(1, 28, 28, [0.2860f], [0.3530f]);

    /// <summary>Supported architecture names.</summary>
    public static readonly string[] Architectures =
    [
        "alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2",
        "resnext50_32x4d", "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
        .. ModernCnns.Architectures, .. SmallCnns.Architectures, .. RegNet.Architectures, .. SwinTransformer.Architectures, "maxvit_t", "vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14", "fashion-cnn",
    ];

    /// <summary>Builds an architecture with default initialisation.</summary>
    public static nn.Module<Tensor, Tensor> Build(string architecture, int numClasses) => Build(architecture, numClasses, false);

    /// <summary>Builds an architecture with default initialisation; <paramref name="transformInput"/>: GoogLeNet's and
    /// Inception v3's transform_input.</summary>
    public static nn.Module<Tensor, Tensor> Build(string architecture, int numClasses, bool transformInput) => architecture switch
    {
        "resnet18" => torchvision.models.resnet18(num_classes: numClasses),
        "resnet34" => torchvision.models.resnet34(num_classes: numClasses),
        "resnet50" => torchvision.models.resnet50(num_classes: numClasses),
        "resnet101" => torchvision.models.resnet101(num_classes: numClasses),
        "resnet152" => torchvision.models.resnet152(num_classes: numClasses),
        "wide_resnet50_2" => torchvision.models.wide_resnet50_2(num_classes: numClasses),
        "wide_resnet101_2" => torchvision.models.wide_resnet101_2(num_classes: numClasses),
        "resnext50_32x4d" => torchvision.models.resnext50_32x4d(num_classes: numClasses),
        "vgg11" => torchvision.models.vgg11(num_classes: numClasses),
        "vgg11_bn" => torchvision.models.vgg11_bn(num_classes: numClasses),
        "vgg13" => torchvision.models.vgg13(num_classes: numClasses),
        "vgg13_bn" => torchvision.models.vgg13_bn(num_classes: numClasses),
        "vgg16" => torchvision.models.vgg16(num_classes: numClasses),
        "vgg16_bn" => torchvision.models.vgg16_bn(num_classes: numClasses),
        "vgg19" => torchvision.models.vgg19(num_classes: numClasses),
        "vgg19_bn" => torchvision.models.vgg19_bn(num_classes: numClasses),
        "alexnet" => torchvision.models.alexnet(num_classes: numClasses),
        "googlenet" => torchvision.models.googlenet(num_classes: numClasses, transform_input: transformInput),
        "inception_v3" => torchvision.models.inception_v3(num_classes: numClasses, transform_input: transformInput),
        "mobilenet_v2" => torchvision.models.mobilenet_v2(num_classes: numClasses),
        "mobilenet_v3_small" or "mobilenet_v3_large" => MobileNetV3(architecture, numClasses),
        "fashion-cnn" => new FashionCnn(numClasses),
        _ => ModernCnns.Build(architecture, numClasses) ?? SmallCnns.Build(architecture, numClasses) ?? VisionTransformer.Build(architecture, numClasses) ?? RegNet.Build(architecture, numClasses) ?? SwinTransformer.Build(architecture, numClasses) ?? MaxVit.Build(architecture, numClasses) ?? throw new LoupeException($"unknown architecture '{architecture}'; supported: {string.Join(", ", Architectures)}"),
    };

    /// <summary>TorchVision for .NET's MobileNetV3 (PyTorch's state_dict names and forward, tested), built with
    /// <paramref name="numClasses"/> outputs: its public factories take no arguments (1000 classes), so the
    /// architecture's table and the constructor they call are reached by reflection (TorchSharp is pinned; the tests
    /// fail loudly if they move).</summary>
    static nn.Module<Tensor, Tensor> MobileNetV3(string architecture, int numClasses)
    {
        const BindingFlags Private = BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance;
        var models = typeof(torchvision).GetNestedType("models", BindingFlags.Public | BindingFlags.NonPublic);
        var conf = models?.GetMethod("_mobilenet_v3_conf", Private);
        var ctor = typeof(global::TorchSharp.Modules.MobileNetV3).GetConstructors(Private).FirstOrDefault(c => c.GetParameters().Length == 7);
        if (conf is null || ctor is null) throw new LoupeException($"{architecture}: this TorchVision for .NET has no MobileNetV3 constructor Loupe knows");
        var tuple = conf.Invoke(null, [architecture, 1.0, false, false])!;
        var fields = tuple.GetType().GetFields();
        // torchvision's defaults: its blocks and BatchNorm (null: the constructor's own), dropout 0.2
        var model = (nn.Module<Tensor, Tensor>)ctor.Invoke(["MobileNetV3", fields[0].GetValue(tuple), fields[1].GetValue(tuple), (long)numClasses, null, null, 0.2]);
        foreach (var (_, se) in model.named_modules().Where(m => m.module.GetType().Name == "SqueezeExcitation")) ReluBetween(se);
        return model;
    }

    /// <summary>torchvision's MobileNet v3 squeezes and excites with a ReLU between the two 1×1 convolutions (its
    /// SqueezeExcitation's default); TorchVision for .NET builds a ReLU6 there, which clips every squeeze activation
    /// above 6 (a trained checkpoint has many: logits 10 % off PyTorch's). The module's <c>activation</c> becomes a ReLU,
    /// as its forward reads it and as it is registered (hooks and layer names see it).</summary>
    static void ReluBetween(nn.Module se)
    {
        const BindingFlags Instance = BindingFlags.NonPublic | BindingFlags.Public | BindingFlags.Instance;
        var field = se.GetType().GetField("activation", Instance);
        var registered = typeof(nn.Module).GetField("_internal_submodules", Instance)?.GetValue(se) as global::TorchSharp.Utils.OrderedDict<string, nn.Module>;
        if (field is null || registered is null || !registered.ContainsKey("activation"))
            throw new LoupeException("mobilenet_v3: this TorchVision for .NET's squeeze-and-excitation has no activation Loupe knows");
        if (field.GetValue(se) is not nn.Module old || old is global::TorchSharp.Modules.ReLU) return;
        var relu = nn.ReLU();
        field.SetValue(se, relu);
        registered["activation"] = relu;
        old.Dispose();
    }

    /// <summary>Families whose single-image passes run faster channels-last (224², 2 threads, interleaved medians of
    /// NHWC / NCHW: forward regnet_y_400mf 0.90, densenet121 0.79, mnasnet1_0 0.75, mobilenet_v3_large 0.79,
    /// efficientnet_b0 0.94; forward+backward 0.91, 0.98, 0.74, 0.84, 0.89 — resnet18 1.43, mobilenet_v2 1.16 and
    /// resnext50_32x4d 1.21 stay NCHW, convnext_tiny and shufflenet are even).</summary>
    static readonly string[] ChannelsLastFirst = ["regnet_", "densenet", "mnasnet", "mobilenet_v3", "efficientnet"];

    /// <inheritdoc/>
    public override IModel Load(TorchVisionOptions options, ModelLoadContext context)
    {
        var arch = options.Architecture.Trim().ToLowerInvariant();
        if (!Architectures.Contains(arch))
        {
            throw new LoupeException($"unknown architecture '{options.Architecture}'{Suggest.DidYouMean(arch, Architectures)}; supported: {string.Join(", ", Architectures)}");
        }
        var classes = options.NumClasses ?? (arch == "fashion-cnn" ? 10 : 1000);
        bool transforms = arch is "googlenet" or "inception_v3";
        if (options.TransformInput is not null && !transforms)
            throw new LoupeException($"option 'transform_input' applies to googlenet and inception_v3 (their input transform), not {arch}");
        if (options.Weights is null)
        {
            torch.manual_seed(context.Seed);
            context.Warn($"model '{arch}' has no weights: using a random initialisation (seed {context.Seed})");
        }
        var module = TensorAccounting.Constructed(Build(arch, classes, transforms && (options.TransformInput ?? options.Weights is not null)));
        try
        {
            if (options.Weights is not null) Weights.Load(module, options.Weights, options.WeightsKey, options.StripPrefix);
        }
        catch
        {
            module.Dispose();
            throw;
        }
        return new TorchModel(module, arch == "fashion-cnn" ? FashionMnist : arch == "inception_v3" ? ImageNet with { Height = 299, Width = 299 } : ImageNet, null, options.FoldBatchnorm, options.FastKernels)
        {
            Layout = options.Layout,
            ChannelsLastAtBatchOne = ChannelsLastFirst.Any(arch.StartsWith),
        };
    }

    /// <inheritdoc/>
    public override IEnumerable<string> Files(TorchVisionOptions options, string baseDirectory) =>
        options.Weights is null ? [] : [options.Weights];
}

/// <summary>Registers the TorchSharp backend.</summary>
public sealed class Registrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) =>
        services.AddLoupeModel<TorchVisionAdapter>("torchvision", "torchvision classification architectures (ResNet, VGG, EfficientNet, ConvNeXt, RegNet, ViT, Swin, …) with PyTorch's state_dict names, and the Loupe demo CNN, in TorchSharp; differentiable");
}
