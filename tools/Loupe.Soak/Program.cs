using System.Diagnostics;
using System.Globalization;
using Loupe.Abstractions;
using Loupe.Core;
using Loupe.Testing;
using TorchSharp;

// Soak test (opt-in, not part of `dotnet test`): runs a pipeline N times in this process through PipelineRunner and
// records, after each run and a full GC, the resident set size and the live tensor count (TensorAccounting.Live:
// TorchSharp's Tensor.TotalCount less the handles moved into parameters, which TorchSharp 0.107 never uncounts).
// Fails (exit 1) when RSS after the last run exceeds RSS after run 10 by more than 10 %, or when live tensors differ
// from their count before the first run.
//   dotnet run -c Release --project tools/Loupe.Soak -- [--runs 200] [--pipeline configs/quickstart.yaml] [--csv FILE]
// With --concepts N it instead runs dissection + concept-discovery + tcav once over N generated inputs and checks that
// RSS stays flat through every dataset pass (ConceptsSoak.cs):
//   dotnet run -c Release --project tools/Loupe.Soak -- --concepts 60000 [--batch 100] [--top-k 0] [--steps concept-discovery] [--csv FILE]
// With --scalar-race SECONDS it provokes TorchSharp's scalar race for that long (ScalarRace.cs).
NativeHeap.LimitArenas(); // first, before other threads allocate (as the CLI does)
int runs = 200, batch = 100, topK = 0;
long concepts = 0;
string? pipeline = null, csv = null;
string[]? steps = null;
for (int i = 0; i < args.Length; i++)
    switch (args[i])
    {
        case "--runs": runs = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--pipeline": pipeline = args[++i]; break;
        case "--csv": csv = args[++i]; break;
        case "--concepts": concepts = long.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--batch": batch = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--top-k": topK = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--scalar-race": return ScalarRace.Run(double.Parse(args[++i], CultureInfo.InvariantCulture));
        case "--steps": steps = args[++i].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries); break;
        default: Console.Error.WriteLine($"unknown argument '{args[i]}'; usage: Loupe.Soak [--runs N] [--pipeline FILE] [--csv FILE] | --concepts N [--batch B] [--top-k K] [--steps dissection,concept-discovery,tcav] [--csv FILE] | --scalar-race SECONDS"); return 2;
    }
if (concepts > 0) return ConceptsSoak.Run(RepoPaths.Root, concepts, batch, topK, csv, steps);
if (runs < 10) { Console.Error.WriteLine("--runs must be at least 10 (run 10 is the reference)"); return 2; }
pipeline ??= Path.Combine(RepoPaths.Root, "configs", "quickstart.yaml");

var work = Path.Combine(Path.GetTempPath(), $"loupe-soak-{Guid.NewGuid():N}");
Directory.CreateDirectory(work);
var rows = new List<(int Run, double Seconds, long Rss, long Tensors, long Managed)>();
ProcessMemory.Settle();
long baselineTensors = TensorAccounting.Live, baselineRaw = torch.Tensor.TotalCount;
Console.WriteLine($"pipeline {pipeline}; {runs} runs; live tensors before the first run: {baselineTensors}");
try
{
    for (int run = 1; run <= runs; run++)
    {
        var sw = Stopwatch.StartNew();
        var outDir = Path.Combine(work, $"run-{run}");
        var result = PipelineRunner.Run(new RunRequest(pipeline) { OutDir = outDir });
        sw.Stop();
        if (result.ExitCode != 0)
        {
            Console.Error.WriteLine($"run {run} failed (exit {result.ExitCode}): {string.Join("; ", result.Errors)}");
            return 1;
        }
        Directory.Delete(outDir, true);
        ProcessMemory.Settle();
        rows.Add((run, sw.Elapsed.TotalSeconds, ProcessMemory.Rss(), TensorAccounting.Live, GC.GetTotalMemory(false)));
        if (run == 1 || run % 10 == 0)
            Console.WriteLine($"run {run,4}: {rows[^1].Seconds,6:F2} s  RSS {rows[^1].Rss / 1048576.0,8:F1} MiB  live tensors {rows[^1].Tensors}  managed heap {rows[^1].Managed / 1048576.0:F1} MiB");
    }
}
finally { try { Directory.Delete(work, true); } catch (IOException) { } }

if (csv is not null)
    File.WriteAllLines(csv, ["run,seconds,rss_bytes,live_tensors,managed_bytes", .. rows.Select(r => FormattableString.Invariant($"{r.Run},{r.Seconds:F3},{r.Rss},{r.Tensors},{r.Managed}"))]);
var r10 = rows[9];
var last = rows[^1];
var growth = (last.Rss - r10.Rss) / (double)r10.Rss;
Console.WriteLine();
Console.WriteLine($"run 10 : RSS {r10.Rss / 1048576.0:F1} MiB, live tensors {r10.Tensors}");
Console.WriteLine($"run {last.Run}: RSS {last.Rss / 1048576.0:F1} MiB ({growth:+0.0%;-0.0%}), live tensors {last.Tensors} (baseline {baselineTensors}); peak RSS {rows.Max(r => r.Rss) / 1048576.0:F1} MiB");
Console.WriteLine($"TorchSharp's raw Tensor.TotalCount: {baselineRaw} before, {torch.Tensor.TotalCount} after; {TensorAccounting.MovedIntoParameters} handles moved into parameters (see TensorAccounting)");
Console.WriteLine($"mean run time {rows.Average(r => r.Seconds):F2} s");
bool ok = growth <= 0.10 && last.Tensors == baselineTensors;
Console.WriteLine(ok ? "PASS: RSS within 10% of run 10 and live tensors at baseline" : "FAIL");
return ok ? 0 : 1;
