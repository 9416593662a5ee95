using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>Custom autograd functions whose backward fails: libtorch terminates the process when an exception or one of
/// its own errors leaves a backward callback, or when the gradients it gets back have the wrong number or shape (each
/// case below did, before <see cref="GuardedFunction{T}"/>). Guarded, the engine gets zeros and the error waits in
/// <see cref="BackwardErrors"/>.</summary>
public class GuardedFunctionTests
{
    public enum Fault { None, Managed, Libtorch, Shape, Count, Broadcast }

    /// <summary>Identity forward; the backward does <see cref="Mode"/>.</summary>
    sealed class Faulty : GuardedFunction<Faulty>
    {
        [ThreadStatic] public static Fault Mode;
        public override string Name => "TestFaulty";
        protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars) => ((Tensor)vars[0]).alias();
        protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad) => Mode switch
        {
            Fault.Managed => throw new InvalidOperationException("managed failure"),
            Fault.Libtorch => [grad.mm(ones(7, 7))],                     // mat1 and mat2 shapes cannot be multiplied
            Fault.Shape => [grad.reshape(2, -1)],                        // 12 values, the wrong shape
            Fault.Count => [grad, grad],                                 // one argument, two gradients
            Fault.Broadcast => [grad.unsqueeze(0).expand(2, -1, -1) * 1],   // libtorch sums it back to [4, 3]
            _ => [grad * 3],
        };
    }

    static (Tensor Gradient, Exception? Error) Run(Fault mode)
    {
        Faulty.Mode = mode;
        BackwardErrors.Take();
        var x = arange(12, dtype: ScalarType.Float32).view(4, 3).requires_grad_(true);
        var y = (Faulty.apply(x) * x).sum();
        var g = CheckedOps.Grad([y], [x])[0];
        return (g, BackwardErrors.Take());
    }

    [Theory]
    [InlineData(Fault.Managed, "managed failure")]
    [InlineData(Fault.Libtorch, "cannot be multiplied")]
    [InlineData(Fault.Shape, "shape [2, 6], which does not reduce to its input's [4, 3]")]
    [InlineData(Fault.Count, "returned 2 gradient(s) for 1 argument(s)")]
    public void AFailingBackwardGivesZerosAndKeepsItsErrorInsteadOfEndingTheProcess(Fault mode, string cause)
    {
        var (g, error) = Run(mode);
        // d/dx (f(x)·x) = f'(x)·x + f(x): with f's gradient replaced by zeros only the second path is left.
        Assert.Equal(arange(12, dtype: ScalarType.Float32).view(4, 3).data<float>().ToArray(), g.data<float>().ToArray());
        Assert.NotNull(error);
        Assert.StartsWith("the backward pass of TestFaulty failed: ", error!.Message);
        Assert.Contains(cause, error.Message);
        Assert.Null(BackwardErrors.Take());
    }

    [Theory]
    [InlineData(Fault.None, 3f)]
    [InlineData(Fault.Broadcast, 2f)]
    public void AWorkingBackwardIsUntouched(Fault mode, float factor)
    {
        var (g, error) = Run(mode);
        Assert.Null(error);
        var x = arange(12, dtype: ScalarType.Float32);
        Assert.Equal((x * factor + x).data<float>().ToArray(), g.view(-1).data<float>().ToArray());
    }

    [Fact]
    public void TheToolkitsGradientThrowsTheKeptError()
    {
        Faulty.Mode = Fault.Managed;
        BackwardErrors.Take();
        var x = ones(2, 3).requires_grad_(true);
        var y = Faulty.apply(x);
        var input = new TargetInput(y, _ => throw new InvalidOperationException());
        var e = Assert.Throws<LoupeException>(() => Explain.Gradient(new SumTarget(), input, new TargetSelection([0, 0], ["a", "a"]), x));
        Assert.Contains("the backward pass of TestFaulty failed: managed failure", e.Message);
        Assert.Null(BackwardErrors.Take());
    }

    sealed class SumTarget : ITarget
    {
        public IReadOnlyCollection<string> RequiredLayers => [];
        public TargetSelection Select(TargetInput original) => throw new NotSupportedException();
        public Tensor Scores(TargetInput input, TargetSelection selection) => input.Output.sum(1);
        public string Describe() => "sum";
    }

    /// <summary>When not even the zeros can be allocated, the engine gets no gradient (nulls) rather than an exception.</summary>
    [Fact]
    public void WithoutMemoryForTheZerosTheEngineGetsNoGradient()
    {
        var ok = GuardedFunction<Faulty>.Zeros([new([2, 3], ScalarType.Float32, CPU), null]);
        Assert.Equal([2L, 3], ok[0].shape);
        Assert.Null(ok[1]);
        var none = GuardedFunction<Faulty>.Zeros([new([1L << 25, 1L << 25], ScalarType.Float32, CPU), null]);   // 4 PiB
        Assert.All(none, Assert.Null);
    }

    [Fact]
    public void ExpandsToIsLibtorchsRule()
    {
        Assert.True(GuardedFunction<Faulty>.ExpandsTo([4, 3], [2, 4, 3]));
        Assert.True(GuardedFunction<Faulty>.ExpandsTo([1, 3], [4, 3]));
        Assert.True(GuardedFunction<Faulty>.ExpandsTo([], [4, 3]));
        Assert.False(GuardedFunction<Faulty>.ExpandsTo([4, 3], [3]));
        Assert.False(GuardedFunction<Faulty>.ExpandsTo([2, 3], [4, 3]));
    }
}
