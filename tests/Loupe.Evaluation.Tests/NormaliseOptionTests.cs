namespace Loupe.Evaluation.Tests;

/// <summary>The <c>normalise</c> option of random-logit and the localisation metrics (Quantus's normalise and
/// normalise_func; before, both were fixed to normalise_by_max): each choice reaches the score, as the metrics' own
/// invariances say it must.</summary>
public class NormaliseOptionTests
{
    static double[] Values(Loupe.Core.RunResult r, string step, string key) => Env.InputValues(r, step, key);

    /// <summary>The region CNN with the fixture's signed maps (<c>m</c>), or the demo CNN with signed saliency maps
    /// (<c>sal</c>).</summary>
    static Loupe.Core.RunResult Run(string steps, bool demo = false)
    {
        var r = demo ? Env.Run($$"""
            version: 1
            model: { uses: torchvision, with: { architecture: fashion-cnn, weights: {{Env.DemoWeights}} } }
            data: { uses: npy, with: { path: {{Env.Yaml(Path.Combine(Env.RepoRoot, "tests", "fixtures", "fashion_input.npy"))}} } }
            steps:
              - { id: sal, uses: saliency, with: { abs: false } }
            {{steps}}
            """) : Env.FixtureRun(steps);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + string.Join("\n",
            r.Manifest?["steps"]?.AsArray().Where(s => (string?)s!["status"] != "succeeded").Select(s => $"{s!["id"]}: {s["error"]}") ?? []));
        return r;
    }

    [Fact]
    public void RandomLogitTakesTheNormalisationItIsGiven()
    {
        // Signed saliency maps of the demo CNN, the other classes drawn as Quantus draws them (the same in every step).
        // flat-ssim depends on the maps' scale: false differs from max; Spearman does not change under any positive
        // rescaling or the sign-preserving negative one.
        var r = Run("""
              - { id: max, uses: random-logit, with: { of: sal, draw: quantus, similarity: flat-ssim } }
              - { id: raw, uses: random-logit, with: { of: sal, draw: quantus, similarity: flat-ssim, normalise: false } }
              - { id: neg, uses: random-logit, with: { of: sal, draw: quantus, similarity: flat-ssim, normalise: negative } }
              - { id: rho, uses: random-logit, with: { of: sal, draw: quantus, similarity: spearman } }
              - { id: rho-raw, uses: random-logit, with: { of: sal, draw: quantus, similarity: spearman, normalise: false } }
              - { id: rho-neg, uses: random-logit, with: { of: sal, draw: quantus, similarity: spearman, normalise: negative } }
            """, demo: true);
        var max = Values(r, "max", "random_logit");
        Assert.NotEqual(max, Values(r, "raw", "random_logit"));
        Assert.NotEqual(max, Values(r, "neg", "random_logit"));
        var rho = Values(r, "rho", "random_logit");
        foreach (var step in new[] { "rho-raw", "rho-neg" })
        {
            var other = Values(r, step, "random_logit");
            for (int i = 0; i < rho.Length; i++) Assert.Equal(rho[i], other[i], 9);
        }
    }

    [Fact]
    public void LocalisationTakesTheNormalisationItIsGiven()
    {
        // Signed maps (the fixture's, −3.1…3.6). Relevance mass is a ratio: no global rescaling moves it (false = max),
        // normalise_by_negative rescales positives and negatives apart and does; the rank-based AUC moves under none.
        var r = Run("""
              - { id: rma, uses: relevance-mass-accuracy, with: { of: m } }
              - { id: rma-raw, uses: relevance-mass-accuracy, with: { of: m, normalise: false } }
              - { id: rma-neg, uses: relevance-mass-accuracy, with: { of: m, normalise: negative } }
              - { id: auc, uses: auc, with: { of: m } }
              - { id: auc-neg, uses: auc, with: { of: m, normalise: negative } }
            """);
        var rma = Values(r, "rma", "relevance_mass_accuracy");
        var raw = Values(r, "rma-raw", "relevance_mass_accuracy");
        for (int i = 0; i < rma.Length; i++) Assert.Equal(rma[i], raw[i], 9);
        Assert.NotEqual(rma, Values(r, "rma-neg", "relevance_mass_accuracy"));
        Assert.Equal(Values(r, "auc", "auc"), Values(r, "auc-neg", "auc"));
    }
}
