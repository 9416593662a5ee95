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
        .AddLoupeAnalysis<GivenMaps>("given-maps", "maps made elsewhere (Captum, pytorch-grad-cam, an earlier run), read per input id from a folder, for the metrics to evaluate (Quantus's a_batch); folder, pattern")
        .AddLoupeAnalysis<SensitivityMax>("sensitivity-max", "max relative change of the map in an L-inf ball (Yeh et al. 2019; Captum sensitivity_max); of: step id")
        // Complexity (no forward pass)
        .AddLoupeAnalysis<Sparseness>("sparseness", "Gini index of |map| (Chalasani et al. 2020; Quantus Sparseness); higher is better; of: step id")
        .AddLoupeAnalysis<Complexity>("complexity", "entropy of the map's fractional contributions (Bhatt et al. 2020; Quantus Complexity); lower is better; of: step id")
        .AddLoupeAnalysis<EffectiveComplexity>("effective-complexity", "number of pixels with |map| > eps (Nguyen & Rodríguez Martínez 2020); lower is better; of: step id")
        .AddLoupeAnalysis<MstCompactness>("mst-c", "compactness of the salient points: 1/√hull area × points / minimum-spanning-tree length (Mesgari et al. 2026; Quantus MSTC); higher is better; of: step id")
        // Localisation (object masks from the data source or the input)
        .AddLoupeAnalysis<AttributionLocalisation>("attribution-localisation", "share of positive attribution inside the object mask (Kohlbrenner et al. 2020); higher is better; of: step id")
        .AddLoupeAnalysis<TopKIntersection>("top-k-intersection", "share of the k top pixels inside the object mask (Theiner et al. 2021); higher is better; of: step id")
        .AddLoupeAnalysis<RelevanceRankAccuracy>("relevance-rank-accuracy", "share of the |mask| top pixels inside the mask (Arras et al. 2022); higher is better; of: step id")
        .AddLoupeAnalysis<RelevanceMassAccuracy>("relevance-mass-accuracy", "share of attribution mass inside the mask (Arras et al. 2022); higher is better; of: step id")
        .AddLoupeAnalysis<LocalisationAuc>("auc", "ROC AUC of the map as a detector of mask pixels (Fawcett 2006; Quantus AUC); higher is better; of: step id")
        .AddLoupeAnalysis<Focus>("focus", "share of positive relevance on the quadrants of the explained class in 2×2 mosaics (Arias-Duart et al. 2022); higher is better; of: step id")
        // Axiomatic
        .AddLoupeAnalysis<Completeness>("completeness", "relative gap |Σmap − (f(x) − f(baseline))| / |f(x) − f(baseline)| (Sundararajan et al. 2017); lower is better; of: step id")
        .AddLoupeAnalysis<NonSensitivity>("non-sensitivity", "pixels where zero attribution and zero effect disagree (Nguyen & Rodríguez Martínez 2020); lower is better; of: step id")
        .AddLoupeAnalysis<InputInvariance>("input-invariance", "relative map change when the input is shifted and the first layer compensates (Kindermans et al. 2017); lower is better; of: step id")
        // Faithfulness
        .AddLoupeAnalysis<FaithfulnessCorrelation>("faithfulness-correlation", "Pearson of subset attribution vs output drop over random subsets (Bhatt et al. 2020); higher is better; of: step id")
        .AddLoupeAnalysis<FaithfulnessEstimate>("faithfulness-estimate", "Pearson of attribution vs output drop per pixel step (Alvarez-Melis & Jaakkola 2018); higher is better; of: step id")
        .AddLoupeAnalysis<SensitivityN>("sensitivity-n", "Pearson of subset attribution vs output drop, averaged over subset sizes n (Ancona et al. 2018); higher is better; of: step id")
        .AddLoupeAnalysis<Monotonicity>("monotonicity", "probability never falls as pixels are restored least relevant first (Arya et al. 2019); higher is better; of: step id")
        .AddLoupeAnalysis<MonotonicityCorrelation>("monotonicity-correlation", "Spearman of step attribution vs output variance when the step is perturbed (Nguyen & Rodríguez Martínez 2020); higher is better; of: step id")
        .AddLoupeAnalysis<PixelFlipping>("pixel-flipping", "area under the probability curve as pixels are removed most relevant first (Bach et al. 2015); lower is better; of: step id")
        .AddLoupeAnalysis<Selectivity>("selectivity", "area under the probability curve as patches are removed most relevant first (Montavon et al. 2018); lower is better; of: step id")
        .AddLoupeAnalysis<Irof>("irof", "area over the probability curve as superpixels are removed most relevant first (Rieger & Hansen 2020); higher is better; of: step id")
        .AddLoupeAnalysis<ConfidenceChange>("confidence-change", "the target's score of the input multiplied by the map, minus the input's (pytorch-grad-cam's CamMultImageConfidenceChange; mode: drop, increase); of: step id")
        .AddLoupeAnalysis<RoadConfidence>("road-confidence", "ROAD as pytorch-grad-cam scores it: the change of the target's score when the pixels above the map's percentiles are imputed, MoRF, LeRF or combined (Rong et al. 2022); of: step id")
        .AddLoupeAnalysis<Arcc>("arcc", "harmonic mean of coherency, simplicity and ROAD (pytorch-grad-cam's ARCC; part: coherency, complexity, road); of: step id")
        .AddLoupeAnalysis<Road>("road", "accuracy as pixels are replaced by noisy linear imputation, MoRF or LeRF (Rong et al. 2022); MoRF lower / LeRF higher is better; of: step id")
        .AddLoupeAnalysis<Sufficiency>("sufficiency", "share of inputs with a close explanation that get the same class (Dasgupta et al. 2022); higher is better; of: step id")
        .AddLoupeAnalysis<RegionPerturbation>("region-perturbation", "AOPC of MoRF/LeRF region perturbation (Samek et al. 2017); MoRF higher / LeRF lower is better; of: step id")
        // Robustness (re-run the method on perturbed inputs, batched) and randomisation
        .AddLoupeAnalysis<AvgSensitivity>("avg-sensitivity", "mean relative map change under uniform noise (Yeh et al. 2019; Quantus AvgSensitivity); lower is better; of: step id")
        .AddLoupeAnalysis<MaxSensitivity>("max-sensitivity", "max relative map change under uniform noise (Yeh et al. 2019; Quantus MaxSensitivity; Captum's sensitivity_max is sensitivity-max); lower is better; of: step id")
        .AddLoupeAnalysis<LocalLipschitz>("local-lipschitz", "max ‖ΔΦ‖/‖Δx‖ under Gaussian noise (Alvarez-Melis & Jaakkola 2018); lower is better; of: step id")
        .AddLoupeAnalysis<Continuity>("continuity", "max ‖ΔR‖₁/‖Δx‖₂ over translated copies of the input (Montavon et al. 2018); lower is better; of: step id")
        .AddLoupeAnalysis<RelativeInputStability>("relative-input-stability", "max relative map change over relative input change (Agarwal et al. 2022); lower is better; of: step id")
        .AddLoupeAnalysis<RelativeOutputStability>("relative-output-stability", "max relative map change over relative logit change (Agarwal et al. 2022); lower is better; of: step id")
        .AddLoupeAnalysis<RelativeRepresentationStability>("relative-representation-stability", "max relative map change over relative change of a layer's output (Agarwal et al. 2022); lower is better; of: step id, layer")
        .AddLoupeAnalysis<Consistency>("consistency", "share of inputs with the same top-n explanation that get the same class (Dasgupta et al. 2022); higher is better; of: step id")
        .AddLoupeAnalysis<Mprt>("mprt", "model parameter randomisation, smooth (noise-averaged Spearman) or efficient (entropy ratio) variant (Hedström et al. 2023); of: step id")
        .AddLoupeAnalysis<RandomLogit>("random-logit", "SSIM of the maps for the target and a random other class (Sixt et al. 2020); lower is better; of: step id")
        .AddLoupeData<FashionPlacement>("fashion-placement", "Fashion-MNIST IDX items pasted at seeded random positions on a larger black canvas");
}
