using System.ComponentModel;
using Loupe.Abstractions;
using Microsoft.Extensions.DependencyInjection;
using static TorchSharp.torch;

namespace Loupe.Sample.EdgeMap;

/// <summary>Options of <c>edge-map</c>.</summary>
public sealed record EdgeMapOptions
{
    /// <summary>Fail on purpose (to see how a failing step is reported).</summary>
    [Description("throw an exception instead of computing (demonstrates fault isolation)")]
    public bool Fail { get; init; }
}

/// <summary>Sobel gradient magnitude of the (channel-averaged) input. It ignores the model entirely, which makes it
/// the classic control in sanity checks (Adebayo et al. 2018): an edge detector "explains" any model equally.</summary>
public sealed class EdgeMap : Analysis<EdgeMapOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward, UsesTarget: false);

    /// <inheritdoc/>
    public override void Run(EdgeMapOptions options, IAnalysisContext ctx)
    {
        if (options.Fail) throw new InvalidOperationException("edge-map was asked to fail (fail: true)");
        var sobelX = tensor(new float[] { -1, 0, 1, -2, 0, 2, -1, 0, 1 }).view(1, 1, 3, 3);
        var sobelY = sobelX.transpose(2, 3).contiguous();
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            var grey = batch.Pixels.mean([1], keepdim: true);
            var gx = nn.functional.conv2d(grey, sobelX, padding: [1, 1]);
            var gy = nn.functional.conv2d(grey, sobelY, padding: [1, 1]);
            var magnitude = (gx * gx + gy * gy).sqrt()[.., 0];
            for (int i = 0; i < batch.Ids.Length; i++)
            {
                ctx.Output.Raw("edges", batch.Ids[i], NdArray.FromTensor(magnitude[i]));
                ctx.Output.Display("edges", batch.Ids[i], Display.Overlay(batch.Pixels[i], magnitude[i]));
            }
        }
    }
}

/// <summary>Registers the sample plugin's components.</summary>
public sealed class Registrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(IServiceCollection services) =>
        services.AddLoupeAnalysis<EdgeMap>("edge-map", "Sobel edge magnitude of the input (sample third-party plugin; a model-independent control)");
}
