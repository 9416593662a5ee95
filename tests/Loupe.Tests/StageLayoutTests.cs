using System.Text.RegularExpressions;
using Loupe.Testing;

namespace Loupe.Tests;

/// <summary>The host laid out by stage (docs/design.md, "The host by stage"): core/Loupe.Core has one folder per stage,
/// and a file of a stage names no type declared in a later stage, except the run's hand-offs listed here.</summary>
public class StageLayoutTests
{
    static readonly string[] Stages = ["Pipeline", "Plugins", "Run", "Outputs", "Shards", "Report"];

    /// <summary>Stage rank: text → spec, plugins, plan/prepare/execute, outputs, then shards and the report.</summary>
    static int Rank(string stage) => stage switch { "Shards" or "Report" => 4, _ => Array.IndexOf(Stages, stage) };

    /// <summary>The forward edges by design: the run writes its artifacts through the output stage's sink and manifest,
    /// and hands its records to the run-level outputs and the report (a <c>ReportData</c>, never the live run).</summary>
    static readonly HashSet<(string From, string Type)> HandOffs =
    [
        ("Run", "ArtifactRecord"), ("Run", "StepArtifactSink"), ("Run", "Manifest"), ("Run", "OutputFolder"),
        ("Run", "RunOutputs"), ("Run", "ReportData"), ("Run", "RunReport"),
    ];

    static readonly Regex Declaration = new(
        @"^\s*(?:(?:public|internal|private|sealed|static|abstract|readonly|partial|file)\s+)*(?:record\s+struct|record|class|interface|enum|struct)\s+([A-Z]\w*)",
        RegexOptions.Multiline);

    static string Core => Path.Combine(RepoPaths.Root, "core", "Loupe.Core");

    static string WithoutComments(string code) => Regex.Replace(code, @"//.*", "");

    [Fact]
    public void EveryHostFileIsInAStageFolder()
    {
        var loose = Directory.GetFiles(Core, "*.cs").Select(Path.GetFileName).ToList();
        Assert.True(loose.Count == 0, "files outside the stage folders: " + string.Join(", ", loose));
        foreach (var stage in Stages) Assert.True(Directory.Exists(Path.Combine(Core, stage)), stage);
        var others = Directory.GetDirectories(Core).Select(Path.GetFileName).Where(d => d is not ("bin" or "obj") && !Stages.Contains(d)).ToList();
        Assert.True(others.Count == 0, "folders that are no stage: " + string.Join(", ", others));
    }

    [Fact]
    public void NoStageNamesATypeOfALaterStage()
    {
        var files = Stages.SelectMany(s => Directory.GetFiles(Path.Combine(Core, s), "*.cs", SearchOption.AllDirectories)
            .Select(f => (Stage: s, File: f, Code: WithoutComments(File.ReadAllText(f))))).ToList();
        var declaredIn = new Dictionary<string, HashSet<string>>();
        foreach (var (stage, _, code) in files)
            foreach (Match m in Declaration.Matches(code))
                (declaredIn.TryGetValue(m.Groups[1].Value, out var set) ? set : declaredIn[m.Groups[1].Value] = []).Add(stage);
        Assert.Contains("Run", declaredIn["PreparedRun"]);      // the scan sees the stages' types
        Assert.Contains("Pipeline", declaredIn["Duration"]);

        var violations = new List<string>();
        foreach (var (stage, file, code) in files)
            foreach (var (type, stages) in declaredIn)
            {
                if (stages.Contains(stage) || !stages.Any(s => Rank(s) > Rank(stage)) || HandOffs.Contains((stage, type))) continue;
                // A use of the type: unqualified or after a capitalised qualifier (Report.RunReport), followed by
                // member access, generics, a call, nullability, an array or a variable name. Lower-case qualifiers
                // (run.Shard) are member accesses, not the type.
                var use = new Regex(@"(?:(?<![\w.])|(?<=\b[A-Z]\w*\.))" + type + @"(?=\s*[.<(>\[\]?]|\s+[a-z_]\w*)");
                if (use.IsMatch(code))
                    violations.Add($"{Path.GetRelativePath(Core, file)} names {type} ({string.Join(", ", stages)})");
            }
        Assert.True(violations.Count == 0, string.Join("\n", violations));
    }

    /// <summary>The check itself finds a backward import (the parser naming a run type, as it once named
    /// <c>Duration</c> from StepThread.cs) and ignores member accesses of the same name.</summary>
    [Fact]
    public void TheUsePatternSeesTypesNotMembers()
    {
        static bool Uses(string code, string type) =>
            new Regex(@"(?:(?<![\w.])|(?<=\b[A-Z]\w*\.))" + type + @"(?=\s*[.<(>\[\]?]|\s+[a-z_]\w*)").IsMatch(code);
        Assert.True(Uses("if (StepThread.Run(x)) {}", "StepThread"));
        Assert.True(Uses("Report.RunReport.AfterRun(a);", "RunReport"));
        Assert.True(Uses("List<ArtifactRecord> a;", "ArtifactRecord"));
        Assert.True(Uses("PreparedRun run = x;", "PreparedRun"));
        Assert.False(Uses("var s = run.Shard;", "Shard"));
        Assert.False(Uses("public ShardInfo? Shard { get; }", "Shard"));
        Assert.False(Uses("record RunResult(int Code, JsonObject? Manifest);", "Manifest"));
    }
}
