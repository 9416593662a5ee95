using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

/// <summary>Tensor operations whose TorchSharp 0.107 binding lets a libtorch error escape as a C++ exception, which
/// terminates the process (`terminate called after throwing an instance of 'c10::Error'`) instead of throwing: here
/// their preconditions are checked first, so that a mismatch fails the step with a managed exception. The bindings
/// are banned in this repository (BannedSymbols.txt); use these instead.</summary>
public static class CheckedOps
{
    /// <summary><c>torch.matmul</c> (THSTensor_matmul is the one tensor binding without libtorch's error handling):
    /// the operands' shapes are checked against matmul's rules first (contracted sizes equal, batch sizes
    /// broadcastable); a mismatch throws <see cref="LoupeException"/> naming both shapes.</summary>
    public static Tensor MatMul(this Tensor a, Tensor b)
    {
        if (MatMulError(a.shape, b.shape) is { } error) throw new LoupeException(error);
#pragma warning disable RS0030 // the checked call itself
        return a.matmul(b);
#pragma warning restore RS0030
    }

    /// <summary>Why libtorch's matmul would refuse operands of these shapes, or null.</summary>
    public static string? MatMulError(long[] a, long[] b)
    {
        string Shapes() => $"({string.Join("×", a)}) and ({string.Join("×", b)})";
        if (a.Length == 0 || b.Length == 0) return $"cannot multiply scalars: {Shapes()}";
        long ka = a[^1], kb = b.Length == 1 ? b[0] : b[^2];
        if (ka != kb) return $"cannot multiply matrices of shapes {Shapes()}";
        var ba = a.Length > 2 ? a[..^2] : [];
        var bb = b.Length > 2 ? b[..^2] : [];
        for (int i = 1; i <= Math.Min(ba.Length, bb.Length); i++)
            if (ba[^i] != bb[^i] && ba[^i] != 1 && bb[^i] != 1) return $"batch dimensions do not broadcast: {Shapes()}";
        return null;
    }

    /// <summary><c>torch.autograd.grad</c> (THSAutograd_grad, like matmul, lets libtorch's errors end the process):
    /// what libtorch would refuse is checked first and thrown as <see cref="LoupeException"/> — an output that does not
    /// require grad (the score does not depend differentiably on anything: an argmax, integer, quantised or constant
    /// output), an input that does not require grad, grad_outputs that do not match the outputs, and (unless
    /// <paramref name="allowUnused"/>) an input the outputs do not depend on; libtorch then runs with unused inputs
    /// allowed, which it answers with an undefined tensor instead of an error.</summary>
    public static Tensor[] Grad(IList<Tensor> outputs, IList<Tensor> inputs, IList<Tensor>? gradOutputs = null,
        bool retainGraph = false, bool createGraph = false, bool allowUnused = false)
    {
        for (int i = 0; i < outputs.Count; i++)
            if (!outputs[i].requires_grad)
                throw new LoupeException($"cannot differentiate: the score has no gradient (it does not depend differentiably on the input — is the model's output an argmax, integers, quantised values or a constant?){(outputs.Count > 1 ? $" (output {i})" : "")}");
        for (int i = 0; i < inputs.Count; i++)
            if (!inputs[i].requires_grad)
                throw new LoupeException($"cannot differentiate with respect to a value that does not require grad (input {i} of {inputs.Count}, shape ({string.Join("×", inputs[i].shape)}))");
        if (gradOutputs is not null)
        {
            if (gradOutputs.Count != outputs.Count) throw new LoupeException($"cannot differentiate: {gradOutputs.Count} output gradients for {outputs.Count} outputs");
            for (int i = 0; i < outputs.Count; i++)
                if (!gradOutputs[i].shape.SequenceEqual(outputs[i].shape))
                    throw new LoupeException($"cannot differentiate: the output gradient ({string.Join("×", gradOutputs[i].shape)}) does not match the output ({string.Join("×", outputs[i].shape)})");
        }
#pragma warning disable RS0030 // the checked call itself
        var result = autograd.grad(outputs, inputs, gradOutputs, retainGraph, createGraph, allow_unused: true);
#pragma warning restore RS0030
        if (!allowUnused)
            for (int i = 0; i < result.Count; i++)
                if (result[i] is null || result[i].IsInvalid)
                    throw new LoupeException($"cannot differentiate: the score does not depend on the value differentiated by (input {i}, shape ({string.Join("×", inputs[i].shape)}))");
        return [.. result];
    }

    /// <summary><c>Tensor.Backward()</c> on a scalar loss, checked as <see cref="Grad"/> checks its outputs.</summary>
    public static void Backward(this Tensor loss)
    {
        if (!loss.requires_grad)
            throw new LoupeException("cannot differentiate: the objective has no gradient (it does not depend differentiably on what is optimised)");
#pragma warning disable RS0030 // the checked call itself
        loss.backward();
#pragma warning restore RS0030
    }
}
