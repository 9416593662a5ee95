namespace Loupe.Evaluation.Tests;

/// <summary>Options that must fit the model input's size (Quantus asserts them when it runs) are checked by
/// <c>loupe validate</c>, against the input the run feeds (<c>model.input</c> applied), before anything runs.</summary>
public class InputSizeValidationTests
{
    static Loupe.Core.RunResult Run(string input, string steps) => Env.Run($$"""
        version: 1
        model: { uses: torchvision, with: { architecture: fashion-cnn, weights: {{Env.DemoWeights}} }{{input}} }
        data: { uses: idx, with: { images: {{Env.DemoImages}}, limit: 4 } }
        steps:
          - { id: sal, uses: saliency }
        {{steps}}
        """);

    const string Steps = """
          - { id: tk, uses: top-k-intersection, with: { of: sal } }
          - { id: fc, uses: faithfulness-correlation, with: { of: sal, subset_size: 784 } }
          - { id: sn, uses: sensitivity-n, with: { of: sal, score: quantus, max_fraction: 0.01, features_in_step: 16 } }
          - { id: fr, uses: sensitivity-n, with: { of: sal, fractions: [0.5, 1.5] } }
        """;

    [Fact]
    public void SizesAreCheckedAgainstTheModelInputAtValidation()
    {
        var r = Run("", Steps);
        Assert.Equal(2, r.ExitCode);
        var errors = r.Errors.Select(e => e.Message).ToList();
        Assert.Contains(errors, e => e.Contains("step 'tk' (top-k-intersection): option 'k' = 1000 is not smaller than the 784 pixels of an input"));
        Assert.Contains(errors, e => e.Contains("step 'fc' (faithfulness-correlation): option 'subset_size' = 784 is not smaller than the 784 pixels of an input"));
        Assert.Contains(errors, e => e.Contains("step 'sn' (sensitivity-n): max_fraction 0.01 of 28×28 pixels is less than one step of 16 features"));
        Assert.Contains(errors, e => e.Contains("step 'fr' (sensitivity-n): option 'fractions' must list fractions in (0, 1)"));
        Assert.Null(r.Manifest);   // nothing ran

        // At 56×56 (model.input) the same options fit, but the fractions.
        var larger = Run(", input: { size: [56, 56] }", Steps);
        var left = larger.Errors.Select(e => e.Message).ToList();
        Assert.DoesNotContain(left, e => e.Contains("step 'tk'") || e.Contains("step 'fc'") || e.Contains("step 'sn'"));
        Assert.Contains(left, e => e.Contains("step 'fr'"));
    }
}
