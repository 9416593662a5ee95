[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("Loupe.Tests")]
