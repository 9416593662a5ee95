using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

/// <summary>Base of a custom autograd function, Loupe's own and a plugin's. libtorch calls <c>backward</c> from inside its
/// autograd engine, where nothing can unwind: a managed exception there, a libtorch error in an operation it runs, or
/// gradients of the wrong number or shape (which libtorch rejects after it returns) terminate the process and lose the
/// whole run. Here <see cref="Backward"/> runs guarded: when it throws or returns gradients libtorch would reject, the
/// error is kept (<see cref="BackwardErrors"/>) and the engine gets zeros of each tensor input's shape, so it finishes;
/// the step then fails with that error — the host checks when a step's body returns and between batches, the toolkit's
/// gradient helpers right after their backward pass. A plugin that calls <c>autograd.grad</c> itself may call
/// <see cref="BackwardErrors.ThrowIfAny"/> after it to fail sooner.</summary>
/// <typeparam name="T">The function itself (TorchSharp's pattern).</typeparam>
public abstract class GuardedFunction<T> : autograd.SingleTensorFunction<T> where T : GuardedFunction<T>, new()
{
    const string InputsKey = "loupe.guarded.inputs";

    /// <summary>The forward, as TorchSharp's <c>forward</c>.</summary>
    protected abstract Tensor Forward(autograd.AutogradContext ctx, object[] vars);

    /// <summary>The backward, as TorchSharp's <c>backward</c>: one entry per argument of <see cref="Forward"/> (null for
    /// arguments that are not tensors or take no gradient), each of its argument's shape.</summary>
    protected abstract List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad);

    /// <inheritdoc/>
    public sealed override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        ctx.save_data(InputsKey, Array.ConvertAll(vars, v => v is Tensor t ? new InputInfo(t.shape, t.dtype, t.device) : null));
        return Forward(ctx, vars);
    }

    /// <inheritdoc/>
    public sealed override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        var inputs = (InputInfo?[])ctx.get_data(InputsKey);
        try
        {
            var result = Backward(ctx, grad);
            if (Rejected(inputs, result) is { } why) throw new LoupeException(why);
            return result;
        }
        catch (Exception e)
        {
            BackwardErrors.Record(new LoupeException($"the backward pass of {Name} failed: {e.Message}", e));
            return Zeros(inputs);
        }
    }

    /// <summary>Zeros of each tensor input's shape; where even those cannot be made (no memory left), no gradient at all
    /// (null entries, which libtorch reads as undefined gradients) — nothing may leave <c>backward</c>.</summary>
    internal static List<Tensor> Zeros(InputInfo?[] inputs)
    {
        try
        {
            using var _ = no_grad();
            return [.. inputs.Select(i => i is null ? null! : zeros(i.Shape, i.Type, i.Device))];
        }
        catch (Exception) { return [.. inputs.Select(_ => (Tensor)null!)]; }
    }

    /// <summary>Why libtorch would reject these gradients (validate_outputs: one per argument; each tensor's shape must
    /// expand from its input's, i.e. sum back to it; the same device), or null.</summary>
    static string? Rejected(InputInfo?[] inputs, List<Tensor>? result)
    {
        if (result is null || result.Count != inputs.Length)
            return $"it returned {result?.Count ?? 0} gradient(s) for {inputs.Length} argument(s)";
        for (int i = 0; i < inputs.Length; i++)
        {
            if (inputs[i] is not { } input || result[i] is not { } g || g.IsInvalid) continue;
            if (!ExpandsTo(input.Shape, g.shape))
                return $"its gradient {i} has shape [{string.Join(", ", g.shape)}], which does not reduce to its input's [{string.Join(", ", input.Shape)}]";
            if (g.device_type != input.Device.type)
                return $"its gradient {i} is on {g.device_type}, its input on {input.Device.type}";
        }
        return null;
    }

    /// <summary>Whether <paramref name="shape"/> broadcasts to <paramref name="target"/> (libtorch's is_expandable_to).</summary>
    internal static bool ExpandsTo(long[] shape, long[] target)
    {
        if (shape.Length > target.Length) return false;
        for (int i = 1; i <= shape.Length; i++)
        {
            long s = shape[^i], t = target[^i];
            if (s != t && s != 1) return false;
        }
        return true;
    }

    internal sealed record InputInfo(long[] Shape, ScalarType Type, Device Device);
}

/// <summary>Errors kept from guarded backward passes (<see cref="GuardedFunction{T}"/>) of the current thread (libtorch
/// runs a CPU graph's backward on the thread that asked for it); the first one of a pass wins.</summary>
public static class BackwardErrors
{
    [ThreadStatic] static Exception? t_pending;

    /// <summary>Keeps <paramref name="error"/> unless an earlier one is pending.</summary>
    public static void Record(Exception error) => t_pending ??= error;

    /// <summary>The pending error, now cleared; null when there is none.</summary>
    public static Exception? Take()
    {
        var e = t_pending;
        t_pending = null;
        return e;
    }

    /// <summary>Throws the pending error (cleared) when there is one: after a backward pass whose gradients are used.</summary>
    public static void ThrowIfAny()
    {
        if (Take() is { } e) throw e;
    }
}
