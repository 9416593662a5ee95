using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using Loupe.Models.TorchSharp;
using Loupe.Testing;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary><see cref="Explain.CopiesPerForward"/>: copies per pass sized to ~<see cref="Explain.PassBytes"/> of
/// activations (at least <see cref="Explain.MinPassCopies"/>), never beyond the memory budget, and exactly what a step
/// asks for (<c>micro_batch</c>). The demo CNN at 28², 224² and 448² covers the three regimes.</summary>
public class PassSizeTests
{
    static IModel Fashion() => new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = "fashion-cnn" }, new ModelLoadContext(TestEnv.RepoRoot, 0));

    [Fact]
    public void PassesFillTheSpeedCapWithinTheBudget()
    {
        using var model = Fashion();
        using var small = zeros(2, 1, 28, 28);
        using var large = zeros(2, 1, 224, 224);
        using var huge = zeros(2, 1, 448, 448);
        var ctx = new TensorContext(model, small, 2);
        long per = Explain.BytesPerInput(model, small.shape);
        Assert.InRange(per, 200L << 10, 2L << 20);   // ~0.5 MB of activations per 28² input
        // 28²: the speed cap, far under the 1 GiB budget's ~1,900 copies.
        Assert.Equal(Explain.PassBytes / per, Explain.CopiesPerForward(ctx, small, null));
        Assert.InRange(Explain.CopiesPerForward(ctx, small, null), 60, 300);
        // With gradients (×3 per copy): a third as many.
        Assert.Equal(Explain.PassBytes / (3 * per), Explain.CopiesPerForward(ctx, small, null, gradients: true));
        // 224² (~36 MB a copy): the speed cap would give 1, the floor gives 8, which the budget holds.
        long perLarge = Explain.BytesPerInput(model, large.shape);
        Assert.True(Explain.PassBytes / perLarge < Explain.MinPassCopies && Explain.DefaultMemoryBudgetBytes / perLarge >= Explain.MinPassCopies);
        Assert.Equal(Explain.MinPassCopies, Explain.CopiesPerForward(ctx, large, null));
        // 448² (~140 MB a copy): the budget holds fewer than 8, and wins.
        long perHuge = Explain.BytesPerInput(model, huge.shape);
        Assert.True(Explain.DefaultMemoryBudgetBytes / perHuge < Explain.MinPassCopies);
        Assert.Equal(Explain.DefaultMemoryBudgetBytes / perHuge, Explain.CopiesPerForward(ctx, huge, null));
        // micro_batch is taken as given, above the cap or below it.
        Assert.Equal(1000, Explain.CopiesPerForward(ctx, small, 1000));
        Assert.Equal(3, Explain.CopiesPerForward(ctx, huge, 3));
    }
}
