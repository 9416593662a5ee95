using Loupe.Abstractions.Toolkit;

namespace Loupe.Evaluation.Tests;

/// <summary>NumpyRandomState against numpy 1.24's legacy RandomState, values printed by
/// <c>/usr/bin/python3 -c "import numpy as np; np.random.seed(42); print(np.random.randint(0, 9, 8).tolist())"</c> and the
/// like (several ranges, masks and rejections; a one-value range draws nothing).</summary>
public class NumpyRandomStateTests
{
    [Fact]
    public void RandIntIsNumpys()
    {
        Assert.Equal([6, 3, 7, 4, 6, 2, 6, 7], new NumpyRandomState(42).RandInt(0, 9, 8));
        Assert.Equal([102, 435, 860, 270, 106], new NumpyRandomState(42).RandInt(0, 999, 5));
        var seven = new NumpyRandomState(7);
        Assert.Equal([0, 0, 0], seven.RandInt(0, 1, 3));
        Assert.Equal([0, 1, 2, 0, 1, 2], seven.RandInt(0, 3, 6));
        Assert.Equal([1608637542, 1273642419, 1935803228], new NumpyRandomState(42).RandInt(0, int.MaxValue, 3));
        Assert.Throws<ArgumentException>(() => new NumpyRandomState(1).RandInt(3, 3, 1));
    }
}
