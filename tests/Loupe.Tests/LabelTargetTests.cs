using Loupe.Abstractions;
using Loupe.Targets;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>The <c>label</c> target (each input's ground-truth class from the data, Quantus's <c>y_batch</c>) and the
/// <c>npy</c> data source's <c>labels:</c> file.</summary>
public class LabelTargetTests
{
    static string Labels(string dir, long[] values, string descr = "<i8")
    {
        var path = Path.Combine(dir, "labels.npy");
        var bytes = Npy.EncodeInt64(values);
        if (descr == "<i4")   // the same values as int32: the header's dtype (same length), then 4 bytes each
        {
            int data = Array.IndexOf(bytes, (byte)'\n') + 1;
            bytes[bytes.AsSpan(0, data).IndexOf("<i8"u8) + 2] = (byte)'4';
            bytes = [.. bytes.AsSpan(0, data), .. values.SelectMany(v => BitConverter.GetBytes((int)v))];
        }
        File.WriteAllBytes(path, bytes);
        return path;
    }

    static string Pipeline(string labels, string steps) => TestEnv.Pipeline($"""
        version: 1
        model:
          uses: torchvision
          with: {"{"} architecture: fashion-cnn, weights: {TestEnv.Yaml(TestEnv.Fixture("fashion_cnn_seed0.pt"))} {"}"}
        data:
          uses: npy
          with: {"{"} path: {TestEnv.Yaml(TestEnv.Fixture("fashion_input.npy"))}, labels: {TestEnv.Yaml(labels)} {"}"}
        settings: {"{"} batch_size: 3 {"}"}
        steps:
        {steps}
        """, Path.GetDirectoryName(labels));

    [Fact]
    public void EachInputIsExplainedForItsLabelNotItsPrediction()
    {
        // Labels 7, 2, 7, 2 (int32 on disk) over the 4 fixture inputs in batches of 3: the label step's map of each input
        // is the fixed-class step's of its label, whatever the model predicts; a metric of the step runs on those classes.
        var dir = TestEnv.TempDir();
        var labels = Labels(dir, [7, 2, 7, 2], "<i4");
        var r = TestEnv.Run(Pipeline(labels, """
              - { id: lab, uses: saliency, target: label }
              - { id: c7, uses: saliency, target: { class: 7 } }
              - { id: c2, uses: saliency, target: { class: 2 } }
              - { id: soft, uses: saliency, target: { label: softmax } }
              - { id: pf, uses: pixel-flipping, with: { of: lab, features_in_step: 98 } }
            """), Path.Combine(dir, "out"));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        for (int i = 0; i < 4; i++)
        {
            var map = TestEnv.Artifact(r, $"lab/{i:D5}.saliency.npy").Data;
            var want = TestEnv.Artifact(r, $"{(i % 2 == 0 ? "c7" : "c2")}/{i:D5}.saliency.npy").Data;
            Assert.Equal(want, map);
            Assert.NotEqual(want, TestEnv.Artifact(r, $"{(i % 2 == 0 ? "c2" : "c7")}/{i:D5}.saliency.npy").Data);
            Assert.NotEqual(map, TestEnv.Artifact(r, $"soft/{i:D5}.saliency.npy").Data);   // softmax of the label, not its logit
        }
        var targets = r.Manifest!["artifacts"]!.AsArray().Where(a => (string?)a!["step"] == "lab" && (string?)a!["kind"] == "raw").Select(a => (string?)a!["target"]).ToList();
        Assert.Equal(4, targets.Count);
        Assert.All(targets, t => Assert.Matches(@"^class [27]\b", t ?? ""));
    }

    [Fact]
    public void AMetricWithTheLabelTargetRemakesTheMapsForTheLabels()
    {
        // The metric step's target differs from the evaluated step's, so the step's kept maps do not serve: the metric
        // makes them again, selecting each input's label from the data (all 7 here) — the same numbers as the metric
        // with target class 7 on the maps that step kept.
        var dir = TestEnv.TempDir();
        var r = TestEnv.Run(Pipeline(Labels(dir, [7, 7, 7, 7]), """
              - { id: c7, uses: saliency, target: { class: 7 } }
              - { id: by-label, uses: pixel-flipping, with: { of: c7, features_in_step: 98 }, target: label }
              - { id: by-class, uses: pixel-flipping, with: { of: c7, features_in_step: 98 }, target: { class: 7 } }
            """), Path.Combine(dir, "out"));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + StepError(r));
        var csv = File.ReadAllLines(Path.Combine(r.OutDir!, "metrics.csv")).Skip(1).Select(l => l.Split(',')).ToList();
        var byLabel = csv.Where(f => f[0] == "by-label").ToDictionary(f => f[3], f => f[4]);
        var byClass = csv.Where(f => f[0] == "by-class").ToDictionary(f => f[3], f => f[4]);
        Assert.NotEmpty(byLabel);
        Assert.Equal(byClass, byLabel);
    }

    [Fact]
    public void ImageFolderClassesAreTheSortedSubfolders()
    {
        // torchvision's ImageFolder: classes are the subfolders sorted by name (an empty one counts): "a-bag" 0,
        // "b-boot" 1, "c-empty" 2 (no image), "d-shirt" 3.
        var dir = TestEnv.TempDir();
        var root = Path.Combine(dir, "images");
        var samples = Directory.GetFiles(Path.Combine(TestEnv.Samples, "images", "fashion"), "*.png").Order(StringComparer.Ordinal).Take(3).ToArray();
        foreach (var (sub, file) in new[] { ("d-shirt", samples[0]), ("a-bag", samples[1]), ("b-boot", samples[2]) })
        {
            Directory.CreateDirectory(Path.Combine(root, sub));
            File.Copy(file, Path.Combine(root, sub, Path.GetFileName(file)));
        }
        Directory.CreateDirectory(Path.Combine(root, "c-empty"));
        string Yaml(string with) => TestEnv.Pipeline($"""
            version: 1
            {TestEnv.DemoModel}
            data:
              uses: image-folder
              with: {"{"} path: {TestEnv.Yaml(root)}{with} {"}"}
            steps:
              - {"{"} id: s, uses: saliency, target: label {"}"}
            """, dir);
        var r = TestEnv.Run(Yaml(", recursive: true, labels: folders"), Path.Combine(dir, "out"));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + StepError(r));
        var targets = r.Manifest!["artifacts"]!.AsArray().Where(a => (string?)a!["step"] == "s" && (string?)a!["kind"] == "raw")
            .ToDictionary(a => ((string)a!["input"]!).Split('/')[0], a => (string?)a!["target"]);
        Assert.Equal(3, targets.Count);
        Assert.StartsWith("class 0", targets["a-bag"]);
        Assert.StartsWith("class 1", targets["b-boot"]);
        Assert.StartsWith("class 3", targets["d-shirt"]);
        var flat = TestEnv.Run(Yaml(", labels: folders"), Path.Combine(dir, "flat"));
        Assert.Contains(flat.Errors, e => e.Message.Contains("option 'labels': folders reads the classes from the subfolders; set recursive: true"));
    }

    static string StepError(Loupe.Core.RunResult r) =>
        string.Join("; ", r.Manifest!["steps"]!.AsArray().Select(s => (string?)s!["error"]).Where(e => e is not null)) is { Length: > 0 } e ? e : "(no step error)";

    [Fact]
    public void MissingWrongOrUnusableLabelsAreClearErrors()
    {
        var dir = TestEnv.TempDir();
        // Three labels for four inputs: the data source names the file.
        var short3 = TestEnv.Run(Pipeline(Labels(dir, [1, 2, 3]), "  - { id: s, uses: saliency, target: label }\n"), Path.Combine(dir, "a"));
        Assert.NotEqual(0, short3.ExitCode);
        Assert.True(short3.Errors.Any(e => e.Message.Contains("labels.npy") && e.Message.Contains("3 labels for 4 inputs")), string.Join("\n", short3.Errors));
        // A label past the model's ten outputs: the input is named.
        var dir2 = TestEnv.TempDir();
        var big = TestEnv.Run(Pipeline(Labels(dir2, [1, 2, 10, 3]), "  - { id: s, uses: saliency, target: label }\n"), Path.Combine(dir2, "b"));
        Assert.NotEqual(0, big.ExitCode);
        Assert.Matches(@"target 'label': input '00002' has label 10, outside the model's 10 outputs", StepError(big));
        // No labels at all (the fixture pipeline's npy has none): refused before anything runs, every such step at once,
        // at its 'target' line; a step with another target is not named.
        var none = TestEnv.Run(TestEnv.FixturePipeline("  - { id: s, uses: saliency, target: label }\n  - { id: t, uses: saliency }\n  - { id: u, uses: saliency, target: { label: { mode: softmax } } }\n"));
        Assert.NotEqual(0, none.ExitCode);
        Assert.Null(none.Manifest);
        var errors = none.Errors.Where(e => e.Message.Contains("reads each input's label")).ToArray();
        Assert.Equal(2, errors.Length);
        Assert.Contains("step 's' (saliency): its target reads each input's label, and data 'npy' has none", errors[0].Message);
        Assert.Contains("step 'u'", errors[1].Message);
        Assert.True(errors[0].Line > 0 && errors[1].Line > errors[0].Line);
        Assert.DoesNotContain(none.Errors, e => e.Message.Contains("step 't'"));
    }

    [Fact]
    public void TheTargetSelectsFromTheBatchAndRefusesToChooseFromAnOutput()
    {
        using var scope = NewDisposeScope();
        var target = new LabelTargetFactory().Create(new ScoreOptions { Mode = ScoreMode.LogSoftmax }, new TargetContext(["a", "b", "c"], 3, []));
        var data = Assert.IsAssignableFrom<IDataTarget>(target);
        var output = tensor(new[] { 2.0, 0.5, -1.0, 0.0, 3.0, 1.0 }, ScalarType.Float64).view(2, 3);
        var batch = new InputBatch(["x", "y"], zeros(2, 1, 2, 2), zeros(2, 1, 2, 2), [2, 0]);
        var sel = data.Select(batch, 0);
        Assert.Equal([2L, 0L], sel.Classes!);
        Assert.Equal(["class 2 (c)", "class 0 (a)"], sel.Labels);
        var s = target.Scores(new TargetInput(output, l => throw new KeyNotFoundException(l)), sel).ToArray<double>();
        Assert.Equal(-1.0 - Math.Log(Math.Exp(2.0) + Math.Exp(0.5) + Math.Exp(-1.0)), s[0], 1e-12);
        Assert.Equal(0.0 - Math.Log(1 + Math.Exp(3.0) + Math.Exp(1.0)), s[1], 1e-12);
        var e = Assert.Throws<LoupeException>(() => target.Select(new TargetInput(output, l => throw new KeyNotFoundException(l))));
        Assert.Contains("not from the data's labels", e.Message);
        Assert.Equal("label (log-softmax)", target.Describe());
    }
}
