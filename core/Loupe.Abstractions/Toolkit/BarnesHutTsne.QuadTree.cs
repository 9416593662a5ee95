namespace Loupe.Abstractions.Toolkit;

public static partial class BarnesHutTsne
{
    /// <summary>A point-region quadtree over the embedding, rebuilt every iteration. Each cell keeps its box, the
    /// barycentre and the number of points; a leaf holds one point or several duplicates (within 1e-6).</summary>
    sealed class QuadTree(int n)
    {
        // Structure of arrays; children are stored contiguously (up to 4, only non-empty quadrants).
        double[] _cx = new double[4 * n + 8], _cy = new double[4 * n + 8], _w2 = new double[4 * n + 8];
        int[] _count = new int[4 * n + 8], _first = new int[4 * n + 8], _nChildren = new int[4 * n + 8];
        readonly int[] _idx = new int[n], _tmp = new int[n];
        int _cells;
        double[] _y = [];

        public void Build(double[] y, int n)
        {
            _y = y;
            double minX = double.MaxValue, minY = double.MaxValue, maxX = double.MinValue, maxY = double.MinValue;
            for (int i = 0; i < n; i++)
            {
                _idx[i] = i;
                minX = Math.Min(minX, y[2 * i]); maxX = Math.Max(maxX, y[2 * i]);
                minY = Math.Min(minY, y[2 * i + 1]); maxY = Math.Max(maxY, y[2 * i + 1]);
            }
            // Widen slightly so the maximum lies strictly inside the root box.
            double ex = Math.Max((maxX - minX) * 1e-9, 1e-12), ey = Math.Max((maxY - minY) * 1e-9, 1e-12);
            _cells = 1;
            BuildCell(0, 0, n, minX, minY, maxX + ex, maxY + ey, 0);
        }

        void Ensure(int cells)
        {
            if (cells <= _cx.Length) return;
            int size = Math.Max(cells, _cx.Length * 2);
            Array.Resize(ref _cx, size); Array.Resize(ref _cy, size); Array.Resize(ref _w2, size);
            Array.Resize(ref _count, size); Array.Resize(ref _first, size); Array.Resize(ref _nChildren, size);
        }

        void BuildCell(int cell, int start, int count, double x0, double y0, double x1, double y1, int depth)
        {
            double sx = 0, sy = 0;
            for (int t = start; t < start + count; t++) { sx += _y[2 * _idx[t]]; sy += _y[2 * _idx[t] + 1]; }
            _cx[cell] = sx / count; _cy[cell] = sy / count;
            _count[cell] = count;
            double wx = x1 - x0, wy = y1 - y0;
            _w2[cell] = Math.Max(wx * wx, wy * wy);
            _nChildren[cell] = 0;
            if (count == 1 || depth >= 60 || AllDuplicates(start, count)) return;
            double mx = (x0 + x1) / 2, my = (y0 + y1) / 2;
            // Partition into quadrants: 0 = (x<mx, y<my), 1 = (x≥mx, y<my), 2 = (x<mx, y≥my), 3 = (x≥mx, y≥my).
            Span<int> counts = stackalloc int[4];
            for (int t = start; t < start + count; t++) counts[Quadrant(_idx[t], mx, my)]++;
            Span<int> offs = stackalloc int[4];
            offs[0] = start; for (int q = 1; q < 4; q++) offs[q] = offs[q - 1] + counts[q - 1];
            Span<int> pos = stackalloc int[4];
            offs.CopyTo(pos);
            for (int t = start; t < start + count; t++) { int p = _idx[t]; _tmp[pos[Quadrant(p, mx, my)]++] = p; }
            Array.Copy(_tmp, start, _idx, start, count);
            int nonEmpty = 0; for (int q = 0; q < 4; q++) if (counts[q] > 0) nonEmpty++;
            Ensure(_cells + nonEmpty);
            int first = _cells; _cells += nonEmpty;
            _first[cell] = first; _nChildren[cell] = nonEmpty;
            int c = first;
            for (int q = 0; q < 4; q++)
            {
                if (counts[q] == 0) continue;
                double ax = (q & 1) == 0 ? x0 : mx, bx = (q & 1) == 0 ? mx : x1;
                double ay = (q & 2) == 0 ? y0 : my, by = (q & 2) == 0 ? my : y1;
                BuildCell(c++, offs[q], counts[q], ax, ay, bx, by, depth + 1);
            }
        }

        int Quadrant(int p, double mx, double my) => (_y[2 * p] >= mx ? 1 : 0) | (_y[2 * p + 1] >= my ? 2 : 0);

        bool AllDuplicates(int start, int count)
        {
            double x = _y[2 * _idx[start]], y = _y[2 * _idx[start] + 1];
            for (int t = start + 1; t < start + count; t++)
                if (Math.Abs(_y[2 * _idx[t]] - x) > Epsilon || Math.Abs(_y[2 * _idx[t] + 1] - y) > Epsilon) return false;
            return true;
        }

        /// <summary>Σ over summarised cells of size·q (q = 1/(1+d²)) and of size·q²·(point − barycentre), skipping
        /// the point itself (and its duplicates), as sklearn's <c>summarize</c> + <c>compute_gradient_negative</c>.</summary>
        public (double SumQ, double Fx, double Fy) Summarize(double px, double py, double theta2)
        {
            Span<int> stack = stackalloc int[256];
            int top = 0;
            stack[top++] = 0;
            double sumQ = 0, fx = 0, fy = 0;
            while (top > 0)
            {
                int c = stack[--top];
                double dx = px - _cx[c], dy = py - _cy[c], d2 = dx * dx + dy * dy;
                bool leaf = _nChildren[c] == 0;
                if (leaf && Math.Abs(dx) <= Epsilon && Math.Abs(dy) <= Epsilon) continue;   // no self-interaction
                if (leaf || _w2[c] / d2 < theta2)
                {
                    double q = 1.0 / (1.0 + d2), size = _count[c];
                    sumQ += size * q;
                    double mult = size * q * q;
                    fx += mult * dx; fy += mult * dy;
                }
                else
                {
                    // Push children in reverse so they are visited in quadrant order (fixed summation order).
                    for (int ch = _first[c] + _nChildren[c] - 1; ch >= _first[c]; ch--) stack[top++] = ch;
                }
            }
            return (sumQ, fx, fy);
        }
    }
}
