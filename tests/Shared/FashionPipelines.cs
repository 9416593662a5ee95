namespace Loupe.Testing;

/// <summary>Pipeline text over the demo CNN and the first N shipped Fashion-MNIST test images (with labels).</summary>
public static class FashionPipelines
{
    /// <summary>Writes the pipeline into a fresh temp folder (<paramref name="prefix"/>) and returns its path;
    /// <paramref name="steps"/> is the YAML of the step list, <paramref name="tail"/> any top-level keys after it.</summary>
    public static string Write(string prefix, string name, string steps, int limit, int batchSize, string tail = "")
    {
        string S(string p) => RepoPaths.Yaml(Path.Combine(RepoPaths.Root, "samples", p));
        var path = Path.Combine(RepoPaths.TempDir(prefix), "pipeline.yaml");
        File.WriteAllText(path, $"""
            version: 1
            name: {name}
            seed: 0
            model:
              uses: torchvision
              with: {"{"} architecture: fashion-cnn, weights: {S("models/fashion-cnn/fashion-cnn.safetensors")} {"}"}
              labels: {S("models/fashion-cnn/labels.txt")}
            data:
              uses: idx
              with:
                images: {S("data/fashion-mnist/t10k-first500-images-idx3-ubyte.gz")}
                labels: {S("data/fashion-mnist/t10k-first500-labels-idx1-ubyte.gz")}
                limit: {limit}
            settings: {"{"} batch_size: {batchSize} {"}"}
            steps:
            {steps}
            {tail}
            """);
        return path;
    }
}
