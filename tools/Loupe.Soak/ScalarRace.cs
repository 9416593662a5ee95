using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// The race behind "Unknown scalar type" (docs/design.md, "Scalars freed mid-call"), provoked on purpose: one thread runs
/// libtorch operators with .NET numbers (each makes a temporary TorchSharp Scalar that nothing keeps alive during the
/// native call) while other threads allocate and collect, so that finalizers free the temporaries at random moments.
/// With TorchSharp's library as shipped this fails within seconds to minutes; with the build's deferred release it must
/// run the whole time. Exit 0 when every operator's result was right for the whole time, 1 at the first wrong result or
/// libtorch error.
///   dotnet run -c Release --project tools/Loupe.Soak -- --scalar-race 120
/// </summary>
static class ScalarRace
{
    public static int Run(double seconds)
    {
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(seconds));
        var churners = Enumerable.Range(0, 2).Select(_ => new Thread(() =>
        {
            var keep = new object[64];
            int i = 0;
            while (!stop.IsCancellationRequested)
            {
                keep[i++ & 63] = new byte[256];
                if ((i & 4095) == 0) GC.Collect(0, GCCollectionMode.Forced, blocking: false);
            }
        }) { IsBackground = true }).ToList();
        foreach (var t in churners) t.Start();

        long ops = 0;
        var clock = Stopwatch.StartNew();
        try
        {
            using var x = ones(4);
            while (!stop.IsCancellationRequested)
            {
                using var scope = NewDisposeScope();
                for (int k = 0; k < 256; k++)
                {
                    float a = (k % 7) * 0.25f, b = 1 + (k % 5);
                    var y = (x + a).mul(b).clamp(0, 100).sub(1.5);
                    float want = Math.Clamp((1 + a) * b, 0, 100) - 1.5f, got = y[0].item<float>();
                    if (Math.Abs(got - want) > 1e-5f)
                    {
                        Console.Error.WriteLine($"wrong result after {ops:N0} operators ({clock.Elapsed.TotalSeconds:F1} s): {got} for {want}");
                        return 1;
                    }
                    ops += 4;
                }
            }
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"failed after {ops:N0} operators ({clock.Elapsed.TotalSeconds:F1} s): {e.Message.Split('\n')[0]}");
            return 1;
        }
        finally { stop.Cancel(); foreach (var t in churners) t.Join(); }
        Console.WriteLine($"{ops:N0} operators with temporary scalars in {clock.Elapsed.TotalSeconds:F1} s beside two collecting threads: every result right");
        return 0;
    }
}
