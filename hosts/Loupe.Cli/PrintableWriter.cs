using System.Text;
using Loupe.Abstractions;

namespace Loupe.Cli;

/// <summary>Console output through which nothing read from a file (tensor, node and layer names, labels, paths in
/// errors) can reach the terminal as a control sequence: control characters become '?' (see
/// <see cref="SafeFile.Printable"/>). The CLI's own colours and progress redraws use <see cref="RawError"/>.</summary>
internal sealed class PrintableWriter(TextWriter inner) : TextWriter
{
    /// <summary>The original standard error, for the CLI's own escape sequences (clean every text it writes).</summary>
    public static TextWriter RawError { get; private set; } = Console.Error;

    /// <summary>Routes standard output and error through printable writers.</summary>
    public static void Install()
    {
        RawError = Console.Error;
        Console.SetOut(new PrintableWriter(Console.Out));
        Console.SetError(new PrintableWriter(Console.Error));
    }

    public override Encoding Encoding => inner.Encoding;
    public override void Write(char value) => inner.Write(SafeFile.Unsafe(value) ? '?' : value);
    public override void Write(string? value) { if (value is not null) inner.Write(SafeFile.Printable(value)); }
    public override void Write(char[] buffer, int index, int count) => Write(new string(buffer, index, count));
    public override void WriteLine(string? value) { Write(value); inner.WriteLine(); }
    public override void WriteLine() => inner.WriteLine();
    public override void Flush() => inner.Flush();
}
