using Loupe.Core;

namespace Loupe.Tests;

/// <summary>Parsing, binding and validation: every error names file:line:column, nothing runs when invalid.</summary>
public class PipelineParsingTests
{
    const string Model = """
        model:
          uses: torchvision
          with: { architecture: fashion-cnn }
        """;

    static IReadOnlyList<PipelineError> Errors(string yaml, params string[] overrides)
    {
        var path = TestEnv.Pipeline(yaml);
        var r = TestEnv.Run(path, null, overrides);
        Assert.Equal(2, r.ExitCode);
        Assert.Null(r.OutDir);
        Assert.False(Directory.Exists(Path.Combine(Path.GetDirectoryName(path)!, "out")), "nothing may be written when validation fails");
        Assert.NotEmpty(r.Errors);
        Assert.All(r.Errors, e => Assert.Equal(path, e.File));
        return r.Errors;
    }

    [Fact]
    public void MalformedYamlNamesLineAndColumn()
    {
        var e = Assert.Single(Errors("version: 1\nmodel:\n  uses: [torchvision\nsteps: []\n"));
        Assert.Contains("malformed YAML", e.Message);
        Assert.True(e.Line >= 3, e.ToString());
    }

    [Fact]
    public void UnknownKeyGetsDidYouMean()
    {
        var e = Errors($"version: 1\n{Model}\nsteps:\n  - id: f\n    uses: filters\n    with: {{ layer: conv1 }}\n    targt: top-1\n");
        var err = Assert.Single(e);
        Assert.Contains("unknown key 'targt'", err.Message);
        Assert.Contains("did you mean 'target'", err.Message);
        Assert.Equal(9, err.Line);
        Assert.Equal(5, err.Column);
    }

    [Fact]
    public void UnknownOptionGetsDidYouMeanAndOptionList()
    {
        var err = Assert.Single(Errors($"version: 1\n{Model}\nsteps:\n  - id: f\n    uses: filters\n    with: {{ layr: conv1 }}\n"));
        Assert.Contains("unknown option 'layr'", err.Message);
        Assert.Contains("did you mean 'layer'", err.Message);
        Assert.Equal(8, err.Line);
    }

    [Fact]
    public void UnknownUsesIdListsRegisteredIds()
    {
        var errs = Errors($"version: 1\n{Model}\nsteps:\n  - id: c\n    uses: grad-kam\n    with: {{ layer: relu3 }}\n");
        var err = Assert.Single(errs);
        Assert.Contains("unknown analysis 'grad-kam'", err.Message);
        Assert.Contains("did you mean 'grad-cam'", err.Message);
        Assert.Contains("saliency", err.Message);
        Assert.Equal(7, err.Line);
    }

    [Fact]
    public void WrongTypesAndRangesAreReported()
    {
        var errs = Errors($"version: 1\n{Model}\ndata:\n  uses: npy\n  with: {{ path: {TestEnv.Yaml(TestEnv.Fixture("fashion_input.npy"))} }}\nsteps:\n  - id: o\n    uses: occlusion\n    with: {{ window: big, stride: -3, fill: purple }}\n");
        Assert.Contains(errs, e => e.Message.Contains("option 'window' must be an integer, got 'big'"));
        Assert.Contains(errs, e => e.Message.Contains("'stride'") && e.Message.Contains("-3"));
        Assert.Contains(errs, e => e.Message.Contains("'purple' is not one of zero, mean, blur"));
    }

    [Fact]
    public void MissingRequiredOptionIsReported()
    {
        var err = Assert.Single(Errors($"version: 1\n{Model}\nsteps:\n  - id: f\n    uses: filters\n"));
        Assert.Contains("option 'layer' is required", err.Message);
    }

    [Fact]
    public void LayerThatDoesNotExistGetsDidYouMean()
    {
        var err = Assert.Single(Errors($"version: 1\n{Model}\nsteps:\n  - id: f\n    uses: filters\n    with: {{ layer: conv4 }}\n"));
        Assert.Contains("layer 'conv4' does not exist", err.Message);
        Assert.Contains("did you mean 'conv", err.Message);
        Assert.Equal(8, err.Line);
    }

    [Fact]
    public void NonSpatialLayerIsRefusedForCam()
    {
        var err = Assert.Single(Errors($"version: 1\n{Model}\ndata:\n  uses: npy\n  with: {{ path: {TestEnv.Yaml(TestEnv.Fixture("fashion_input.npy"))} }}\nsteps:\n  - id: c\n    uses: grad-cam\n    with: {{ layer: fc }}\n"));
        Assert.Contains("layer 'fc' has output shape (1×10)", err.Message);
    }

    [Fact]
    public void MissingWeightsFileIsReportedAtTheOption()
    {
        var err = Assert.Single(Errors("version: 1\nmodel:\n  uses: torchvision\n  with: { architecture: fashion-cnn, weights: nowhere/w.safetensors }\nsteps:\n  - id: f\n    uses: filters\n    with: { layer: conv1 }\n"));
        Assert.Contains("file not found", err.Message);
        Assert.Contains("w.safetensors", err.Message);
        Assert.Equal(4, err.Line);
    }

    [Fact]
    public void DuplicateStepIdsAndDuplicateKeysAreReported()
    {
        Assert.Contains(Errors($"version: 1\n{Model}\nsteps:\n  - id: f\n    uses: filters\n    with: {{ layer: conv1 }}\n  - id: f\n    uses: filters\n    with: {{ layer: conv2 }}\n"),
            e => e.Message.Contains("duplicate step id 'f'"));
        var dup = Assert.Single(Errors($"version: 1\nversion: 1\n{Model}\nsteps:\n  - uses: filters\n"));
        Assert.Contains("duplicate key 'version' (first at line 1)", dup.Message);
        Assert.Equal(2, dup.Line);
    }

    [Fact]
    public void TargetErrors()
    {
        var data = $"data:\n  uses: npy\n  with: {{ path: {TestEnv.Yaml(TestEnv.Fixture("fashion_input.npy"))} }}\n";
        Assert.Contains(Errors($"version: 1\n{Model}\n{data}steps:\n  - uses: saliency\n    target: {{ class: 12 }}\n"), e => e.Message.Contains("class index 12 is out of range: the model has 10 outputs"));
        Assert.Contains(Errors($"version: 1\n{Model}\n  labels: {TestEnv.Yaml(Path.Combine(TestEnv.Samples, "models", "fashion-cnn", "labels.txt"))}\n{data}steps:\n  - uses: saliency\n    target: {{ class: sneakr }}\n"),
            e => e.Message.Contains("unknown class name 'sneakr'") && e.Message.Contains("did you mean 'sneaker'"));
        Assert.Contains(Errors($"version: 1\n{Model}\n{data}steps:\n  - uses: saliency\n    target: top-one\n"), e => e.Message.Contains("unknown target 'top-one'") && e.Message.Contains("top-1"));
        Assert.Contains(Errors($"version: 1\n{Model}\nsteps:\n  - uses: filters\n    with: {{ layer: conv1 }}\n    target: top-1\n"), e => e.Message.Contains("does not explain a target"));
    }

    [Fact]
    public void SetOverridesAddressStepsById()
    {
        var path = TestEnv.Pipeline($"version: 1\n{Model}\nsteps:\n  - id: f\n    uses: filters\n    with: {{ layer: conv4 }}\n");
        var r = TestEnv.Run(path, null, "steps.f.with.layer=conv2");
        Assert.Equal(0, r.ExitCode);
        Assert.Equal(64 * 32 * 9, TestEnv.Artifact(r, "f/weights.npy").Data.Length);
        var bad = TestEnv.Run(path, Path.Combine(Path.GetDirectoryName(path)!, "o2"), "steps.g.with.layer=conv2");
        Assert.Contains(bad.Errors, e => e.Message.Contains("no step with id 'g'") && e.Message.Contains("did you mean 'f'"));
    }

    [Fact]
    public void BinderNormalisesKeysAndBindsNestedOptions()
    {
        var errors = new List<PipelineError>();
        var ys = new YamlDotNet.RepresentationModel.YamlStream();
        ys.Load(new StringReader("{ layer: relu2, channels: 3, threshold: { mode: quantile, quantile: 0.9 } }"));
        var bound = OptionsBinder.Bind(typeof(Loupe.Analysis.Behaviour.ActivationsOptions), ys.Documents[0].RootNode, "f.yaml", "x", "/", errors, default);
        Assert.Empty(errors);
        var o = (Loupe.Analysis.Behaviour.ActivationsOptions)bound.Value;
        Assert.Equal([3], o.Channels!);
        Assert.Equal(Loupe.Analysis.Behaviour.ThresholdMode.Quantile, o.Threshold.Mode);
        Assert.Equal(0.9, o.Threshold.Quantile);
        Assert.Equal("relu2", Assert.Single(bound.Layers).Layer);
    }
}
