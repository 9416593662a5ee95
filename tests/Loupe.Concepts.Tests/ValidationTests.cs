namespace Loupe.Concepts.Tests;

/// <summary>Bad concept inputs are refused before anything runs, with the option and the folder named.</summary>
public class ValidationTests
{
    [Fact]
    public void TooFewRandomSetsAndUnknownConceptsAreReported()
    {
        var dir = Loupe.Testing.RepoPaths.TempDir("loupe-concepts-bad");
        foreach (var s in new[] { "a", "b" }) Directory.CreateDirectory(Path.Combine(dir, "random", s));
        var path = Env.PlantedPipeline($"""
              - id: tcav
                uses: tcav
                with: {"{"} layer: pool2, concepts: {Env.Planted}/concepts, random: {dir}/random, names: [stripes, zebra] {"}"}
              - id: dis
                uses: dissection
                with: {"{"} layer: relu2, masks: {dir}/random/a {"}"}
            """);
        var r = Env.Run(path);
        Assert.Equal(2, r.ExitCode);
        var messages = string.Join("\n", r.Errors.Select(e => e.ToString()));
        Assert.Contains("option 'random'", messages);
        Assert.Contains("at least 3 subfolders", messages);
        Assert.Contains("concept 'zebra' has no subfolder", messages);
        Assert.Contains("option 'masks'", messages);
    }

    [Fact]
    public void AnUnknownImportanceMethodIsRefusedWithTheChoices()
    {
        var r = Env.Run(Env.PlantedPipeline("""
              - { id: cd, uses: concept-discovery, with: { layer: relu2, importance: shapley } }
            """));
        Assert.Equal(2, r.ExitCode);
        var messages = string.Join("\n", r.Errors.Select(e => e.ToString()));
        Assert.Contains("importance", messages);
        Assert.Contains("sobol", messages);
    }

    [Fact]
    public void AnUnlabelledDatasetIsRefusedByTheLabelBasedTechniques()
    {
        var path = Env.PlantedPipeline("""
              - id: proto
                uses: prototypes
                with: { layer: relu3 }
            """);
        var text = File.ReadAllText(path);
        var start = text.IndexOf(", labels: ", StringComparison.Ordinal);
        File.WriteAllText(path, text.Remove(start, text.IndexOf(" }", start, StringComparison.Ordinal) - start));
        var r = Env.Run(path);
        var step = r.Manifest!["steps"]!.AsArray().First(s => (string?)s!["id"] == "proto")!;
        Assert.Equal("failed", step["status"]!.ToString());
        Assert.Contains("prototypes: the data has no labels", step["error"]!.ToString());
    }
}
