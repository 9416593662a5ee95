using Loupe.Abstractions;

namespace Loupe.Analysis.Evaluation;

/// <summary>Registers the faithfulness metrics and the fashion-placement data source.</summary>
public sealed class Registrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) => services
        .AddLoupeAnalysis<Deletion>("deletion", "deletion curve and AUC of an attribution step (Petsiuk et al. 2018); of: step id")
        .AddLoupeAnalysis<Insertion>("insertion", "insertion curve and AUC of an attribution step (Petsiuk et al. 2018); of: step id")
        .AddLoupeAnalysis<PointingGame>("pointing-game", "pointing game and mask-energy ratio against object masks from the input (Zhang et al. 2016); of: step id")
        .AddLoupeAnalysis<SanityRandomisation>("sanity-randomisation", "cascading parameter randomisation, Spearman / SSIM per module (Adebayo et al. 2018); of: step id")
        .AddLoupeAnalysis<Infidelity>("infidelity", "infidelity under Gaussian perturbations (Yeh et al. 2019; Captum, normalize=False); of: step id")
        .AddLoupeAnalysis<SensitivityMax>("sensitivity-max", "max relative change of the map in an L-inf ball (Yeh et al. 2019; Captum sensitivity_max); of: step id")
        .AddLoupeData<FashionPlacement>("fashion-placement", "Fashion-MNIST IDX items pasted at seeded random positions on a larger black canvas");
}
