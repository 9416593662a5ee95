using Loupe.Abstractions;

namespace Loupe.Analysis.Embedding;

/// <summary>Registers the dataset-scale behaviour techniques.</summary>
public sealed class Registrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) => services
        .AddLoupeAnalysis<Embeddings>("embeddings", "a layer's features for the whole dataset (N×D), streamed")
        .AddLoupeAnalysis<NearestNeighbours>("nearest-neighbours", "exact k-NN of chosen inputs in a layer's feature space (L2 or cosine)")
        .AddLoupeAnalysis<PcaAnalysis>("pca", "principal components of a layer's dataset features")
        .AddLoupeAnalysis<TsneAnalysis>("tsne", "Barnes-Hut t-SNE of a layer's dataset features (van der Maaten 2014)")
        .AddLoupeAnalysis<MaxPatches>("max-patches", "maximally activating receptive-field patches per channel (streaming top-k)");
}
