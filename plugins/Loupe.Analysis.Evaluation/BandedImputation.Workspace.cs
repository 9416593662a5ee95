using System.Runtime.InteropServices;

namespace Loupe.Analysis.Evaluation;

public static partial class BandedImputation
{
    /// <summary>One thread's arrays, grown to the largest system seen and reused: a 28×28 image at 90 % unknown has
    /// ~22,000 factor entries (180 KB, a large-object-heap allocation per call otherwise).</summary>
    sealed class Workspace
    {
        [ThreadStatic] static Workspace? _current;
        public int[] Index = [], Pixel = [], Cell = [], Last = [], Order = [], Root = [], Slot = [];
        public int Stride;   // the padded grid's row length, W + 2
        public (int Count, int H, int W) Ordered;   // what the last Shape left in Order
        public double[] Rhs = [], Inverse = [], Known = [], Degree = [];
        int _h, _w;
        double[] _entries = [];

        /// <summary>This thread's workspace with its component-order arrays of at least <paramref name="hw"/>
        /// entries (<see cref="Shape"/>; nothing else set).</summary>
        public static Workspace Ordering(int hw)
        {
            var ws = _current ??= new Workspace();
            ws.EnsureOrdering(hw);
            return ws;
        }

        void EnsureOrdering(int hw)
        {
            if (Order.Length < hw) (Order, Root, Slot) = (new int[hw], new int[hw], new int[hw]);
        }

        /// <summary>This thread's workspace for H×W images of C channels; the padded grid's border set.</summary>
        public static Workspace For(int h, int w, int c)
        {
            var ws = _current ??= new Workspace();
            int hw = h * w, padded = (h + 2) * (w + 2);
            if (ws.Index.Length < padded) ws.Index = new int[padded];
            if (ws.Known.Length < c * padded) ws.Known = new double[c * padded];
            if (ws.Pixel.Length < hw) (ws.Pixel, ws.Cell, ws.Last, ws.Inverse) = (new int[hw], new int[hw], new int[hw], new double[hw]);
            if (w + 1 > 40) ws.EnsureOrdering(hw);
            ws.Stride = w + 2;
            if (ws.Rhs.Length < c * hw + Pad + 1) ws.Rhs = new double[c * hw + Pad + 1];
            if ((ws._h, ws._w) != (h, w))
            {
                ws.Degree = Degrees(h, w);
                (ws._h, ws._w) = (h, w);
            }
            ws.Index.AsSpan(0, padded).Fill(-1);
            ws.Known.AsSpan(0, c * padded).Clear();
            return ws;
        }

        /// <summary>Factor storage a thread keeps between systems (8 MB): ROAD's 28×28 systems need ~25,000 entries. A
        /// larger system (a 224×224 mask: up to 11.7 M entries) gets native memory of its own, freed as soon as it is
        /// solved: no thread holds tens of megabytes for good, and ROAD's dozens of such systems per batch neither
        /// churn the large-object heap (72 gen-2 collections in 8 ImageNet-size imputations when they were arrays) nor
        /// fragment it.</summary>
        const int RetainedEntries = 1 << 20;

        /// <summary>The factor's storage, zeroed: this thread's array, or native memory (<paramref name="native"/> ≠ 0,
        /// released by <see cref="Free"/>; calloc's pages are zero as they are touched) for systems above
        /// <see cref="RetainedEntries"/>.</summary>
        public unsafe Span<double> Entries(int count, out nint native)
        {
            native = 0;
            if (count > RetainedEntries)
            {
                native = (nint)NativeMemory.AllocZeroed((nuint)count, sizeof(double));
                return new Span<double>((void*)native, count);
            }
            if (_entries.Length < count) _entries = new double[Math.Min(RetainedEntries, Math.Max(count, 2 * _entries.Length))];
            else Array.Clear(_entries, 0, count);
            return _entries.AsSpan(0, count);
        }

        /// <summary>Releases storage <see cref="Entries"/> took from native memory.</summary>
        public static unsafe void Free(nint native) => NativeMemory.Free((void*)native);
    }

    /// <summary>Each cell's diagonal on the padded grid ((H + 2)×(W + 2)): the sum of its in-image neighbours' weights
    /// (1/6 direct, 1/12 diagonal).</summary>
    internal static double[] Degrees(int h, int w)
    {
        var degree = new double[(h + 2) * (w + 2)];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                double vertical = (y > 0 ? 1 : 0) + (y < h - 1 ? 1 : 0), horizontal = (x > 0 ? 1 : 0) + (x < w - 1 ? 1 : 0);
                degree[(y + 1) * (w + 2) + x + 1] = (vertical + horizontal) / 6 + vertical * horizontal / 12;
            }
        return degree;
    }

    /// <summary>The stencil's weights, 1/6 for a direct neighbour and 1/12 for a diagonal one, multiplied rather than
    /// divided by in the right-hand sides (a division per channel, unknown and kind was ~3 % of a 224×224 solve; the
    /// reference solves multiply by the weights too).</summary>
    internal const double Direct = 1.0 / 6, Diagonal = 1.0 / 12;

    /// <summary>Zeros after each column's widest extent: a four-column block's reach (3) and a whole 8-wide vector's
    /// (7), and one to spare (the same for 4-wide vectors: the storage does not depend on the width).</summary>
    const int Pad = 11;
}
