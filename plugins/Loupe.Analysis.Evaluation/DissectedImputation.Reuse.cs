namespace Loupe.Analysis.Evaluation;

public static partial class DissectedImputation
{
    /// <summary>Most factor entries (<see cref="Entries"/>) of an image size whose all-unknown fronts are kept: 4 M, a
    /// 224×224 image's 3.3 M (its factor and updates together ~50 MB, once per process).</summary>
    const long FullEntries = 4L << 20;

    /// <summary>The all-unknown system's fronts for one image size, every node but the root: each node's factor columns
    /// (as <see cref="Solve"/> keeps them) and its update (packed). A node whose box and one-pixel ring hold no known
    /// pixel has exactly these in any system — its front is built from A's entries among those pixels (the same for
    /// every mask that leaves them all unknown) and from its children's updates (whose boxes and rings lie inside
    /// its own) — so a solve takes them instead of factoring such subtrees. ROAD's masks from smooth maps (Grad-CAM,
    /// occlusion, superpixels) leave large blobs wholly unknown; masks from input gradients, speckled, rarely do, and
    /// never build these.</summary>
    sealed class FullFronts
    {
        static FullFronts? _last;   // one image size at a time, shared by the threads (read-only once published)
        static readonly Lock Gate = new();

        public readonly int H, W;
        public double[] Factor = [], Updates = [];
        public readonly long[] FactorAt, UpdateAt;
        double[] _updates = new double[1 << 16];
        long _top;

        FullFronts(int h, int w, int nodes)
        {
            (H, W) = (h, w);
            FactorAt = new long[nodes];
            UpdateAt = new long[nodes];
        }

        /// <summary>Marks the nodes of this mask whose box and ring are all unknown (<c>ws.Full</c>) and returns the
        /// all-unknown fronts to take theirs from: null when no node is so, or when they are not kept for this size,
        /// or when they would have to be built for fewer than an eighth of the unknowns.</summary>
        public static FullFronts? For(Workspace ws, ReadOnlySpan<bool> unknown, int h, int w, int n)
        {
            if (ws.Bound > FullEntries) return null;
            var sums = ws.KnownSums;
            int w1 = w + 1;
            for (int y = 0; y < h; y++)
            {
                int row = 0;
                for (int x = 0; x < w; x++)
                {
                    row += unknown[y * w + x] ? 0 : 1;
                    sums[(y + 1) * w1 + x + 1] = sums[y * w1 + x + 1] + row;
                }
            }
            long covered = 0;
            var boxes = ws.Tree.Boxes;
            for (int node = 0; node < boxes.Length; node++)
            {
                ref readonly var box = ref boxes[node];
                int r0 = Math.Max(box.R0 - 1, 0), r1 = Math.Min(box.R1 + 1, h), c0 = Math.Max(box.C0 - 1, 0), c1 = Math.Min(box.C1 + 1, w);
                bool full = node < boxes.Length - 1
                    && sums[r1 * w1 + c1] - sums[r0 * w1 + c1] - sums[r1 * w1 + c0] + sums[r0 * w1 + c0] == 0;
                ws.Full[node] = full;
                if (full) covered += box.Count;
            }
            if (covered == 0) return null;
            lock (Gate)
            {
                if (_last is { } kept && kept.H == h && kept.W == w) return kept;
                if (covered * 8 < n) return null;
                var built = new FullFronts(h, w, boxes.Length);
                var all = new bool[h * w];
                Array.Fill(all, true);
                Core(new double[h * w], all, 1, h, w, built);
                _last = built;
                return built;
            }
        }

        /// <summary>Records a node of the all-unknown factorisation: where its columns lie in the factor's storage,
        /// and its update.</summary>
        public void Keep(int node, long factorAt, ReadOnlySpan<double> update)
        {
            FactorAt[node] = factorAt;
            UpdateAt[node] = _top;
            if (_updates.Length < _top + update.Length) Array.Resize(ref _updates, (int)Math.Max(2L * _updates.Length, _top + update.Length));
            update.CopyTo(_updates.AsSpan((int)_top));
            _top += update.Length;
        }

        /// <summary>Keeps the factor's storage and the updates, pinned (their addresses are taken without
        /// <c>fixed</c> costs mattering).</summary>
        public void Finish(ReadOnlySpan<double> factor)
        {
            Factor = GC.AllocateUninitializedArray<double>(factor.Length + FrontKernels.Pad, pinned: true);
            factor.CopyTo(Factor);
            Updates = GC.AllocateUninitializedArray<double>((int)_top, pinned: true);
            _updates.AsSpan(0, (int)_top).CopyTo(Updates);
            _updates = [];
        }
    }
}
