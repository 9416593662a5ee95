using Loupe.Abstractions;
using Loupe.Core;
using Loupe.Targets;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>torchvision's detectors as torchvision exports them (<c>torch.onnx.export(model, ([image],), ...)</c>: one
/// unbatched C×H×W image in; D×4 boxes, D int64 labels and D scores out, D varying with the image), on both onnx
/// backends: run image by image, padded to a batch (the differentiable one interprets If, Loop, NonMaxSuppression,
/// RoiAlign, TopK, GatherND, …). References: PyTorch's own detections of each image and the gradient of pytorch-grad-cam's
/// FasterRCNNBoxScoreTarget, tests/fixtures/detseg/make_torchvision_detectors.py (FasterRCNN, RetinaNet, MaskRCNN,
/// KeypointRCNN and FCOS with tiny backbones and heads).</summary>
public class TorchvisionDetectorTests
{
    static string Dir => Path.Combine(TestEnv.Fixtures, "detseg", "torchvision");
    static NdArray Fixture(string name) => Npy.Read(Path.Combine(Dir, name));

    static string DetPipeline(string model, string steps, string backend = "onnx-runtime") => TestEnv.Pipeline($$"""
        version: 1
        name: torchvision-det
        model:
          uses: {{backend}}
          with: { path: {{TestEnv.Yaml(Path.Combine(Dir, model + ".onnx"))}}, flatten_output: false, mean: [0, 0, 0], std: [1, 1, 1] }
        data:
          uses: npy
          with: { path: {{TestEnv.Yaml(Path.Combine(Dir, "input.npy"))}} }
        steps:
        {{steps}}
        """);

    /// <summary>The fixture's detectors.</summary>
    public static TheoryData<string> Models => new() { "fasterrcnn", "retinanet", "maskrcnn", "keypointrcnn", "fcos" };

    static ITarget Box(BoxOptions o, IReadOnlyList<string> layers) => new BoxTargetFactory().Create(o, new TargetContext([], 64, layers));

    [Theory]
    [InlineData("fasterrcnn", "onnx-runtime")]
    [InlineData("retinanet", "onnx-runtime")]
    [InlineData("fasterrcnn", "onnx")]
    [InlineData("retinanet", "onnx")]
    [InlineData("maskrcnn", "onnx-runtime")]
    [InlineData("maskrcnn", "onnx")]
    [InlineData("keypointrcnn", "onnx-runtime")]
    [InlineData("keypointrcnn", "onnx")]
    [InlineData("fcos", "onnx-runtime")]
    [InlineData("fcos", "onnx")]
    public void EachImagesDetectionsArePyTorchsPaddedToTheBatch(string model, string backend)
    {
        using var scope = NewDisposeScope();
        using var prep = PipelineRunner.Prepare(new RunRequest(DetPipeline(model, "  - { id: s, uses: occlusion, target: { box: {} } }\n", backend)) { PluginDirectories = [TestEnv.PluginDirectory] });
        Assert.Equal((3, 64, 64), (prep.Model.DefaultInput.Channels, prep.Model.DefaultInput.Height, prep.Model.DefaultInput.Width));
        var x = Fixture("input.npy").ToTensor();
        var counts = Enumerable.Range(0, 2).Select(i => Fixture($"{model}.{i}.scores.npy").Shape[0]).ToArray();
        if (model != "keypointrcnn") Assert.NotEqual(counts[0], counts[1]);   // the images detect differently: one row is padded
        long d = counts.Max();
        // Every output PyTorch gave: Mask R-CNN's masks pasted into the image (by the graph's Loop), Keypoint R-CNN's
        // keypoints and their scores (bicubic heatmaps, in a Loop too).
        var keys = Directory.GetFiles(Dir, $"{model}.0.*.npy").Select(f => Path.GetFileName(f)[$"{model}.0.".Length..^".npy".Length])
            .Where(k => k != "grad").Order(StringComparer.Ordinal).ToArray();
        Assert.Contains("boxes", keys);
        using var cap = prep.Model.Capture(keys, false);
        Tensor y;
        using (no_grad()) y = prep.Model.Forward(x);
        Assert.Equal(new long[] { 2, d, 4 }, y.shape);                           // the first output: boxes
        foreach (var key in keys)
        {
            var got = cap[key];
            Assert.Equal(2, got.shape[0]);
            Assert.Equal(d, got.shape[1]);
            for (int i = 0; i < 2; i++)
            {
                var want = Fixture($"{model}.{i}.{key}.npy").Data;
                var row = got[i].flatten().to(ScalarType.Float32).ToArray<float>();
                var real = row.Take(want.Length).ToArray();
                double err = TestEnv.RelL2(real, want);
                Assert.True(err <= 1e-4, $"{model} on {backend}, image {i} {key}: rel L2 {err:E2} against PyTorch: {string.Join(" ", real)} vs {string.Join(" ", want)}");
                Assert.All(row.Skip(want.Length), v => Assert.Equal(0f, v));   // the padding
            }
        }
        // The box target takes each image's top-scoring detection, never a padded row: IoU 1 + its score.
        var target = Box(new BoxOptions(), ["boxes", "labels", "scores"]);
        var input = new TargetInput(y, l => cap[l]);
        var selection = target.Select(input);
        var scores = target.Scores(input, selection).ToArray<float>();
        for (int i = 0; i < 2; i++)
        {
            var s = Fixture($"{model}.{i}.scores.npy").Data;
            int top = Array.IndexOf(s, s.Max());
            Assert.Equal((long)Fixture($"{model}.{i}.labels.npy").Data[top], selection.Classes![i]);
            Assert.Equal(Fixture($"{model}.{i}.boxes.npy").Data.Skip(top * 4).Take(4).ToArray(), selection.Marks![i]![0].Box!,
                new Tolerance(1e-3f));
            Assert.Equal(1 + s.Max(), scores[i], 1e-4f);
        }
    }

    sealed class Tolerance(float tol) : IEqualityComparer<float>
    {
        public bool Equals(float a, float b) => Math.Abs(a - b) <= tol * Math.Max(1, Math.Abs(b));
        public int GetHashCode(float v) => 0;
    }

    /// <summary>The backbone's last ReLU (module path): FCOS's one-convolution backbone, the others' three.</summary>
    static string Relu(string model) => model == "fcos" ? "backbone.1" : "backbone.5";

    static string ForwardOnly(string model) => $$"""
              - { id: drise, uses: d-rise, with: { masks: 64, grid: 8 }, target: { box: {} } }
              - { id: occ, uses: occlusion, with: { window: 16, stride: 16 }, target: { box: {} } }
              - { id: eigen, uses: eigen-cam, with: { layer: /backbone/{{Relu(model)}}/Relu_output_0 }, target: { box: {} } }
            """;

    [Theory]
    [MemberData(nameof(Models))]
    public void ForwardOnlyMethodsGiveTheSameMapsOnBothBackends(string model)
    {
        var ort = TestEnv.Run(DetPipeline(model, ForwardOnly(model)));
        Assert.True(ort.ExitCode == 0, string.Join("\n", ort.Errors) + ort.Manifest?.ToJsonString());
        var onnx = TestEnv.Run(DetPipeline(model, ForwardOnly(model), "onnx"));
        Assert.True(onnx.ExitCode == 0, string.Join("\n", onnx.Errors) + onnx.Manifest?.ToJsonString());
        foreach (var (step, name) in new[] { ("drise", "d-rise"), ("occ", "occlusion"), ("eigen", "eigen-cam") })
            for (int i = 0; i < 2; i++)
            {
                var a = TestEnv.Artifact(ort, $"{step}/{i:D5}.{name}.npy").Data;
                var b = TestEnv.Artifact(onnx, $"{step}/{i:D5}.{name}.npy").Data;
                Assert.All(a, v => Assert.True(float.IsFinite(v)));
                Assert.True(a.Max() > a.Min(), $"{step} image {i}: a constant map");
                double err = TestEnv.RelL2(b, a);
                Assert.True(err <= 1e-4, $"{model} {step} image {i}: onnx vs onnx-runtime rel L2 {err:E2}");
            }
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void TheGradientOfTheTopDetectionIsPyTorchs(string model)
    {
        // saliency = |d(IoU + score)/dx| of each image's top detection, through NMS, RoiAlign / GatherND and the
        // graph's own normalisation and resize; grad-cam on the backbone runs on the same gradient.
        var r = TestEnv.Run(DetPipeline(model, $$"""
              - { id: sal, uses: saliency, target: { box: {} } }
              - { id: cam, uses: grad-cam, with: { layer: {{Relu(model)}} }, target: { box: {} } }
            """, "onnx"));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        for (int i = 0; i < 2; i++)
        {
            var want = Fixture($"{model}.{i}.grad.npy").Data.Select(Math.Abs).ToArray();
            var got = TestEnv.Artifact(r, $"sal/{i:D5}.saliency.npy").Data;
            double err = TestEnv.RelL2(got, want);
            Assert.True(err <= 1e-3, $"{model} image {i}: saliency of the box score, rel L2 {err:E2} against PyTorch's gradient");
            Assert.All(TestEnv.Artifact(r, $"cam/{i:D5}.grad-cam.npy").Data, v => Assert.True(float.IsFinite(v)));
        }
        // Random weights can leave one image's Grad-CAM all negative (a zero map after the ReLU), not both.
        Assert.Contains(Enumerable.Range(0, 2), i => TestEnv.Artifact(r, $"cam/{i:D5}.grad-cam.npy").Data is var cam && cam.Max() > cam.Min());
    }

    [Fact]
    public void CocoLabelsNameTheDetectionsWithoutAnOutputCountWarning()
    {
        // samples/labels/coco-torchvision.txt: 91 names by label index. A detector's first output is N×D×4 boxes, whose
        // dim 1 counts detections, not classes: no "the model has 30 outputs but 91 labels" warning.
        var yaml = File.ReadAllText(DetPipeline("fasterrcnn", "  - { id: occ, uses: occlusion, with: { window: 32, stride: 32 }, target: { box: {} } }\n"))
            .Replace("data:", $"  labels: {TestEnv.Yaml(Path.Combine(TestEnv.Samples, "labels", "coco-torchvision.txt"))}\ndata:");
        var r = TestEnv.Run(TestEnv.Pipeline(yaml));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        var warnings = r.Manifest!["warnings"]!.AsArray().Select(w => (string)w!).ToList();
        Assert.DoesNotContain(warnings, w => w.Contains("labels"));
        var labels = File.ReadAllLines(Path.Combine(TestEnv.Samples, "labels", "coco-torchvision.txt"));
        Assert.Equal(91, labels.Length);
        Assert.Equal(("__background__", "person", "toothbrush"), (labels[0], labels[1], labels[90]));
        // The box target names each image's top detection by its label (PyTorch's top label, by name).
        using var prep = PipelineRunner.Prepare(new RunRequest(TestEnv.Pipeline(yaml)) { PluginDirectories = [TestEnv.PluginDirectory] });
        using var scope = NewDisposeScope();
        var target = prep.Steps[0].Target;
        using var cap = prep.Model.Capture(target.RequiredLayers, false);
        Tensor y;
        using (no_grad()) y = prep.Model.Forward(Fixture("input.npy").ToTensor());
        var selection = target.Select(new TargetInput(y, l => cap[l]));
        for (int i = 0; i < 2; i++)
        {
            var s = Fixture($"fasterrcnn.{i}.scores.npy").Data;
            var top = (int)Fixture($"fasterrcnn.{i}.labels.npy").Data[Array.IndexOf(s, s.Max())];
            Assert.StartsWith(labels[top] + " ", selection.Labels![i]);
        }
    }

    [Fact]
    public void AnImageWithoutDetectionsIsNamedAndNoDetectionScoresZero()
    {
        using var scope = NewDisposeScope();
        // Image 1's row is all padding (zero boxes): no detection to explain.
        var boxes = tensor(new float[] { 4, 4, 20, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, [2, 2, 4]);
        var scores = tensor(new float[] { 0.9f, 0, 0, 0 }, [2, 2]);
        var labels = tensor(new float[] { 1, 0, 0, 0 }, [2, 2]);
        var layers = new Dictionary<string, Tensor> { ["boxes"] = boxes, ["scores"] = scores, ["labels"] = labels };
        var target = Box(new BoxOptions(), ["boxes", "labels", "scores"]);
        var e = Assert.Throws<LoupeException>(() => target.Select(new TargetInput(boxes, l => layers[l])));
        Assert.Contains("input 1 has no detection", e.Message);
        // Image 0 alone: selected; a forward whose images keep no detection at all (D = 0) scores 0.
        var one = new Dictionary<string, Tensor> { ["boxes"] = boxes[..1], ["scores"] = scores[..1], ["labels"] = labels[..1] };
        var selection = target.Select(new TargetInput(boxes[..1], l => one[l]));
        Assert.Equal(1L, selection.Classes![0]);
        var none = new Dictionary<string, Tensor> { ["boxes"] = zeros(1, 0, 4), ["scores"] = zeros(1, 0), ["labels"] = zeros(1, 0) };
        var input = new TargetInput(none["boxes"], l => none[l]);
        Assert.Equal(0f, target.Scores(input, selection).ToArray<float>()[0]);
        Assert.Equal(0f, ((IDetectionSimilarity)target).Similarity(input, selection).ToArray<float>()[0]);
    }
}
