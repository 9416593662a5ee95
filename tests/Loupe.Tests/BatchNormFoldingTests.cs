using Loupe.Abstractions;
using Loupe.Models.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Tests;

/// <summary>Batch norms folded into convolutions (<c>fold_batchnorm</c>, on by default in the torchvision backend):
/// the same numbers as PyTorch's unfolded model, the same layer names, captures and interventions.</summary>
public class BatchNormFoldingTests
{
    static readonly InputSpec Small = new(3, 64, 64, [0f, 0f, 0f], [1f, 1f, 1f]);

    /// <summary>resnet18 (10 classes) with the hash weights of tests/fixtures, set before the model is wrapped.</summary>
    internal static TorchModel HashResNet18(bool foldBatchNorm)
    {
        var module = TorchVisionAdapter.Build("resnet18", 10);
        ModelTests.SetHashWeights(module);
        return new TorchModel(module, Small, null, foldBatchNorm);
    }

    /// <summary>Two copies of an architecture with the same random weights and non-trivial batch-norm statistics.</summary>
    static (TorchModel Plain, TorchModel Folded) Pair(string arch, InputSpec spec, int classes = 10)
    {
        torch.manual_seed(3);
        var a = TorchVisionAdapter.Build(arch, classes);
        using (no_grad())
        {
            foreach (var (name, b) in a.named_buffers())
                if (name.EndsWith("running_var")) b.uniform_(0.5, 2);
                else if (name.EndsWith("running_mean")) b.normal_(0, 0.5);
        }
        var b2 = TorchVisionAdapter.Build(arch, classes);
        b2.load_state_dict(a.state_dict());
        return (new TorchModel(a, spec, null, false), new TorchModel(b2, spec, null, true));
    }

    static float[] Run(IModel m, Tensor x)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        return m.Forward(x).ToArray<float>();
    }

    [Fact]
    public void FoldedResNet18GivesThePyTorchLogits()
    {
        using var model = HashResNet18(true);
        Assert.Equal(20, model.FoldedBatchNorms); // stem, 16 in the blocks, 3 downsample Sequentials
        var expected = Npy.Read(TestEnv.Fixture("arch_logits_resnet18_hash.npy")).Data;
        var actual = ModelTests.Logits(model, "arch_input_64.npy");
        Assert.True(TestEnv.RelL2(actual, expected) < 1e-4, $"rel L2 {TestEnv.RelL2(actual, expected)}");
    }

    [Fact]
    public void TheDemoCnnLoadsFoldedAndGivesThePyTorchLogits()
    {
        using var model = (TorchModel)ModelTests.Load("fashion-cnn", TestEnv.Fixture("fashion_cnn_seed0.pt"));
        Assert.Equal(3, model.FoldedBatchNorms);
        var expected = Npy.Read(TestEnv.Fixture("fashion_logits.npy")).Data;
        Assert.True(TestEnv.RelL2(ModelTests.Logits(model, "fashion_input.npy"), expected) < 1e-5);
    }

    [Theory]
    [InlineData("resnet18", 20)]
    [InlineData("vgg11_bn", 8)]   // a Sequential of conv/bn/relu/pool: folded through a copy of the Sequential
    [InlineData("fashion-cnn", 3)]
    public void FoldingKeepsNamesParametersOutputsAndInputGradients(string arch, int pairs)
    {
        var spec = arch == "fashion-cnn" ? TorchVisionAdapter.FashionMnist : arch == "vgg11_bn" ? new InputSpec(3, 32, 32, [0f, 0f, 0f], [1f, 1f, 1f]) : Small;
        var (plain, folded) = Pair(arch, spec);
        using (plain)
        using (folded)
        {
            Assert.Equal(pairs, folded.FoldedBatchNorms);
            Assert.Equal(0, plain.FoldedBatchNorms);
            Assert.Equal(plain.Layers.Select(l => (l.Name, l.Kind)), folded.Layers.Select(l => (l.Name, l.Kind)));
            Assert.Equal(plain.ParameterNames, folded.ParameterNames);
            using var scope = NewDisposeScope();
            var x = randn([2, spec.Channels, spec.Height, spec.Width], generator: new Generator(5));
            var ya = Run(plain, x);
            var yb = Run(folded, x);
            Assert.True(TestEnv.RelL2(yb, ya) < 1e-5, $"logits rel L2 {TestEnv.RelL2(yb, ya):E2}");
            Assert.False(ya.SequenceEqual(yb), "the folded model ran the same operators (nothing was folded)");
            float[] Grad(IModel m)
            {
                var xi = x.detach().requires_grad_(true);
                var y = m.Forward(xi);
                return CheckedOps.Grad([y[.., 1].sum()], [xi])[0].ToArray<float>();
            }
            var ga = Grad(plain);
            var gb = Grad(folded);
            Assert.True(TestEnv.RelL2(gb, ga) < 1e-4, $"input gradient rel L2 {TestEnv.RelL2(gb, ga):E2}");
            // Reading the raw module undoes the fold for good (the caller may change weights through it).
            _ = folded.Module;
            Assert.Equal(0, folded.FoldedBatchNorms);
            Assert.Equal(ya, Run(folded, x));
        }
    }

    [Fact]
    public void CapturesOfFoldedLayersSeeWhatTheUnfoldedModelComputes()
    {
        var (plain, folded) = Pair("resnet18", Small);
        using (plain)
        using (folded)
        {
            string[] layers = ["conv1", "bn1", "layer1.0.conv1", "layer1.0.bn2", "layer2.0.downsample", "layer2.0.downsample.0", "layer2.0.downsample.1", "layer4"];
            using var scope = NewDisposeScope();
            var x = randn([1, 3, 64, 64], generator: new Generator(9));
            using (var ca = plain.Capture(layers, forGradients: false))
            using (var cb = folded.Capture(layers, forGradients: false))
            {
                // conv1, layer1.0.conv1 and layer2.0.downsample.0 need the convolution's own output: unfolded meanwhile.
                Assert.Equal(17, folded.FoldedBatchNorms);
                Run(plain, x);
                Run(folded, x);
                foreach (var l in layers)
                {
                    var err = TestEnv.RelL2(cb[l].ToArray<float>(), ca[l].ToArray<float>());
                    Assert.True(err < 1e-5, $"{l}: rel L2 {err:E2}");
                }
            }
            Assert.Equal(20, folded.FoldedBatchNorms);
            // Gradients at a batch norm's output (Grad-CAM style) through its placeholder.
            float[] GradAt(IModel m)
            {
                using var c = m.Capture(["layer3.1.bn2"], forGradients: true);
                var y = m.Forward(x);
                return CheckedOps.Grad([y[.., 2].sum()], [c["layer3.1.bn2"]])[0].ToArray<float>();
            }
            Assert.True(TestEnv.RelL2(GradAt(folded), GradAt(plain)) < 1e-5);
        }
    }

    [Fact]
    public void InterventionsOnFoldedLayersAndChangedParametersBehaveAsUnfolded()
    {
        var (plain, folded) = Pair("resnet18", Small);
        using (plain)
        using (folded)
        {
            using var scope = NewDisposeScope();
            var x = randn([1, 3, 64, 64], generator: new Generator(11));
            Tensor ZeroFirstChannel(Tensor t) { var o = t.clone(); o[.., 0] = 0; return o; }
            foreach (var layer in new[] { "layer1.1.conv2", "layer1.1.bn2", "layer3.0.downsample" })
            {
                float[] ya, yb;
                using (plain.Intervene(layer, ZeroFirstChannel)) ya = Run(plain, x);
                using (folded.Intervene(layer, ZeroFirstChannel)) yb = Run(folded, x);
                Assert.True(TestEnv.RelL2(yb, ya) < 1e-5, $"{layer}: rel L2 {TestEnv.RelL2(yb, ya):E2}");
                Assert.True(TestEnv.RelL2(ya, Run(plain, x)) > 1e-4, $"{layer}: the intervention changed nothing");
            }
            Assert.Equal(20, folded.FoldedBatchNorms);
            // A parameter handed out may be changed (sanity randomisation does): its pair runs unfolded from then on.
            foreach (var m in new[] { plain, folded })
                using (no_grad()) m.GetParameter("layer2.1.bn1.running_var")!.mul_(4);
            Assert.Equal(19, folded.FoldedBatchNorms);
            var after = Run(folded, x);
            Assert.True(TestEnv.RelL2(after, Run(plain, x)) < 1e-5);
        }
    }
}
