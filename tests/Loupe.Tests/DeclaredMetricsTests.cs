using Loupe.Core;

namespace Loupe.Tests;

/// <summary>Techniques that write metrics besides their maps (integrated-gradients' completeness error, filters,
/// embeddings, pca, t-SNE, max-patches, concept-discovery, nearest-neighbours, activation-atlas) declare them (IDeclaresMetrics), so a misspelt
/// <c>expect:</c> on them fails validation with a suggestion instead of failing the step after it has run.</summary>
public class DeclaredMetricsTests
{
    [Fact]
    public void ExpectOnATechniqueIsCheckedAtValidation()
    {
        var path = Path.Combine(TestEnv.TempDir(), "p.yaml");
        File.WriteAllText(path, $$"""
            version: 1
            {{TestEnv.DemoModel}}
            data: { uses: idx, with: { images: {{TestEnv.Yaml(Path.Combine(TestEnv.Samples, "data", "fashion-mnist", "t10k-first500-images-idx3-ubyte.gz"))}}, limit: 4 } }
            steps:
              - { id: ig, uses: integrated-gradients, with: { steps: 4 }, expect: ["completeness_eror_max_abs < 1", "completeness_error_mean_relative < 1"] }
              - { id: f, uses: filters, with: { layer: conv1 }, expect: ["filters == 32", "weight_norm_mean > 0"] }
              - { id: p, uses: pca, with: { layer: relu3, components: 2 }, expect: ["explained_variance_ratio_pc2 > 0", "explained_variance_ratio_pc3 > 0"] }
              - { id: t, uses: tsne, with: { layer: relu3 }, expect: ["trustworthiness_k10 > 0.5", "kl_divergence < 5"] }
              - { id: e, uses: embeddings, with: { layer: relu3 }, expect: ["inputs == 4", "dimension == 4"] }
              - { id: n, uses: nearest-neighbours, with: { layer: relu3, k: 2 }, expect: ["label_agreement > 0.5", "label_agrement > 0.5"] }
              - { id: a, uses: activation-atlas, with: { layer: relu3, grid: 2, min_count: 1, steps: 0 }, expect: ["cells > 1", "objective_gain_mean > 0"] }
            """);
        var e = Assert.Throws<PipelineException>(() => PipelineRunner.Prepare(new RunRequest(path) { PluginDirectories = [TestEnv.PluginDirectory] }));
        Assert.Equal(
        [
            "step 'ig': expect 'completeness_eror_max_abs < 1': the step writes no metric 'completeness_eror_max_abs' (did you mean 'completeness_error_max_abs'?); its metrics: completeness_error_max_abs, completeness_error_mean_relative",
            "step 'p': expect 'explained_variance_ratio_pc3 > 0': the step writes no metric 'explained_variance_ratio_pc3' (did you mean 'explained_variance_ratio_pc1'?); its metrics: explained_variance_ratio_pc1, explained_variance_ratio_pc2",
            "step 'e': expect 'dimension == 4': the step writes no metric 'dimension' (did you mean 'dimensions'?); its metrics: inputs, dimensions",
            "step 'n': expect 'label_agrement > 0.5': the step writes no metric 'label_agrement' (did you mean 'label_agreement'?); its metrics: label_agreement",
            "step 'a': expect 'objective_gain_mean > 0': the step writes no metric 'objective_gain_mean'; its metrics: kl_divergence, vectors, cells",
        ], e.Errors.Select(x => x.Message));
    }
}
