using Loupe.Abstractions;
using Loupe.Models.TorchSharp;
using TorchSharp;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Benchmarks;

/// <summary>What every benchmark sets up the same way: 2 intra-op threads, the two models, the top-1 target.</summary>
public static class Bench
{
    static readonly string Samples = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "samples"));

    /// <summary>2 threads and seed 0 (call first in a [GlobalSetup]).</summary>
    public static void Init()
    {
        torch.set_num_threads(2);
        torch.manual_seed(0);
    }

    /// <summary>torchvision resnet18 (deterministic formula weights).</summary>
    public static IModel Resnet18() => new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = "resnet18" }, new ModelLoadContext(".", 0));

    /// <summary>The demo CNN with its shipped weights.</summary>
    public static IModel Fashion() => new TorchVisionAdapter().Load(new TorchVisionOptions
    {
        Architecture = "fashion-cnn", Weights = Path.Combine(Samples, "models", "fashion-cnn", "fashion-cnn.safetensors"),
    }, new ModelLoadContext(".", 0));

    /// <summary>The demo CNN exported to ONNX (same weights), run by ONNX Runtime with 2 intra-op threads.</summary>
    public static IModel FashionOnnxRuntime()
    {
        var spec = Loupe.Models.TorchSharp.TorchVisionAdapter.FashionMnist;
        return new Loupe.Models.Onnx.OnnxRuntimeAdapter().Load(new Loupe.Models.Onnx.OnnxOptions
        {
            Path = Path.Combine(Samples, "models", "fashion-cnn", "fashion-cnn.onnx"), Channels = spec.Channels, Height = spec.Height,
            Width = spec.Width, Mean = spec.Mean.ToArray(), Std = spec.Std.ToArray(), Threads = 2,
        }, new ModelLoadContext(".", 0));
    }

    /// <summary>The top-1 target of a model with <paramref name="classes"/> outputs.</summary>
    /// <summary>A saliency pass (forward, backward of the top logit to the input), summed to a float: what the
    /// metric rows' floors count as the linked step's pass.</summary>
    public static float SaliencySum(IModel model, torch.Tensor input)
    {
        var x = input.detach().requires_grad_(true);
        var y = model.Forward(x);
        return CheckedOps.Grad([y.max(1).values.sum()], [x])[0].sum().item<float>();
    }

    /// <summary>The forward (no gradients; <paramref name="softmax"/>: with a softmax) of <paramref name="copies"/>' rows
    /// (k copies of each of N inputs) in passes of <paramref name="perPass"/> copies of each input, as a metric makes
    /// them under the toolkit's pass sizes (<see cref="Loupe.Abstractions.Toolkit.Explain.CopiesPerForward"/>), so that a
    /// floor counts the passes the metric runs, not one pass of everything.</summary>
    public static float ForwardInPasses(IModel model, torch.Tensor copies, long n, long perPass, bool softmax = false)
    {
        float s = 0;
        long rows = copies.shape[0], pass = Math.Max(1, perPass) * n;
        using (torch.no_grad())
            for (long at = 0; at < rows; at += pass)
            {
                using var scope = torch.NewDisposeScope();
                var y = model.Forward(copies.narrow(0, at, Math.Min(pass, rows - at)));
                s += (softmax ? torch.nn.functional.softmax(y, 1) : y).sum().item<float>();
            }
        return s;
    }

    /// <summary>A link to a saliency step, resolvable in <paramref name="ctx"/> (the step a metric evaluates).</summary>
    public static StepLink SaliencyStep(BenchContext ctx)
    {
        var link = new StepLink { Id = "saliency" };
        ctx.References = new([KeyValuePair.Create<IStepReference, ReferencedStep>(link,
            new("saliency", "saliency", new Loupe.Analysis.Decisions.Saliency(), new Loupe.Analysis.Decisions.SaliencyOptions()))]);
        return link;
    }

    public static ITarget TopOne(int classes) => new Loupe.Targets.TopOneTargetFactory().Create(new NoOptions(), new TargetContext([], classes, []));
}
