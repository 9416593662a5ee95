namespace Loupe.Tests;

/// <summary>Validation reports every mistake it can find in one pass: before any model loads when the model section
/// itself is wrong; with a valid model section, its layer names and targets too.</summary>
public class ValidationTests
{
    /// <summary>`loupe validate` on a pipeline: its exit code, its error lines and its whole output.</summary>
    static (int Code, List<string> Errors, string Output) Validate(string dir, string path)
    {
        var (code, stdout, stderr) = TestEnv.Cli(dir, "validate", path);
        return (code, (stdout + stderr).Split('\n').Where(l => l.Contains(": error: ")).ToList(), stdout + stderr);
    }

    /// <summary>The errors come in reading order (line, then column), whatever phase of validation found them.</summary>
    static void AssertInFileOrder(List<string> errors)
    {
        var places = errors.Select(e => System.Text.RegularExpressions.Regex.Match(e, @":(\d+):(\d+): error: ")).Where(m => m.Success)
            .Select(m => (int.Parse(m.Groups[1].Value), int.Parse(m.Groups[2].Value))).ToList();
        Assert.True(places.Count >= 2, string.Join("\n", errors));
        Assert.True(places.SequenceEqual(places.Order()), "errors out of file order:\n" + string.Join("\n", errors));
    }

    [Fact]
    public void FiveMistakesInFiveSectionsGiveFiveErrorsBeforeTheModelLoads()
    {
        var dir = TestEnv.TempDir("five");
        // Not weights at all: had the model been loaded, its reader would have complained about this file.
        File.WriteAllText(Path.Combine(dir, "broken.pt"), "not a checkpoint");
        var path = TestEnv.Pipeline($"""
            version: 1
            name: five
            model:
              uses: torchvision
              with: {"{"} architecture: fashion-cnn, weights: broken.pt, colour: red {"}"}
            data:
              uses: idx
              with: {"{"} images: missing-images.gz {"}"}
            settings:
              batch_size: 0
            steps:
              - id: sal
                uses: saliency
                with: {"{"} reduce: maxx {"}"}
            output:
              report: pdf
            """, dir);
        var (code, errors, output) = Validate(dir, path);
        Assert.Equal(2, code);
        Assert.True(errors.Count == 5, string.Join("\n", errors));
        Assert.Contains(errors, e => e.Contains(":10:") && e.Contains("settings.batch_size"));
        Assert.Contains(errors, e => e.Contains(":16:") && e.Contains("'pdf'"));
        Assert.Contains(errors, e => e.Contains(":5:") && e.Contains("'colour'"));
        Assert.Contains(errors, e => e.Contains(":8:") && e.Contains("missing-images.gz"));
        Assert.Contains(errors, e => e.Contains(":14:") && e.Contains("did you mean 'max'"));
        Assert.DoesNotContain("broken.pt", output);
    }

    static string FiveMistakes(string weights) => $"""
        version: 1
        name: five
        model:
          uses: torchvision
          with: {"{"} architecture: fashion-cnn, weights: {weights} {"}"}
        data:
          uses: npy
          with: {"{"} path: missing.npy {"}"}
        settings:
          batch_size: 0
        steps:
          - id: cam
            uses: grad-cam
            with: {"{"} layer: relu33 {"}"}
          - id: sal
            uses: saliency
            target: {"{"} class: 42 {"}"}
        output:
          report: pdf
        """;

    [Fact]
    public void LayerNamesAndTargetsAreReportedWithTheOtherErrorsInOnePass()
    {
        // Issue 23 item 4: a wrong layer name and a wrong target class used to wait for a second 'validate' (they were
        // checked only once the first pass had no errors); with the model section valid, all five come at once.
        var dir = TestEnv.TempDir("five-layers");
        var path = TestEnv.Pipeline(FiveMistakes(TestEnv.Yaml(TestEnv.Fixture("fashion_cnn_seed0.pt"))), dir);
        var (code, errors, output) = Validate(dir, path);
        Assert.Equal(2, code);
        Assert.True(errors.Count == 5, string.Join("\n", errors));
        Assert.Contains(errors, e => e.Contains(":8:") && e.Contains("missing.npy"));
        Assert.Contains(errors, e => e.Contains(":10:") && e.Contains("settings.batch_size"));
        Assert.Contains(errors, e => e.Contains(":14:") && e.Contains("layer 'relu33' does not exist in the model") && e.Contains("did you mean 'relu3'"));
        Assert.Contains(errors, e => e.Contains(":17:") && e.Contains("step 'sal' target: class index 42 is out of range: the model has 10 outputs"));
        Assert.Contains(errors, e => e.Contains(":19:") && e.Contains("'pdf'"));
        AssertInFileOrder(errors);   // 14 and 17 are found with the model, after 19
    }

    [Fact]
    public void The_steps_that_bound_cleanly_get_their_own_checks_links_and_expect_names_beside_an_option_error()
    {
        // 'a' has an option error (an unknown value); the other steps bound cleanly. Their checks that need the model (a
        // fill of two values for a one-channel model), a link to no step and a misspelt metric in expect: used to wait
        // for a second 'validate'. A step linked to 'a' is not checked (its checks may read a's options), and no error
        // says that 'a' does not exist.
        var dir = TestEnv.TempDir("clean-steps");
        var path = TestEnv.Pipeline($$"""
            version: 1
            model: { uses: torchvision, with: { architecture: fashion-cnn, weights: {{TestEnv.Yaml(TestEnv.Fixture("fashion_cnn_seed0.pt"))}} } }
            steps:
              - { id: a, uses: saliency, with: { reduce: maxx } }
              - { id: b, uses: saliency }
              - { id: pf, uses: pixel-flipping, with: { of: b, baseline: [0.1, 0.2] } }
              - { id: sp, uses: sparseness, with: { of: nosuch } }
              - { id: sp2, uses: sparseness, with: { of: b, expect: ["sparsenes_mean > 0.5"] } }
              - { id: pfa, uses: pixel-flipping, with: { of: a, baseline: [0.1, 0.2] } }
            """, dir);
        var (code, errors, output) = Validate(dir, path);
        Assert.Equal(2, code);
        Assert.True(errors.Count == 4, string.Join("\n", errors));
        Assert.Contains(errors, e => e.Contains(":4:") && e.Contains("did you mean 'max'"));
        Assert.Contains(errors, e => e.Contains(":6:") && e.Contains("step 'pf' (pixel-flipping): option 'baseline': give one value or one per channel (1), got 2"));
        Assert.Contains(errors, e => e.Contains(":7:") && e.Contains("step 'sp' option 'of': no other step with id 'nosuch'"));
        Assert.Contains(errors, e => e.Contains(":8:") && e.Contains("step 'sp2'") && e.Contains("did you mean 'sparseness_mean'"));
        AssertInFileOrder(errors);
    }

    [Fact]
    public void AModelThatCannotLoadIsReportedOnceAndTheOtherErrorsStand()
    {
        var dir = TestEnv.TempDir("five-broken");
        File.WriteAllText(Path.Combine(dir, "broken.pt"), "not a checkpoint");
        var path = TestEnv.Pipeline(FiveMistakes("broken.pt"), dir);
        var (code, errors, output) = Validate(dir, path);
        Assert.Equal(2, code);
        Assert.True(errors.Count == 4, string.Join("\n", errors));
        Assert.Single(errors, e => e.Contains("broken.pt") && e.Contains("layer names and targets could not be checked"));
        Assert.Contains(errors, e => e.Contains(":8:") && e.Contains("missing.npy"));
        Assert.Contains(errors, e => e.Contains(":10:") && e.Contains("settings.batch_size"));
        Assert.Contains(errors, e => e.Contains(":19:") && e.Contains("'pdf'"));
    }
}

/// <summary>Errors in <c>--set</c> values name the override, not a place in the file; YAML syntax errors the line.</summary>
public class OverrideErrorTests
{
    [Fact]
    public void OverrideErrorsQuoteTheOverride()
    {
        var quickstart = Path.Combine(TestEnv.RepoRoot, "configs", "quickstart.yaml");
        var (code, stdout, stderr) = TestEnv.Cli(TestEnv.RepoRoot, "validate", quickstart, "--set", "steps.saliency.with.reduce=maxx", "--set", "settings.batch_size=0");
        Assert.Equal(2, code);
        var text = stdout + stderr;
        Assert.Contains("error: --set 'steps.saliency.with.reduce=maxx': step 'saliency' (saliency): option 'reduce': 'maxx'", text);
        Assert.Contains("error: --set 'settings.batch_size=0':", text);
        Assert.DoesNotContain("quickstart.yaml:1:1", text);
    }

    [Fact]
    public void YamlSyntaxErrorsGiveTheLineAndWhatWasExpected()
    {
        var path = TestEnv.Pipeline("version: 1\nmodel:\n  uses: torchvision\nsteps:\n  - uses: saliency\n    with: [a\n");
        var e = Assert.Throws<Loupe.Core.PipelineException>(() => Loupe.Core.PipelineParser.Parse(path));
        Assert.Contains("did not find expected ',' or ']'", e.Message);
        Assert.Matches(":7:1: error: malformed YAML", e.Errors[0].ToString());
    }
}
