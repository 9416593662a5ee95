using Loupe.Abstractions;

namespace Loupe.Analysis.Synthesis;

/// <summary>Registers feature visualisation by optimisation.</summary>
public sealed class Registrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) => services
        .AddLoupeAnalysis<ActivationMax>("activation-max", "activation maximisation: images that maximise a class, channel, neuron or direction (Simonyan 2014, Yosinski 2015, Olah 2017)")
        .AddLoupeAnalysis<DeepDream>("deep-dream", "DeepDream: amplify a layer's activations on real images, multi-scale (Mordvintsev et al. 2015)")
        .AddLoupeAnalysis<ActivationAtlas>("activation-atlas", "activation atlas: t-SNE map of a layer's activation vectors, grid cells averaged and rendered by activation maximisation (Carter et al. 2019)");
}
