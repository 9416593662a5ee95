using System.Text.Json.Nodes;
using static Loupe.Evaluation.Tests.QualityTests;

namespace Loupe.Evaluation.Tests;

/// <summary>relative-representation-stability's representation as Quantus's forward hooks make it: layers by name
/// (layer_names), every call's output of each, concatenated. One sample, the same step
/// id and seed in every run, so the same noise and the same numerator n: a representation made of parts with relative
/// changes d₁, d₂, … has ‖·‖² = Σ dᵢ², so its score r = n / ‖·‖ gives 1/r² = Σ 1/rᵢ² over runs that each take one part.</summary>
public class RepresentationStabilityTests
{
    static double[] Scores(string model, string with, int images = 3, int samples = 1)
    {
        var r = RunOn(RegionNet.Images(images, 19), 7, model, $$"""
              - { id: gxi, uses: gradient-x-input }
              - { id: rrs, uses: relative-representation-stability, with: { of: gxi, samples: {{samples}}{{with}} } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        return JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "rrs", "relative_representation_stability.json")))!["inputs"]!
            .AsArray().Select(i => i!["value"]!.GetValue<double>()).ToArray();
    }

    /// <summary>1/r² of the whole is the sum of the parts' 1/r² (to 1e-6 relative).</summary>
    static void Sums(double[] whole, params double[][] parts)
    {
        for (int i = 0; i < whole.Length; i++)
        {
            double want = 1 / Math.Sqrt(parts.Sum(p => 1 / (p[i] * p[i])));
            Assert.True(Math.Abs(whole[i] - want) <= 1e-6 * want, $"rrs[{i}]: {whole[i]} against {want} from its parts");
        }
    }

    static void Same(double[] a, double[] b, string what)
    {
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) <= 1e-9 * Math.Abs(b[i]), $"{what} [{i}]: {a[i]} against {b[i]}");
    }

    [Fact]
    public void RepresentationStabilityConcatenatesItsLayers() =>
        Sums(Scores("region-test", ", layers: [conv, relu]"), Scores("region-test", ", layer: conv"), Scores("region-test", ", layers: [relu]"));

    [Fact]
    public void A_module_that_runs_twice_gives_both_calls_whether_named_or_by_default()
    {
        // ReuseNet: conv → relu (1st call) → first (identity) → conv2 → relu (2nd call) → fc. Quantus hooks the ReLU
        // module, so its layer_names=["relu"] keeps both calls: the default (every layer, every call) is the four
        // single-call layers plus 'relu' — which a last-call-only 'relu' would miss by first's part (= the 1st call).
        var all = Scores("reuse-test", "");
        var relu = Scores("reuse-test", ", layer: relu");
        var others = Scores("reuse-test", ", layers: [conv, first, conv2, fc]");
        Sums(all, others, relu);
        // ... and 'relu' is more than its first call ('first' is that call's output): the second call counts too.
        var first = Scores("reuse-test", ", layer: first");
        for (int i = 0; i < 3; i++) Assert.True(1 / (relu[i] * relu[i]) > 1.01 / (first[i] * first[i]), $"rrs[{i}]: relu {relu[i]}, first call {first[i]}");
        // Every layer named is the default.
        Same(Scores("reuse-test", ", layers: [conv, relu, first, conv2, fc]"), all, "every layer named");
        Same(Scores("region-test", ", layers: [conv, relu, fc]"), Scores("region-test", ""), "region CNN, every layer named");
    }

    /// <summary>The ViT sample as an exported ONNX graph: its layers are node outputs, node names and PyTorch module
    /// paths, and a module path names the same value as its last child's when the child ends it.</summary>
    static readonly string Vit = $"onnx, with: {{ path: {Env.Yaml(Path.Combine(Env.RepoRoot, "samples", "models", "fashion-vit", "fashion-vit.onnx"))} }}";

    static string Block(int b) => string.Join(", ", new[] { "", ".ln_1", ".self_attention", ".ln_2", ".mlp.0", ".mlp.1", ".mlp.3" }.Select(s => $"vit.encoder.layers.encoder_layer_{b}{s}"));

    [Fact]
    public void On_an_onnx_graph_the_default_is_each_module_value_once()
    {
        // 3 inputs: the graph's shape vectors of 3-D tensors ([3], int64) have 3 rows too; they are not outputs per
        // input and must not be taken (they were, and the copies' pass, without them, failed to line up). The distinct
        // values of the module paths: the logits (vit = vit.heads = vit.heads.head), the patch embedding, the final
        // LayerNorm (vit.encoder = vit.encoder.ln) and seven per block (its output, ln_1, self_attention, ln_2, mlp.0,
        // mlp.1 and mlp.3, which ends the mlp: mlp = mlp.3; vit.encoder.layers ends in block 1): Σ 1/r² over three runs that split them is the default's, which a
        // default counting a value under two names would exceed.
        var all = Scores(Vit, "");
        Sums(all, Scores(Vit, ", layers: [vit, vit.conv_proj, vit.encoder]"), Scores(Vit, $", layers: [{Block(0)}]"), Scores(Vit, $", layers: [{Block(1)}]"));
        // A name and its alias are one value.
        Same(Scores(Vit, ", layers: [vit.encoder.layers.encoder_layer_0.mlp]"), Scores(Vit, ", layers: [vit.encoder.layers.encoder_layer_0.mlp.3]"), "mlp and mlp.3");
    }

    [Fact]
    public void Outputs_that_are_not_one_row_per_input_are_left_out_however_they_are_named()
    {
        // A shape ([3] int64 on 3 inputs) beside a layer changes nothing; alone it is no representation.
        var conv = Scores(Vit, ", layer: vit.conv_proj");
        Same(Scores(Vit, ", layers: [vit.conv_proj, /vit/Shape_output_0]"), conv, "with a shape vector");
        var r = RunOn(RegionNet.Images(3, 19), 7, Vit, """
              - { id: gxi, uses: gradient-x-input }
              - { id: rrs, uses: relative-representation-stability, with: { of: gxi, samples: 1, layer: /vit/Shape_output_0 } }
            """);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("layer(s) /vit/Shape_output_0 gave no floating-point output of the batch's 3 rows", Loupe.Testing.HostRuns.StepError(r, "rrs"));
        // 17 inputs: the attention's sequence-first tensors (17 tokens × N × 64) have 17 rows on the inputs, not on
        // their 2 × 17 copies; left out, not lined up against another layer.
        var seq = "/vit/encoder/layers/encoder_layer_0/self_attention/Transpose_output_0";
        Same(Scores(Vit, $", layers: [vit.conv_proj, {seq}]", 17, 2), Scores(Vit, ", layer: vit.conv_proj", 17, 2), "with a sequence-first tensor");
    }

    [Fact]
    public void Only_relative_representation_stability_takes_layers()
    {
        var (bad, _) = SeededRegionRun(7, 19, "reuse-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: ll, uses: local-lipschitz, with: { of: gxi, layer: relu } }
              - { id: ros, uses: relative-output-stability, with: { of: gxi, layers: [conv] } }
            """);
        Assert.Equal(2, bad.ExitCode);
        var errors = string.Join("\n", bad.Errors.Select(e => e.Message));
        Assert.Contains("option 'layer' applies to relative-representation-stability, not to local-lipschitz", errors);
        Assert.Contains("option 'layers' applies to relative-representation-stability, not to relative-output-stability", errors);
    }

    /// <summary>The copies' squared relative changes, read as the tensors lie (channels-last or not, float32 or float64,
    /// zeros in the clean rows guarded by ε), equal the formula on float64 tensors in logical order.</summary>
    [Fact]
    public void RelativeSquaresMatchTheFormulaWhateverTheLayout()
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        TorchSharp.torch.manual_seed(5);
        const double eps = 1e-6;
        long n = 3, k = 4;
        var a = TorchSharp.torch.randn(n, 5, 6, 7);
        a.select(1, 1).zero_();   // a channel of zeros: ε
        var b = a.repeat(k, 1, 1, 1) + 0.1 * TorchSharp.torch.randn(k * n, 5, 6, 7);
        var a64 = a.to(TorchSharp.torch.ScalarType.Float64).reshape(n, -1);
        var b64 = b.to(TorchSharp.torch.ScalarType.Float64).reshape(k * n, -1);
        var rows = a64.repeat(k, 1);
        var want = ((rows - b64) / (rows + (rows == 0).to(rows.dtype) * eps)).square().sum(1).data<double>().ToArray();
        static TorchSharp.torch.Tensor Last(TorchSharp.torch.Tensor t) => t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2);   // N×C×H×W stored N×H×W×C
        foreach (var (name, clean, copies) in new[]
        {
            ("contiguous", a, b),
            ("channels-last", Last(a), Last(b)),
            ("clean channels-last, copies not", Last(a), b),
            ("clean contiguous, copies channels-last", a, Last(b)),
            ("float64", a.to(TorchSharp.torch.ScalarType.Float64), b.to(TorchSharp.torch.ScalarType.Float64)),
            ("2-D, width not a multiple of 8", a.reshape(n, -1).narrow(1, 0, 203).contiguous(), b.reshape(k * n, -1).narrow(1, 0, 203).contiguous()),
        })
        {
            var sums = new double[k * n];
            Loupe.Analysis.Evaluation.RelativeSquares.Add(clean, copies, eps, sums);
            var expected = name.StartsWith("2-D") ? ((rows.narrow(1, 0, 203) - b64.narrow(1, 0, 203)) / (rows.narrow(1, 0, 203) + (rows.narrow(1, 0, 203) == 0).to(rows.dtype) * eps)).square().sum(1).data<double>().ToArray() : want;
            for (int r = 0; r < sums.Length; r++)
                Assert.True(Math.Abs(sums[r] - expected[r]) <= 1e-12 * expected[r], $"{name} row {r}: {sums[r]} against {expected[r]}");
        }
    }
}
