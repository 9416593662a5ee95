using System.Runtime.InteropServices;
using Loupe.Explorer;

namespace Loupe.Cli;

/// <summary><c>loupe serve</c>: the explorer over a pipeline's model and data until Ctrl+C.</summary>
internal static class Serve
{
    public static int Run(string file, int port, string host)
    {
        ExplorerServer server;
        try { server = ExplorerServer.Create(file, new ExplorerOptions { Port = port, Host = host }, new LoupeSettings { PluginDirectories = Commands.PluginDirs }); }
        catch (LoupeValidationException e)
        {
            foreach (var error in e.Errors) Console.Error.WriteLine(error);
            return 2;
        }
        using var stop = new ManualResetEventSlim();
        void OnSignal(PosixSignalContext c) { c.Cancel = true; stop.Set(); }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        try
        {
            var url = server.StartAsync().GetAwaiter().GetResult();
            Console.WriteLine($"Loupe explorer: {url}");
            Console.WriteLine("Open it in a browser (the token in the URL is required). Ctrl+C stops.");
            stop.Wait();
            return 0;
        }
        catch (IOException e)
        {
            Console.Error.WriteLine($"error: cannot listen on {host}:{port}: {e.Message}");
            return 2;
        }
        finally { server.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
    }
}
