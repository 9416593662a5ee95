namespace Loupe.Analysis.Evaluation;

public static partial class DissectedImputation
{
    /// <summary>One thread's arrays and the dissection of the last image size it solved, grown to the largest system
    /// seen and kept (a full 224×224 mask: ~3 M factor entries, 27 MB). Per thread, not per process: a run over images
    /// of many sizes keeps one dissection per thread, not one per size.</summary>
    sealed class Workspace
    {
        [ThreadStatic] static Workspace? _current;
        public ImageDissection Tree = null!;
        public int[] Position = [], Lists = new int[1024], Places = new int[1024], Index = [], NodeStart = [], Map = [];
        public long[] NodeFactor = [];
        public (int Start, int K, int M)[] NodeList = [];
        public (int Offset, int Size, int ListAt, bool Cached)[] Updates = new (int, int, int, bool)[64];
        public double[] Y = [], Degree = [], Factor = [], Stack = [], Gather = [], Known = [], KnownLanes = [];
        public double[] Inverse = [];   // 1 / the factor's diagonal, in elimination order
        public bool[] Interior = [];   // pixels with all eight neighbours in the image
        public bool[] Full = [], Reused = [];   // per node: its box and ring all unknown; its front taken from FullFronts
        public int[] KnownSums = [];   // (H + 1)×(W + 1) prefix sums of the known pixels
        public long Bound;   // Entries(H, W)
        public bool Dirty;
        int _h = -1, _w = -1;

        public static Workspace For(int h, int w, int c, int n)
        {
            var ws = _current ??= new Workspace();
            int hw = h * w;
            if ((ws._h, ws._w) != (h, w))
            {
                ws.Tree = new ImageDissection(h, w, LeafArea);
                ws.Degree = new double[hw];
                ws.Interior = new bool[hw];
                for (int y = 0; y < h; y++)
                    for (int x = 0; x < w; x++)
                    {
                        double vertical = (y > 0 ? 1 : 0) + (y < h - 1 ? 1 : 0), horizontal = (x > 0 ? 1 : 0) + (x < w - 1 ? 1 : 0);
                        ws.Degree[y * w + x] = (vertical + horizontal) / 6 + vertical * horizontal / 12;
                        ws.Interior[y * w + x] = vertical == 2 && horizontal == 2;
                    }
                ws.NodeList = new (int, int, int)[ws.Tree.Count];
                ws.NodeFactor = new long[ws.Tree.Count];
                ws.Index = new int[hw];
                ws.Map = new int[hw];
                ws.NodeStart = new int[ws.Tree.Count];
                ws.Full = new bool[ws.Tree.Count];
                ws.Reused = new bool[ws.Tree.Count];
                ws.KnownSums = new int[(h + 1) * (w + 1)];
                ws.Known = [];
                ws.KnownLanes = [];
                ws.Position = new int[hw];
                Array.Fill(ws.Position, -1);
                (ws._h, ws._w) = (h, w);
                // The factor's storage at once, up to its bound for this size (any mask's, when that is kept between
                // systems): grown by doubling instead, a thread's first large system copied and paged in ~60 MB.
                long bound = ws.Bound = Entries(h, w);
                if (bound <= RetainedEntries) ws.EnsureFactor(bound + FrontKernels.Pad);
            }
            if (ws.Y.Length < (long)(c + 3) / 4 * 4 * n) ws.Y = new double[(c + 3) / 4 * 4 * hw];
            if (ws.Known.Length < c * (h + 2) * (w + 2)) ws.Known = new double[c * (h + 2) * (w + 2)];   // borders stay 0
            if (ws.Gather.Length < 4 * hw) ws.Gather = new double[4 * hw];
            if (ws.Inverse.Length < hw) ws.Inverse = new double[hw];
            return ws;
        }

        /// <summary>Factor and update storage a thread keeps between systems (8 M entries, 64 MB each: a 224×224 image
        /// needs ~3.3 M, grown by doubling to at most twice that); larger ones (up to ~600×600 images: ~30 M entries)
        /// are let go after their solve, so that no thread of a long-lived process holds hundreds of megabytes for good.
        /// </summary>
        const int RetainedEntries = 8 << 20;

        /// <summary>Drops storage grown past <see cref="RetainedEntries"/>.</summary>
        public void Trim()
        {
            if (Factor.Length > RetainedEntries) Factor = [];
            if (Stack.Length > RetainedEntries) Stack = [];
        }

        public void EnsureFactor(long count) => Ensure(ref Factor, count);

        /// <summary>The dense products' packed operands (<see cref="FrontKernels"/>).</summary>
        public double[] PackBuffer = [];

        public void EnsureStack(long count) => Ensure(ref Stack, count);

        static void Ensure(ref double[] array, long count)
        {
            if (count > Array.MaxLength) throw new InvalidOperationException("ROAD imputation: the factor does not fit in one array");
            if (array.Length < count) Array.Resize(ref array, (int)Math.Min(Array.MaxLength, Math.Max(count, 2L * array.Length)));
        }
    }
}
