using Loupe.Abstractions;

namespace Loupe.Analysis.Decisions;

/// <summary>Registers the attribution techniques (gradient, path, perturbation methods and the noise tunnel).</summary>
public sealed class Registrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) => services
        .AddLoupeAnalysis<Saliency>("saliency", "gradient of the target w.r.t. the input (Simonyan et al. 2014; Captum Saliency)")
        .AddLoupeAnalysis<GradientXInput>("gradient-x-input", "input × gradient (Shrikumar et al. 2016; Captum InputXGradient)")
        .AddLoupeAnalysis<IntegratedGradients>("integrated-gradients", "path-integrated gradients from a baseline (Sundararajan et al. 2017); records completeness")
        .AddLoupeAnalysis<GuidedBackprop>("guided-backprop", "gradient with guided ReLU backward (Springenberg et al. 2015)")
        .AddLoupeAnalysis<Deconvnet>("deconvnet", "gradient with DeconvNet ReLU backward (Zeiler & Fergus 2014)")
        .AddLoupeAnalysis<NoiseTunnel>("noise-tunnel", "SmoothGrad / SmoothGrad² / VarGrad around any attribution step (inner:)")
        .AddLoupeAnalysis<Occlusion>("occlusion", "sliding-window occlusion, Captum semantics (Zeiler & Fergus 2014); forward passes only")
        .AddLoupeAnalysis<FeatureAblation>("feature-ablation", "ablate grid cells one at a time (Captum FeatureAblation); forward passes only")
        .AddLoupeAnalysis<Rise>("rise", "randomized input sampling (Petsiuk et al. 2018), seeded; forward passes only")
        .AddLoupeAnalysis<DRise>("d-rise", "RISE for detectors: masks weighted by the similarity of the masked detections to the target box (Petsiuk et al. 2021); forward passes only")
        .AddLoupeAnalysis<GradientShap>("gradient-shap", "expected gradients over baselines, noise and path points (Lundberg & Lee 2017; Captum GradientShap)")
        .AddLoupeAnalysis<KernelShap>("kernel-shap", "Shapley-kernel coalitions of features and a weighted linear fit (Lundberg & Lee 2017; Captum KernelShap)")
        .AddLoupeAnalysis<Lime>("lime", "local surrogate: random feature subsets, similarity weights, Lasso/linear fit (Ribeiro et al. 2016; Captum Lime)")
        .AddLoupeAnalysis<ShapleySampling>("shapley-sampling", "Shapley values by permutation sampling (Castro et al. 2009; Captum ShapleyValueSampling)")
        .AddLoupeAnalysis<FeaturePermutation>("feature-permutation", "permute each feature across the batch (Captum FeaturePermutation); forward passes only")
        .AddLoupeAnalysis<LayerGradientXActivation>("layer-gradient-x-activation", "layer activation × its gradient (Captum LayerGradientXActivation)")
        .AddLoupeAnalysis<InternalInfluence>("internal-influence", "layer gradients integrated along the input path (Leino et al. 2018; Captum InternalInfluence)")
        .AddLoupeAnalysis<LayerConductance>("layer-conductance", "conductance of a layer's units (Dhamdhere et al. 2018; Captum LayerConductance)")
        .AddLoupeAnalysis<LayerIntegratedGradients>("layer-integrated-gradients", "integrated gradients along the path in a layer's space (Captum LayerIntegratedGradients)")
        .AddLoupeAnalysis<NeuronConductance>("neuron-conductance", "input attribution through one neuron (Dhamdhere et al. 2018; Captum NeuronConductance)")
        .AddLoupeAnalysis<BetaSmooth>("beta-smooth", "β-smoothed gradients around any gradient method (inner:): every ReLU back-propagates sigmoid(β·x), as Zennit's BetaSmooth composite")
        .AddLoupeAnalysis<AugSmooth>("aug-smooth", "test-time augmentation (flips × factors) around any attribution step (inner:), as pytorch-grad-cam's aug_smooth")
        .AddLoupeAnalysis<DeepLift>("deeplift", "DeepLift, rescale rule, against a reference input (Shrikumar et al. 2017; Captum DeepLift)")
        .AddLoupeAnalysis<Lrp>("lrp", "layer-wise relevance propagation with Zennit's rules and composites or Captum's defaults, on the model's canonized graph (Bach et al. 2015)")
        .AddLoupeAnalysis<DeepLiftShap>("deeplift-shap", "DeepLift averaged over a set of references (Lundberg & Lee 2017; Captum DeepLiftShap)")
        .AddLoupeAnalysis<LayerGradientShap>("layer-gradient-shap", "expected gradients at a layer × its activation difference from the baselines (Captum LayerGradientShap)")
        .AddLoupeAnalysis<LayerFeatureAblation>("layer-feature-ablation", "a layer's units set to a baseline, group by group: the score each group's ablation costs (Captum LayerFeatureAblation)")
        .AddLoupeAnalysis<LayerDeepLift>("layer-deeplift", "DeepLift's rescale multipliers at a layer × its activation difference (Captum LayerDeepLift)")
        .AddLoupeAnalysis<LayerDeepLiftShap>("layer-deeplift-shap", "layer DeepLift averaged over a set of references (Captum LayerDeepLiftShap)");
}
