using Loupe.Abstractions;
using Loupe.Targets;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Tests;

/// <summary>Target score modes (softmax, log-softmax, sigmoid, rest), binary heads and regression outputs.</summary>
public class TargetModeTests
{
    static TargetInput Input(Tensor output) => new(output, l => throw new KeyNotFoundException(l));

    static double[] Row(double[,] z, int i) => Enumerable.Range(0, z.GetLength(1)).Select(k => z[i, k]).ToArray();

    [Fact]
    public void SoftmaxLogSoftmaxAndSigmoidScoresAreTheClosedForms()
    {
        using var scope = NewDisposeScope();
        double[,] z = { { 1.5, -0.5, 0.25, 3.0 }, { -2.0, 0.0, 4.0, 1.0 } };
        var output = tensor(z, ScalarType.Float64);
        var ctx = new TargetContext(["a", "b", "c", "d"], 4, []);
        foreach (var mode in Enum.GetValues<ScoreMode>())
        {
            var target = new ClassTargetFactory().Create(new ClassTargetOptions { Class = "c", Mode = mode }, ctx);
            var sel = target.Select(Input(output));
            Assert.Equal([2L, 2L], sel.Classes!);
            var s = target.Scores(Input(output), sel).ToArray<double>();
            for (int i = 0; i < 2; i++)
            {
                var r = Row(z, i);
                double lse = Math.Log(r.Sum(Math.Exp));
                double expected = mode switch
                {
                    ScoreMode.Softmax => Math.Exp(r[2] - lse),
                    ScoreMode.LogSoftmax => r[2] - lse,
                    ScoreMode.Sigmoid => 1 / (1 + Math.Exp(-r[2])),
                    ScoreMode.Rest => r[2] + (r[2] - lse),   // z_c − CE(z, c), pytorch-grad-cam's ClassifierOutputReST
                    _ => r[2],
                };
                Assert.Equal(expected, s[i], 1e-12);
            }
        }
    }

    [Fact]
    public void LogSoftmaxGradientIsOneHotMinusProbabilities()
    {
        // d log softmax(z)_c / dz = e_c − softmax(z): the target's score differentiates as the formula says.
        using var scope = NewDisposeScope();
        var z = tensor(new[] { 0.3, -1.2, 2.0, 0.7, 0.1 }, ScalarType.Float64).view(1, 5).requires_grad_(true);
        var target = new TopOneTargetFactory().Create(new ScoreOptions { Mode = ScoreMode.LogSoftmax }, new TargetContext([], 5, []));
        var sel = target.Select(Input(z.detach()));
        Assert.Equal([2L], sel.Classes!);
        var g = CheckedOps.Grad([target.Scores(Input(z), sel).sum()], [z])[0].view(-1).ToArray<double>();
        var e = new[] { 0.3, -1.2, 2.0, 0.7, 0.1 }.Select(Math.Exp).ToArray();
        for (int k = 0; k < 5; k++) Assert.Equal((k == 2 ? 1 : 0) - e[k] / e.Sum(), g[k], 1e-12);
        Assert.Equal("top-1 (log-softmax)", target.Describe());
    }

    [Fact]
    public void TopKWithSigmoidKeepsTheRankingAndScoresEachClassOnItsOwn()
    {
        using var scope = NewDisposeScope();
        var z = tensor(new float[] { 0.5f, 2.0f, -1.0f, 1.0f }).view(1, 4);
        var target = new TopKTargetFactory().Create(new TopKOptions { K = 2, Mode = ScoreMode.Sigmoid }, new TargetContext([], 4, []));
        Assert.Equal(2, target.Slots);
        var second = target.Select(Input(z), 1);
        Assert.Equal([3L], second.Classes!);
        Assert.Equal(1 / (1 + Math.Exp(-1.0)), target.Scores(Input(z), second).item<float>(), 1e-6);
    }

    [Theory]
    [InlineData(BinarySide.Positive, ScoreMode.Logit, new[] { 1.5, -0.5 })]
    [InlineData(BinarySide.Negative, ScoreMode.Logit, new[] { -1.5, 0.5 })]
    [InlineData(BinarySide.Predicted, ScoreMode.Logit, new[] { 1.5, 0.5 })]
    [InlineData(BinarySide.Negative, ScoreMode.Sigmoid, new[] { 0.18242552380635635, 0.6224593312018546 })]
    public void BinaryHeadScoresSignedLogitOrProbability(BinarySide side, ScoreMode mode, double[] expected)
    {
        using var scope = NewDisposeScope();
        var z = tensor(new[] { 1.5, -0.5 }, ScalarType.Float64).view(2, 1);
        var target = new BinaryTargetFactory().Create(new BinaryOptions { Class = side, Mode = mode }, new TargetContext([], 1, []));
        var sel = target.Select(Input(z));
        Assert.Equal(expected, target.Scores(Input(z), sel).ToArray<double>(), (a, b) => Math.Abs(a - b) < 1e-12);
        if (side == BinarySide.Predicted) Assert.Equal(["positive", "negative"], sel.Labels);
        Assert.Equal(mode == ScoreMode.Sigmoid, sel.ScoresProbability);
    }

    [Fact]
    public void A_selection_says_when_its_score_is_already_the_class_probability()
    {
        // Metrics that take the class probability read a softmax or sigmoid target's own score (a multi-label head's
        // σ(z_c)) instead of a softmax over the classes; copies of the rows keep the mark.
        using var scope = NewDisposeScope();
        var output = tensor(new[,] { { 1.5, -0.5, 0.25 } }, ScalarType.Float64);
        var ctx = new TargetContext(["a", "b", "c"], 3, []);
        foreach (var mode in Enum.GetValues<ScoreMode>())
        {
            var sel = new ClassTargetFactory().Create(new ClassTargetOptions { Class = "c", Mode = mode }, ctx).Select(Input(output));
            bool probability = mode is ScoreMode.Softmax or ScoreMode.Sigmoid;
            Assert.Equal(probability, sel.ScoresProbability);
            Assert.Equal(probability, sel.Repeat(0, 3).ScoresProbability);
            Assert.Equal(probability, new TopOneTargetFactory().Create(new ScoreOptions { Mode = mode }, ctx).Select(Input(output)).ScoresProbability);
        }
    }

    [Fact]
    public void OutputTargetIsOneValueOrAWeightedSum()
    {
        using var scope = NewDisposeScope();
        var y = tensor(new[] { 1.0, 2.0, 3.0, -1.0, 0.5, 4.0 }, ScalarType.Float64).view(2, 3);
        var ctx = new TargetContext([], 3, []);
        var one = new OutputTargetFactory().Create(new OutputOptions { Index = 2 }, ctx);
        Assert.Equal([3.0, 4.0], one.Scores(Input(y), one.Select(Input(y))).ToArray<double>());
        var sum = new OutputTargetFactory().Create(new OutputOptions { Weights = [0.5, -1, 2] }, ctx);
        Assert.Equal([0.5 - 2 + 6, -0.5 - 0.5 + 8], sum.Scores(Input(y), sum.Select(Input(y))).ToArray<double>());
    }

    [Fact]
    public void MisfitOptionsAreRefusedWithTheReason()
    {
        var ctx = new TargetContext([], 3, []);
        Assert.Contains("has 3 outputs, a binary head has one", Assert.Throws<LoupeException>(() => new BinaryTargetFactory().Create(new BinaryOptions(), ctx)).Message);
        Assert.Contains("not defined for one output", Assert.Throws<LoupeException>(() => new BinaryTargetFactory().Create(new BinaryOptions { Mode = ScoreMode.Softmax }, new TargetContext([], 1, []))).Message);
        Assert.Contains("exactly one of", Assert.Throws<LoupeException>(() => new OutputTargetFactory().Create(new OutputOptions(), ctx)).Message);
        Assert.Contains("out of range", Assert.Throws<LoupeException>(() => new OutputTargetFactory().Create(new OutputOptions { Index = 3 }, ctx)).Message);
        Assert.Contains("2 weights for 3 outputs", Assert.Throws<LoupeException>(() => new OutputTargetFactory().Create(new OutputOptions { Weights = [1, 2] }, ctx)).Message);
    }

    [Fact]
    public void SaliencyOfSoftmaxLogSoftmaxAndSigmoidTargetsMatchesPyTorch()
    {
        // Parsed from YAML (shorthand and full forms), run end to end on the demo CNN; references: make_target_fixtures.py.
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - id: soft
                uses: saliency
                target: { top-1: softmax }
              - id: logsoft
                uses: saliency
                target: { class: { class: 3, mode: log-softmax } }
              - id: sig
                uses: saliency
                target: { class: { class: 5, mode: sigmoid } }
            """, batchSize: 3));
        Assert.Equal(0, r.ExitCode);
        TechniqueTests.Close(TechniqueTests.Stack(r, "soft", "saliency"), "target_sal_softmax_top1.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "logsoft", "saliency"), "target_sal_logsoftmax_c3.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "sig", "saliency"), "target_sal_sigmoid_c5.npy", 1e-4);
    }
}
