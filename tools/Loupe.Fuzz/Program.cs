using System.Diagnostics;
using System.Security.Cryptography;
using Loupe.Abstractions;
using Loupe.Fuzz;

// loupe-fuzz: an opt-in mutation fuzzer over Loupe's readers (see docs/reliability.md).
//   loupe-fuzz --target yaml --fuzz-minutes 10 [--seed 1] [--out fuzz-out] [--timeout-s 5] [--max-mb 1024]
//   loupe-fuzz --target yaml --replay FILE...      re-runs saved inputs (regression check)
// An input passes when the reader returns or throws LoupeException (a clear error naming the file). Any other
// exception, a run over --timeout-s, or more than --max-mb allocated (managed, per input) or resident (process)
// is a finding: the input is saved under <out>/<target>/ with a .txt describing it. A crash that kills the process
// (stack overflow) leaves the input in <out>/<target>/inflight.*.

var opts = Args.Parse(args);
if (opts is null) return 2;
var target = Targets.All.FirstOrDefault(t => t.Name == opts.Target);
if (target is null)
{
    Console.Error.WriteLine($"unknown target '{opts.Target}'; targets: {string.Join(", ", Targets.All.Select(t => t.Name))}");
    return 2;
}
TorchSharp.torch.set_num_threads(1);
var root = Loupe.Fuzz.Repo.Root;
var outDir = Path.Combine(Path.GetFullPath(opts.Out), target.Name);
Directory.CreateDirectory(outDir);
var runner = new Runner(target, outDir, TimeSpan.FromSeconds(opts.TimeoutSeconds), opts.MaxMb << 20);

if (opts.Replay.Count > 0)
{
    int bad = 0;
    foreach (var f in opts.Replay)
    {
        var r = runner.Execute(File.ReadAllBytes(f));
        Console.WriteLine($"{f}: {r.Outcome} {r.Detail}");
        if (r.Outcome is not (Outcome.Ok or Outcome.Rejected)) bad++;
    }
    return bad == 0 ? 0 : 1;
}

var seeds = target.SeedGlobs.SelectMany(g => Glob(root, g)).Distinct().Where(f => new FileInfo(f).Length <= 4 << 20)
    .Select(target.Seed).OfType<byte[]>().ToList();
if (seeds.Count == 0) { Console.Error.WriteLine($"no seed files for {target.Name}"); return 2; }
var rng = new Random(opts.Seed);
var mutator = new Mutator(rng, target.Dictionary.Select(d => d.Select(c => (byte)c).ToArray()).ToArray());
var pool = new List<byte[]>(seeds);
var signatures = new HashSet<string>();
var findings = new Dictionary<string, int>();
long execs = 0, rejected = 0;
var sw = Stopwatch.StartNew();
var end = TimeSpan.FromMinutes(opts.Minutes);
var lastReport = TimeSpan.Zero;
bool hung = false;
Console.WriteLine($"fuzzing {target.Name}: {seeds.Count} seeds, {opts.Minutes} min, seed {opts.Seed}, timeout {opts.TimeoutSeconds} s, cap {opts.MaxMb} MB");

// Seeds first (they must pass), then mutations.
foreach (var s in seeds) Record(s, runner.Execute(s));
while (sw.Elapsed < end)
{
    var input = mutator.Mutate(pool[rng.Next(pool.Count)], pool[rng.Next(pool.Count)]);
    var r = runner.Execute(input);
    Record(input, r);
    if (r.Outcome == Outcome.Hang) { hung = true; break; } // the hung thread cannot be stopped: report and leave (exit 3)
    if (sw.Elapsed - lastReport > TimeSpan.FromSeconds(60))
    {
        lastReport = sw.Elapsed;
        Console.WriteLine($"  {sw.Elapsed:mm\\:ss} execs {execs} ({execs / sw.Elapsed.TotalSeconds:F0}/s) pool {pool.Count} findings {findings.Values.Sum()} rss {Environment.WorkingSet >> 20} MB");
    }
}
var rate = execs / sw.Elapsed.TotalSeconds;
Console.WriteLine($"RESULT target={target.Name} minutes={sw.Elapsed.TotalMinutes:F1} execs={execs} execs_per_s={rate:F0} rejected={rejected} pool={pool.Count} findings={findings.Values.Sum()} distinct={findings.Count} peak_rss_mb={Process.GetCurrentProcess().PeakWorkingSet64 >> 20}");
foreach (var (k, v) in findings) Console.WriteLine($"  {v} × {k}");
runner.ClearInflight();
return hung ? 3 : findings.Count == 0 ? 0 : 1;

void Record(byte[] input, Result r)
{
    execs++;
    if (r.Outcome == Outcome.Rejected) rejected++;
    if (r.Outcome is Outcome.Ok or Outcome.Rejected)
    {
        // Cheap feedback without coverage: keep inputs that reach an error (or success) not seen before.
        if (signatures.Add(r.Signature) && pool.Count < 2000) pool.Add(input);
        return;
    }
    var key = $"{r.Outcome}: {r.Signature}";
    bool first = !findings.ContainsKey(key);
    findings[key] = findings.GetValueOrDefault(key) + 1;
    if (!first) return;
    var name = $"{r.Outcome.ToString().ToLowerInvariant()}-{Convert.ToHexString(SHA256.HashData(input))[..12].ToLowerInvariant()}";
    File.WriteAllBytes(Path.Combine(outDir, name + target.Extension), input);
    File.WriteAllText(Path.Combine(outDir, name + ".txt"), $"{r.Outcome} after {execs} execs\n{r.Detail}\n");
    Console.WriteLine($"  FINDING {name}: {r.Outcome} {r.Signature}");
}

static IEnumerable<string> Glob(string root, string pattern)
{
    var dir = Path.Combine(root, Path.GetDirectoryName(pattern)!);
    if (!Directory.Exists(dir)) return [];
    // .json files are skipped (corpus.json, expectations) unless the pattern asks for them (the manifest target's seeds).
    return Directory.EnumerateFiles(dir, Path.GetFileName(pattern)).Where(f => (!f.EndsWith(".json") || pattern.EndsWith(".json")) && !f.EndsWith(".py") && !f.EndsWith(".md")).Order();
}

namespace Loupe.Fuzz
{
    enum Outcome { Ok, Rejected, Crash, Hang, Memory }

    sealed record Result(Outcome Outcome, string Signature, string Detail);

    /// <summary>Runs one input on a worker thread under a watchdog and memory caps.</summary>
    sealed class Runner(Target target, string outDir, TimeSpan timeout, long maxBytes)
    {
        readonly string _inflight = Path.Combine(outDir, "inflight" + target.Extension);
        readonly Process _process = Process.GetCurrentProcess();
        long _baseline = Process.GetCurrentProcess().PeakWorkingSet64 + (256L << 20); // room for libtorch and the JIT warming up

        public void ClearInflight() => File.Delete(_inflight);

        public Result Execute(byte[] input)
        {
            File.WriteAllBytes(_inflight, input);
            Result? result = null;
            long allocated = 0;
            var thread = new Thread(() =>
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                try
                {
                    using var scope = TorchSharp.torch.NewDisposeScope();
                    target.Read(_inflight);
                    result = new Result(Outcome.Ok, "ok", "");
                }
                catch (LoupeException e)
                {
                    result = Clear(e.Message)
                        ? new Result(Outcome.Rejected, Shape(e.Message), e.Message)
                        : new Result(Outcome.Crash, "unclear message: " + Shape(e.Message), e.ToString());
                }
                catch (Exception e)
                {
                    var frame = new StackTrace(e).GetFrames().FirstOrDefault(f => f.GetMethod()?.DeclaringType?.Namespace?.StartsWith("Loupe") == true)?.GetMethod();
                    result = new Result(Outcome.Crash, $"{e.GetType().Name} in {frame?.DeclaringType?.Name}.{frame?.Name}", e.ToString());
                }
                allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            }, 16 << 20) { IsBackground = true };
            thread.Start();
            if (!thread.Join(timeout)) return new Result(Outcome.Hang, $"over {timeout.TotalSeconds} s", $"input did not finish in {timeout.TotalSeconds} s");
            // Peak resident memory is what hurts: a spike over the cap (above the process's own baseline) is a finding.
            // Managed allocation is cumulative (a decoder may allocate and drop many buffers), so it only counts when
            // it exceeds the cap fourfold.
            _process.Refresh();
            long peak = _process.PeakWorkingSet64 - _baseline;
            if (peak > maxBytes) { _baseline = _process.PeakWorkingSet64; return new Result(Outcome.Memory, $"peak resident +{peak >> 20} MB", $"peak working set grew by {peak} bytes; {result}"); }
            if (allocated > 4 * maxBytes) return new Result(Outcome.Memory, $"allocated {allocated >> 20} MB", $"allocated {allocated} bytes; {result}");
            return result!;
        }

        // A clear error names the file it is about.
        bool Clear(string message) => message.Contains(_inflight) || message.Contains(Path.GetFileName(_inflight));

        static string Shape(string message)
        {
            // Digits and quoted text vary between inputs that fail the same way.
            var s = System.Text.RegularExpressions.Regex.Replace(message, @"'[^']*'|\([^)]*\)|[0-9a-fA-F]{2,}|\d+", "#");
            var at = s.IndexOf(": ", StringComparison.Ordinal);
            s = at >= 0 ? s[(at + 2)..] : s;
            return s.Length > 60 ? s[..60] : s;
        }
    }

    /// <summary>Byte-level mutations: flips, interesting values, inserts, deletes, duplicates, splices and dictionary tokens.</summary>
    sealed class Mutator(Random rng, byte[][] dictionary)
    {
        static readonly long[] Interesting = [0, 1, -1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff, int.MaxValue, int.MinValue, uint.MaxValue, long.MaxValue, long.MinValue, 1L << 32, 1L << 40, 65536, 100_000];

        public byte[] Mutate(byte[] a, byte[] b)
        {
            var d = new List<byte>(a);
            int n = 1 + rng.Next(rng.Next(2) == 0 ? 2 : 8);
            for (int i = 0; i < n; i++) Once(d, b);
            if (d.Count > 8 << 20) d.RemoveRange(8 << 20, d.Count - (8 << 20));
            return d.ToArray();
        }

        void Once(List<byte> d, byte[] other)
        {
            int Pos(int extra = 0) => d.Count + extra == 0 ? 0 : rng.Next(d.Count + extra);
            // Headers hold most of the structure: bias positions towards the first 256 bytes half the time.
            int Head() => d.Count == 0 ? 0 : rng.Next(2) == 0 ? rng.Next(Math.Min(d.Count, 256)) : rng.Next(d.Count);
            switch (rng.Next(9))
            {
                case 0 when d.Count > 0: { int p = Head(); d[p] ^= (byte)(1 << rng.Next(8)); break; }
                case 1 when d.Count > 0: { int p = Head(); d[p] = (byte)rng.Next(256); break; }
                case 2:
                {
                    var v = Interesting[rng.Next(Interesting.Length)];
                    int width = new[] { 1, 2, 4, 8 }[rng.Next(4)];
                    var bytes = BitConverter.GetBytes(v)[..width];
                    if (rng.Next(2) == 0) Array.Reverse(bytes);
                    int p = Head();
                    for (int k = 0; k < width && p + k < d.Count; k++) d[p + k] = bytes[k];
                    break;
                }
                case 3: { int p = Pos(1); var bytes = new byte[1 + rng.Next(16)]; rng.NextBytes(bytes); d.InsertRange(p, bytes); break; }
                case 4 when d.Count > 1: { int p = Pos(); d.RemoveRange(p, Math.Min(d.Count - p, 1 + rng.Next(rng.Next(2) == 0 ? 8 : 512))); break; }
                case 5 when d.Count > 1: { int p = Pos(); int len = Math.Min(d.Count - p, 1 + rng.Next(64)); d.InsertRange(Pos(1), d.GetRange(p, len)); break; }
                case 6 when other.Length > 0:
                {
                    int p = Pos(); int q = rng.Next(other.Length);
                    d.RemoveRange(p, d.Count - p);
                    d.AddRange(other.AsSpan(q).ToArray());
                    break;
                }
                case 7 when dictionary.Length > 0: { var tok = dictionary[rng.Next(dictionary.Length)]; d.InsertRange(Pos(1), tok); break; }
                case 8 when d.Count > 0: { int p = Pos(); d.RemoveRange(p, d.Count - p); break; } // truncate
                default: if (d.Count > 0) d[Pos()] ^= 0xff; break;
            }
        }
    }

    sealed record Args(string Target, double Minutes, int Seed, string Out, int TimeoutSeconds, long MaxMb, List<string> Replay)
    {
        public static Args? Parse(string[] a)
        {
            string? target = null; double minutes = 1; int seed = 1; string outDir = "fuzz-out"; int timeout = 5; long maxMb = 1024;
            var replay = new List<string>();
            for (int i = 0; i < a.Length; i++)
            {
                string Next() => i + 1 < a.Length ? a[++i] : throw new ArgumentException($"{a[i]} needs a value");
                switch (a[i])
                {
                    case "--target": target = Next(); break;
                    case "--fuzz-minutes": minutes = double.Parse(Next(), System.Globalization.CultureInfo.InvariantCulture); break;
                    case "--seed": seed = int.Parse(Next()); break;
                    case "--out": outDir = Next(); break;
                    case "--timeout-s": timeout = int.Parse(Next()); break;
                    case "--max-mb": maxMb = long.Parse(Next()); break;
                    case "--replay": while (i + 1 < a.Length && !a[i + 1].StartsWith("--")) replay.Add(a[++i]); break;
                    default: Console.Error.WriteLine($"unknown argument '{a[i]}'"); return null;
                }
            }
            if (target is null)
            {
                Console.Error.WriteLine("usage: loupe-fuzz --target yaml|safetensors|pt|pickle|npy|onnx|idx|image --fuzz-minutes M [--seed S] [--out DIR] [--timeout-s 5] [--max-mb 1024] [--replay FILE...]");
                return null;
            }
            return new Args(target, minutes, seed, outDir, timeout, maxMb, replay);
        }
    }

    static class Repo
    {
        public static string Root { get; } = Find();
        static string Find()
        {
            var dir = AppContext.BaseDirectory;
            while (dir is not null && !File.Exists(Path.Combine(dir, "Framework.sln"))) dir = Path.GetDirectoryName(dir);
            return dir ?? Directory.GetCurrentDirectory();
        }
    }
}
