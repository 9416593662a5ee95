using Loupe.Abstractions;
using Loupe.Analysis.Synthesis;

namespace Loupe.Synthesis.Tests;

public class ParserTests
{
    [Theory]
    [InlineData("class:sneaker", "class:sneaker")]
    [InlineData("class:7", "class:7")]
    [InlineData("class:'ankle boot'", "class:'ankle boot'")]
    [InlineData("relu3:12", "relu3:12")]
    [InlineData("layer4.1.conv2:5:3:4", "layer4.1.conv2:5:3:4")]
    [InlineData("relu3", "relu3")]
    [InlineData("relu3:12 - 0.5 * relu3:7", "(relu3:12 - (0.5 * relu3:7))")]      // * binds tighter than -
    [InlineData("a:1 + a:2 * a:3", "(a:1 + (a:2 * a:3))")]
    [InlineData("(a:1 + a:2) * 3", "((a:1 + a:2) * 3)")]
    [InlineData("a:1 - a:2 - a:3", "((a:1 - a:2) - a:3)")]                    // left-associative
    [InlineData("-a:1 + 2", "(-a:1 + 2)")]                                     // unary minus binds tightest
    [InlineData("- -a:1", "--a:1")]
    [InlineData("2 * -a:1", "(2 * -a:1)")]
    [InlineData("a:1 / 4", "(a:1 / 4)")]
    [InlineData("1e-1*a:1", "(0.1 * a:1)")]
    [InlineData("'Conv:0':3", "'Conv:0':3")]
    [InlineData("relu3:12:center", "relu3:12:center")]
    [InlineData("relu3:12 : centre + 1", "(relu3:12:center + 1)")]
    public void ParsesWithPrecedence(string text, string canonical) => Assert.Equal(canonical, ObjectiveParser.Parse(text).ToString());

    [Theory]
    [InlineData("relu3:12 - * 2", 11, "expected a term")]
    [InlineData("", 0, "expected an objective")]
    [InlineData("relu3:", 6, "expected a channel index")]
    [InlineData("relu3:x", 6, "expected a channel index")]
    [InlineData("relu3:1:2", 9, "neuron column")]
    [InlineData("(a:1 + a:2", 10, "expected ')'")]
    [InlineData("a:1 a:2", 4, "unexpected 'a'")]
    [InlineData("class:", 6, "expected a class index or name")]
    [InlineData("a:1 + 'unterminated", 6, "unterminated")]
    [InlineData("a:1 $", 4, "unexpected '$'")]
    public void ReportsPositions(string text, int position, string expected)
    {
        var e = Assert.Throws<ObjectiveSyntaxException>(() => ObjectiveParser.Parse(text));
        Assert.Equal(position, e.Position);
        Assert.Contains(expected, e.Message);
        Assert.Contains($"at position {position}", e.Message);
        Assert.Contains($"'{text}'", e.Message);
    }

    [Fact]
    public void MessageMatchesTheDocumentedForm()
    {
        var e = Assert.Throws<ObjectiveSyntaxException>(() => ObjectiveParser.Parse("relu3:12 - * 2"));
        Assert.StartsWith("objective 'relu3:12 - * 2' — expected a term", e.Message);
        Assert.EndsWith("at position 11", e.Message);
    }

    [Fact]
    public void ResolvesClassNamesAgainstLabels()
    {
        string[] labels = ["t-shirt", "trouser", "ankle-boot"];
        var o = ObjectiveBinder.ResolveClasses(ObjectiveParser.Parse("class:'Ankle boot' - class:trouser"), labels);
        Assert.Equal("(class:2 - class:1)", o.ToString());
        var e = Assert.Throws<Loupe.Abstractions.LoupeException>(() => ObjectiveBinder.ResolveClasses(ObjectiveParser.Parse("class:trousers"), labels));
        Assert.Contains("did you mean", e.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void EvaluatesWeightedSums()
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        var act = TorchSharp.torch.arange(2 * 3 * 2 * 2, dtype: TorchSharp.torch.ScalarType.Float32).view(2, 3, 2, 2);
        var input = new ObjectiveInput(TorchSharp.torch.zeros(2, 10), _ => act);
        var v = ObjectiveParser.Parse("L:2 - 0.5 * L:0 + L:1:1:0").Evaluate(input).ToArray<float>();
        // row 0: ch2 mean = 9.5, ch0 mean = 1.5, ch1[1,0] = 6  → 9.5 − 0.75 + 6
        Assert.Equal(9.5f - 0.75f + 6f, v[0], 1e-5);
        Assert.Equal(21.5f - 0.5f * 13.5f + 18f, v[1], 1e-5);
    }

    /// <summary>Lucent's neuron(layer, n) without x, y: the neuron at (h // 2, w // 2) — the centre of an odd side, the
    /// bottom-right of the central 2×2 of an even one.</summary>
    [Theory]
    [InlineData(5, 5, 2, 2)]
    [InlineData(4, 6, 2, 3)]
    public void TheCentreNeuronIsLucentsDefault(int h, int w, int y, int x)
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        var act = TorchSharp.torch.randn(2, 3, h, w);
        var input = new ObjectiveInput(TorchSharp.torch.zeros(2, 10), _ => act);
        Assert.Equal(ObjectiveParser.Parse($"L:1:{y}:{x}").Evaluate(input).ToArray<float>(), ObjectiveParser.Parse("L:1:center").Evaluate(input).ToArray<float>());
        var flat = new ObjectiveInput(TorchSharp.torch.zeros(2, 10), _ => TorchSharp.torch.randn(2, 3));
        Assert.Throws<Loupe.Abstractions.LoupeException>(() => ObjectiveParser.Parse("L:1:center").Evaluate(flat));
    }
}
