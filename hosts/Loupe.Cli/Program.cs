using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Cli;
using Loupe.Core;

PrintableWriter.Install();
var quiet = new Option<bool>("--quiet", "-q") { Description = "print only errors and the output folder", Recursive = true };
var json = new Option<bool>("--json") { Description = "print a machine-readable JSON summary on stdout", Recursive = true };
var setOpt = new Option<string[]>("--set") { Description = "override a pipeline value, e.g. --set steps.cam.with.layer=layer3 (repeatable)" };
var outOpt = new Option<string?>("--out") { Description = "output folder (must not exist or be empty; default from output.dir)" };
var shardOpt = new Option<string?>("--shard") { Description = "run only shard I of N of the dataset (0-based, e.g. 0/4); merge the shard folders with 'loupe merge'" };
var files = new Argument<string[]>("pipeline") { Description = "pipeline YAML file(s)", Arity = ArgumentArity.OneOrMore };
var oneFile = new Argument<string>("pipeline") { Description = "pipeline YAML file" };
var idArg = new Argument<string>("id") { Description = "component id, e.g. grad-cam" };

var root = new RootCommand("loupe — look inside convolutional networks: YAML pipelines of explanation techniques loaded from plugins.");
root.Options.Add(quiet);
root.Options.Add(json);

var run = new Command("run", "validate and run pipeline file(s); exit code 0 only if every step succeeded") { files, outOpt, setOpt, shardOpt };
run.SetAction(pr => Commands.Run(pr.GetValue(files)!, pr.GetValue(outOpt), pr.GetValue(setOpt) ?? [], pr.GetValue(quiet), pr.GetValue(json), pr.GetValue(shardOpt)));
root.Subcommands.Add(run);

var validate = new Command("validate", "check a pipeline (keys, ids, options, files, layers, capabilities) without running it") { oneFile, setOpt, shardOpt };
validate.SetAction(pr => Commands.Validate(pr.GetValue(oneFile)!, pr.GetValue(setOpt) ?? [], pr.GetValue(json), pr.GetValue(shardOpt)));
root.Subcommands.Add(validate);

var shardDirs = new Argument<string[]>("shard-dir") { Description = "output folders of 'loupe run --shard i/n', all n of them", Arity = ArgumentArity.OneOrMore };
var mergeOut = new Option<string>("--out") { Description = "folder for the merged run (must not exist or be empty)", Required = true };
var mergePlugins = new Option<string[]>("--plugin") { Description = "also load plugins from this folder (repeatable); merge never loads the plugin folders a shard's manifest names" };
var merge = new Command("merge", "merge the output folders of 'run --shard i/n' into one run folder, as if run unsharded") { shardDirs, mergeOut, mergePlugins };
merge.SetAction(pr => Commands.Merge(pr.GetValue(shardDirs)!, pr.GetValue(mergeOut)!, pr.GetValue(quiet), pr.GetValue(json), pr.GetValue(mergePlugins)));
root.Subcommands.Add(merge);

var portOpt = new Option<int>("--port") { Description = "port to listen on (default: any free port)" };
var hostOpt = new Option<string>("--host") { Description = "interface to bind (default 127.0.0.1; anything else exposes the model to the network)", DefaultValueFactory = _ => "127.0.0.1" };
var serve = new Command("serve", "explore the pipeline's model in the browser: predictions and maps of any technique, layer and target") { oneFile, portOpt, hostOpt };
serve.SetAction(pr => Serve.Run(pr.GetValue(oneFile)!, pr.GetValue(portOpt), pr.GetValue(hostOpt)!));
root.Subcommands.Add(serve);

var verifyOpt = new Option<bool>("--verify") { Description = "check each plugin assembly without running it: path, version, contract version, SHA-256, pins" };
var optionalFile = new Argument<string?>("pipeline") { Description = "also check this pipeline's plugins: entries and their pinned hashes", Arity = ArgumentArity.ZeroOrOne };
var plugins = new Command("plugins", "list loaded plugins and their components") { verifyOpt, optionalFile };
plugins.SetAction(pr => pr.GetValue(verifyOpt) ? Commands.VerifyPlugins(pr.GetValue(optionalFile), pr.GetValue(json)) : Commands.Plugins(pr.GetValue(json)));
root.Subcommands.Add(plugins);

var describe = new Command("describe", "show a component's options: types, defaults, descriptions") { idArg };
describe.SetAction(pr => Commands.Describe(pr.GetValue(idArg)!, pr.GetValue(json)));
root.Subcommands.Add(describe);

var layers = new Command("layers", "list the layers (and output shapes) of a pipeline's model") { oneFile, setOpt };
layers.SetAction(pr => Commands.Layers(pr.GetValue(oneFile)!, pr.GetValue(setOpt) ?? [], pr.GetValue(json)));
root.Subcommands.Add(layers);

// Authoring verbs (AuthoringCommands.cs): the pipeline schema for editors, and a plugin project from the template.
var schemaOut = new Option<string?>("--out") { Description = "write the schema to this file (default: stdout)" };
var schema = new Command("schema", "write the JSON Schema of pipeline files for the registered plugins (for editors)") { schemaOut };
schema.SetAction(pr => AuthoringCommands.Schema(pr.GetValue(schemaOut)));
root.Subcommands.Add(schema);

var pluginName = new Argument<string>("name") { Description = "plugin name, e.g. SharpSaliency or Acme.SharpSaliency (the technique id is its kebab-case last part)" };
var newOut = new Option<string?>("--out") { Description = "folder to create (default: ./NAME; must not exist or be empty)" };
var feedOpt = new Option<string?>("--feed") { Description = "local NuGet feed holding the packed Loupe.Abstractions (written to the project's NuGet.config)" };
var newPlugin = new Command("plugin", "create a plugin project: one technique, its options record, an xunit project and an example pipeline") { pluginName, newOut, feedOpt };
newPlugin.SetAction(pr => AuthoringCommands.NewPlugin(pr.GetValue(pluginName)!, pr.GetValue(newOut), pr.GetValue(feedOpt)));
root.Subcommands.Add(new Command("new", "create a project from a template") { newPlugin });

var runDir = new Argument<string>("run-folder") { Description = "a run's output folder (the one holding manifest.json)" };
var report = new Command("report", "(re)build report.html in a run folder from its manifest.json and artifacts") { runDir };
report.SetAction(pr => Commands.Report(pr.GetValue(runDir)!, pr.GetValue(json)));
root.Subcommands.Add(report);

var runA = new Argument<string>("run-a") { Description = "first run folder (A)" };
var runB = new Argument<string>("run-b") { Description = "second run folder (B)" };
var compareOut = new Option<string?>("--out") { Description = "folder for compare.html, compare.json and delta heatmaps (must not exist or be empty; default compare-<A>-vs-<B>)" };
var compare = new Command("compare", "compare two runs step by step: what differs, array deltas with heatmaps, metric deltas") { runA, runB, compareOut };
compare.SetAction(pr => Commands.Compare(pr.GetValue(runA)!, pr.GetValue(runB)!, pr.GetValue(compareOut), pr.GetValue(quiet), pr.GetValue(json)));
root.Subcommands.Add(compare);

return root.Parse(args).Invoke();
