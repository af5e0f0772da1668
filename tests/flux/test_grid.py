import pytest

from fluxvit.errors import ConfigError
from fluxvit.flux.grid import FluxGrid, Grid


def test_grid_parse_and_tokens():
    g = Grid.parse("8x224", budget=1024)
    assert (g.frames, g.height, g.width) == (8, 224, 224)
    assert g.num_patches(14) == 2048 and g.num_tokens(14) == 1024
    assert str(g) == "8x224@1024"
    assert Grid.parse("4x112x168").num_patches(14) == 4 * 8 * 12


@pytest.mark.parametrize("text", ["8", "8x", "x224", "0x224", "8x-1", "abc"])
def test_grid_parse_rejects(text):
    with pytest.raises(ConfigError):
        Grid.parse(text)


def test_grid_checks_patch_and_budget():
    with pytest.raises(ConfigError, match="not a multiple of the patch size 14"):
        Grid(8, 100).num_patches(14)
    with pytest.raises(ConfigError, match="larger than the 128 tokens"):
        Grid(2, 112, budget=129).num_tokens(14)


def test_release_flux_grid():
    fg = FluxGrid()
    counts = [g.num_patches(14) for g in fg.grids]
    assert all(2048 <= c <= 6144 for c in counts)
    assert Grid(8, 224) in fg.grids and Grid(24, 224) in fg.grids  # 2048 and 6144: both ends
    assert Grid(24, 252) not in fg.grids and Grid(6, 168) not in fg.grids  # 7776 and 864
    assert len(fg.grids) == sum(
        1 for t in range(6, 25, 2) for r in range(112, 337, 28) if 2048 <= t * (r // 14) ** 2 <= 6144
    )
    with pytest.raises(ConfigError, match="larger than any flux grid"):
        fg.check_budget(7000)
    with pytest.raises(ConfigError, match="no grid"):
        FluxGrid(frames=(2, 2, 1), sizes=(28, 28, 14), min_tokens=100, max_tokens=200)
