using System.ComponentModel;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Behaviour;

/// <summary>Options of <c>model-inputs</c>.</summary>
public sealed record ModelInputsOptions
{
    /// <summary>Also write a PNG per input.</summary>
    [Description("also write each input as a PNG (the pixels before normalisation, as the overlays show them)")]
    public bool Images { get; init; }
}

/// <summary>Writes the exact tensors the model sees: each input after the data source and the host's normalisation,
/// as <c>&lt;id&gt;.input.npy</c> (C×H×W float32), and the preprocessing as <c>preprocessing.json</c>, so the preprocessing
/// can be checked against another framework's (e.g. torchvision transforms) value by value. No forward pass.</summary>
public sealed class ModelInputs : Analysis<ModelInputsOptions>, IShardable
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.None, UsesTarget: false);

    /// <inheritdoc/>
    public override void Run(ModelInputsOptions options, IAnalysisContext ctx)
    {
        long done = 0;
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            using var cpu = batch.Input.detach().to(ScalarType.Float32).cpu().contiguous();
            for (int i = 0; i < batch.Ids.Length; i++)
            {
                ctx.Output.Raw("input", batch.Ids[i], NdArray.FromTensor(cpu[i]));
                if (options.Images) ctx.Output.Display("input", batch.Ids[i], Display.Image(batch.Pixels[i]));
            }
            done += batch.Ids.Length;
            if (ctx.InputCount is > 0) ctx.Progress(done / (double)ctx.InputCount.Value);
        }
        WriteSpec(ctx.Output, ctx.Input);
    }

    static void WriteSpec(IArtifactSink output, InputSpec s) => output.Json("preprocessing", new
    {
        channels = s.Channels, height = s.Height, width = s.Width, mean = s.Mean, std = s.Std,
        formula = "input = (pixels / 255 - mean) / std per channel, after resizing to height × width (npy sources: used as given)",
    });

    /// <summary>Shards: inputs are per input (unioned by the host); the preprocessing is the same in every shard.</summary>
    public void Merge(IShardMerge merge) => merge.Output.Json("preprocessing", merge.Json("preprocessing")[0]);
}

/// <summary>Registers <c>model-inputs</c>.</summary>
public sealed class ModelInputsRegistrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) => services
        .AddLoupeAnalysis<ModelInputs>("model-inputs", "writes the preprocessed input batch exactly as the model sees it (.npy per input)");
}
