using Loupe.Abstractions;

namespace Loupe.Analysis.Concepts;

/// <summary>Registers the concept techniques.</summary>
public sealed class Registrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) => services
        .AddLoupeAnalysis<Tcav>("tcav", "TCAV: concept activation vectors and their significance per class (Kim et al. 2018)")
        .AddLoupeAnalysis<Dissection>("dissection", "Network Dissection: unit labels by IoU of thresholded maps with concept masks (Bau et al. 2017)")
        .AddLoupeAnalysis<ConceptDiscovery>("concept-discovery", "concepts found by NMF of a layer's activations, ranked by gradient × concept (CRAFT / deep feature factorisation)")
        .AddLoupeAnalysis<FeatureFactorization>("deep-feature-factorization", "Deep Feature Factorization: NMF concepts of each input's layer activations and where they lie (Collins et al. 2018, as pytorch-grad-cam)")
        .AddLoupeAnalysis<Prototypes>("prototypes", "MMD-critic prototypes and criticisms per class in a layer's embedding (Kim et al. 2016)")
        .AddLoupeAnalysis<CounterfactualNeighbours>("counterfactual-neighbours", "the nearest inputs of another class in a layer's embedding");
}
