namespace Loupe.Models.Onnx;

public static partial class OrtGuard
{
    /// <summary>Most work ONNX Runtime's cubic Resize may do for one image, in units of one output value (~0.26 µs):
    /// 40 M, ~10 s on the 2-core EPYC VM (a 64-channel feature map doubled to 448×448: 12.8 M values and 6.5 M cached
    /// interpolations, 32 M units, passes). Its CPU kernel finds each output value's four horizontal interpolations in
    /// hash tables (~0.26 µs per value: 3×8×8 to 3×1,310,720×12 per channel took 24.7 s for two images) and keeps, per
    /// channel, a table per distinct fractional offset along the width with one heap node per (input row, column) an
    /// output column reads (~0.8 µs each, three units: 3×8×8 to 3×3×524,293 cached 34.6 M for two images, 30 s). Both
    /// found by tools/Loupe.Fuzz's onnx-runtime target; libtorch's cubic interpolation (the <c>onnx</c> backend) takes
    /// under 2 s for either.</summary>
    public const long MaxCubicWork = 40L << 20;

    /// <summary>Bytes of the memory budget one unit of cubic work stands for when a batch is split into chunks
    /// (<see cref="Peak"/>): a chunk holds as many images as keep its cubic Resizes within <see cref="MaxCubicWork"/>.</summary>
    const long BytesPerCubicWork = OnnxNode.MaxOutputBytes / MaxCubicWork;

    /// <summary>The interpolations ONNX Runtime's cubic Resize caches over <paramref name="output"/> from
    /// <paramref name="input"/> (0 for other nodes, or when a shape is unknown): each leading (batch, channel) slice
    /// caches at most one per output column and input row it reads (input height + 3, the kernel's four taps clamped
    /// at the edges) and at most four per output element.</summary>
    static long CubicEntries(OnnxNode n, V? input, V? output)
    {
        if (n.OpType != "Resize" || n.Domain is not ("" or "ai.onnx") || n.String("mode", "nearest") != "cubic") return 0;
        if (input is not { Shape.Length: >= 2 } i || output is not { Shape.Length: >= 2 } o || i.Shape.Length != o.Shape.Length) return 0;
        double slices = 1;
        for (int k = 0; k < o.Shape.Length - 2; k++) slices *= Math.Max(o.Shape[k], 0);
        double oh = Math.Max(o.Shape[^2], 0), ow = Math.Max(o.Shape[^1], 0), ih = Math.Max(i.Shape[^2], 0);
        return (long)Math.Min(slices * Math.Min(ow * (ih + 3), 4 * ow * oh), long.MaxValue / 2);
    }

    /// <summary>Throws when one image's cubic Resize would do more than <see cref="MaxCubicWork"/>, or an
    /// antialiased Resize would hold more than the budget (<see cref="AntialiasBytes"/>); returns the share of the
    /// budget the node's kernel takes beyond its output (for <see cref="Peak"/>).</summary>
    static long CheckResize(OnnxNode n, V? input, V? output)
    {
        long antialias = AntialiasBytes(n, input, output);
        if (antialias > OnnxNode.MaxOutputBytes)
            throw n.Error($"ONNX Runtime's antialiased Resize of ({string.Join("×", input!.Shape)}) to ({string.Join("×", output!.Shape)}) would hold {antialias >> 20} MB for one image (its output {Copies(n)} times over and the image resized along one axis first), over the memory budget of {OnnxNode.MaxOutputBytes >> 20} MB");
        long entries = CubicEntries(n, input, output);
        if (entries == 0) return antialias;
        double values = output!.Shape.Aggregate(1.0, (p, d) => p * Math.Max(d, 0));
        if (values * 4 * Copies(n) > OnnxNode.MaxOutputBytes) return 0;   // over the memory budget: CheckOutput says so
        long work = (long)Math.Min(values + 3.0 * entries, long.MaxValue / 2);
        if (work > MaxCubicWork)
            throw n.Error($"ONNX Runtime's cubic Resize of ({string.Join("×", input!.Shape)}) to ({string.Join("×", output.Shape)}) would take ~{work * 0.26e-6:0} s for one image ({values / 1e6:0.#} M output values, each found through hash tables, and {entries:N0} cached one-dimensional interpolations, a heap node each), over the ~10 s it may take; the onnx backend (uses: onnx) computes cubic resizes directly");
        return Math.Max(antialias, work * BytesPerCubicWork);
    }

    /// <summary>The bytes ONNX Runtime's antialiased Resize (opset 18 <c>antialias</c> 1, linear or cubic) holds for
    /// <paramref name="output"/> from <paramref name="input"/> (0 for other nodes, or when a shape is unknown): its
    /// output as every Resize (<see cref="Copies"/>) and the image resized along one of the two axes first — an
    /// intermediate as large as the larger of output height × input width and input height × output width per channel
    /// (found by tools/Loupe.Fuzz's onnx-runtime target: 3×8×8 to 3×4,194,307×5, an output of 252 MB, took 8.5 s and
    /// grew the process by 1.7 GB).</summary>
    static long AntialiasBytes(OnnxNode n, V? input, V? output)
    {
        if (n.OpType != "Resize" || n.Domain is not ("" or "ai.onnx") || n.Int("antialias", 0) == 0 || n.String("mode", "nearest") == "nearest") return 0;
        if (input is not { Shape.Length: >= 2 } i || output is not { Shape.Length: >= 2 } o || i.Shape.Length != o.Shape.Length) return 0;
        double slices = 1, size = 1;
        for (int k = 0; k < o.Shape.Length - 2; k++) slices *= Math.Max(o.Shape[k], 0);
        foreach (var d in o.Shape) size *= Math.Max(d, 0);
        double oh = Math.Max(o.Shape[^2], 0), ow = Math.Max(o.Shape[^1], 0), ih = Math.Max(i.Shape[^2], 0), iw = Math.Max(i.Shape[^1], 0);
        return (long)Math.Min(4 * (Copies(n) * size + slices * Math.Max(oh * iw, ih * ow)), long.MaxValue / 2);
    }
}
