"""The stem and pointwise kernels built for other register tiles than the defaults.

Each Tile(mr, nr) below compiles both kernels once (the factories are memoised); they are
checked against the naive float64 references of test_kernels.py on sizes around the tile:
channels 1, odd and not a multiple of nr; rows not a multiple of mr and fewer than mr;
stem output rows narrower than mr. Outputs start as NaN, so an unwritten element fails.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mobinumba.kernels._tile import Tile
from mobinumba.kernels.conv import (TILE as STEM_TILE, conv3x3_nchw_to_nhwc_clamp,
                                    conv3x3_nchw_to_nhwc_clamp_kernel, pack_conv3x3_weights)
from mobinumba.kernels.pointwise import (TILE as POINTWISE_TILE, pack_pointwise_weights,
                                         pwconv_nhwc_clamp, pwconv_nhwc_clamp_kernel)
from mobinumba.kernels.targets import target_tiles
from test_kernels import ACTIVATIONS, assert_close, clamp, naive_conv3x3, random

# mr over {1, 3, 5, 8} and nr over {16, 32, 48}: four compiles of each kernel.
TILES = [Tile(1, 16), Tile(3, 48), Tile(5, 32), Tile(8, 16)]


def tile_id(tile):
    return str(tile)


def pointwise_shapes(tile):
    """(rows, Cin, Cout): rows around mr, Cout around nr."""
    mr, nr = tile.mr, tile.nr
    rows = sorted({1, max(1, mr - 1), mr, mr + 1, 3 * mr + 2, 61})
    channels = [(1, 1), (7, nr - 1), (13, nr), (33, nr + 1), (5, 2 * nr + 3)]
    return [(r, c_in, c_out) for r in rows for c_in, c_out in channels]


@pytest.mark.parametrize("tile", TILES, ids=tile_id)
def test_pwconv_tile(tile):
    kernel = pwconv_nhwc_clamp_kernel(tile)
    for rows, c_in, c_out in pointwise_shapes(tile):
        rng = np.random.default_rng(rows * 1000 + c_in * 10 + c_out)
        x = random(rng, rows, c_in)
        weight = random(rng, c_out, c_in, 1, 1) * 3
        bias = random(rng, c_out)
        for activation, act_max in ACTIVATIONS.items():
            out = np.full((rows, c_out), np.nan, np.float32)
            kernel(x, *pack_pointwise_weights(weight, bias, tile.nr), act_max, out)
            expected = clamp(x.astype(np.float64) @ weight[:, :, 0, 0].T.astype(np.float64)
                             + bias, act_max)
            assert_close(out, expected, f"pwconv tile {tile} {rows}x{c_in}->{c_out} {activation}")


@pytest.mark.parametrize("tile", TILES, ids=tile_id)
def test_conv3x3_stem_tile(tile):
    """Output widths below, at and above mr, and one not a multiple of it; strides 1 and 2."""
    kernel = conv3x3_nchw_to_nhwc_clamp_kernel(tile)
    mr, nr = tile.mr, tile.nr
    widths = sorted({1, max(1, mr - 1), mr, 2 * mr + 1, 29})
    for (c_in, c_out), out_w, stride in [(shape, w, s) for shape in ((3, nr), (1, 1), (3, nr + 5))
                                         for w in widths for s in (1, 2)]:
        rng = np.random.default_rng(c_out * 100 + out_w * 10 + stride)
        out_h = 3
        # Padded input exactly as large as the output needs, plus one spare column.
        height, width = (out_h - 1) * stride + 3, (out_w - 1) * stride + 4
        x = random(rng, 2, c_in, height, width)
        weight = random(rng, c_out, c_in, 3, 3) * 3
        bias = random(rng, c_out)
        act_max = ACTIVATIONS["relu6"]
        out = np.full((2, out_h, out_w, c_out), np.nan, np.float32)
        kernel(x, *pack_conv3x3_weights(weight, bias, nr), stride, act_max, out)
        expected = naive_conv3x3(x[:, :, :, :width - 1], weight, bias, stride, (0, 0, 0, 0), 1)
        assert_close(out, clamp(expected, act_max).transpose(0, 2, 3, 1),
                     f"stem tile {tile} {c_in}->{c_out} Wo={out_w} s{stride}")


def test_default_tiles_are_the_targets():
    """The module-level kernels are the compile target's tile builds (kernels/targets.py;
    stem 6x32, pointwise 6x64 with AVX-512)."""
    tiles = target_tiles()
    assert STEM_TILE == tiles.stem and POINTWISE_TILE == tiles.pointwise
    assert conv3x3_nchw_to_nhwc_clamp is conv3x3_nchw_to_nhwc_clamp_kernel(tiles.stem)
    assert pwconv_nhwc_clamp is pwconv_nhwc_clamp_kernel(tiles.pointwise)
    assert pack_pointwise_weights(np.ones((5, 3, 1, 1)), np.ones(5))[0].shape == (
        1, 3, tiles.pointwise.nr)
    assert pack_conv3x3_weights(np.ones((5, 3, 3, 3)), np.ones(5))[0].shape == (
        1, 27, tiles.stem.nr)


def test_mismatched_panel_width_is_refused():
    """Weights packed for another NR never reach the kernel: it would index past them."""
    pointwise, stem = POINTWISE_TILE, STEM_TILE  # the compile target's tiles
    other_pw, other_stem = pointwise.nr + 16, stem.nr + 16  # any other panel width
    rng = np.random.default_rng(0)
    x = random(rng, 7, 5)
    weight, bias = random(rng, 9, 5, 1, 1), random(rng, 9)
    out = np.full((7, 9), np.nan, np.float32)
    with pytest.raises(ValueError, match=rf"pwconv_nhwc_clamp for tile {pointwise} got weights "
                                         rf"packed in panels of {other_pw} .*nr={pointwise.nr}"):
        pwconv_nhwc_clamp(x, *pack_pointwise_weights(weight, bias, other_pw), np.float32(6),
                          out)
    packed, packed_bias = pack_pointwise_weights(weight, bias)
    with pytest.raises(ValueError, match=rf"\(bias {other_pw}\)"):
        pwconv_nhwc_clamp(x, packed, pack_pointwise_weights(weight, bias, other_pw)[1],
                          np.float32(6), out)
    image = random(rng, 1, 3, 9, 9)
    stem_out = np.full((1, 7, 7, 9), np.nan, np.float32)
    with pytest.raises(ValueError, match=rf"conv3x3_nchw_to_nhwc_clamp for tile {stem} .* "
                                         rf"pack_conv3x3_weights\(\.\.\., nr={stem.nr}\)"):
        conv3x3_nchw_to_nhwc_clamp(image, *pack_conv3x3_weights(random(rng, 9, 3, 3, 3), bias,
                                                                other_stem), 1, np.float32(6),
                                   stem_out)
    assert np.isnan(out).all() and np.isnan(stem_out).all()  # nothing ran


@pytest.mark.parametrize("mr,nr,problem", [(0, 16, "Tile.mr must be a positive integer"),
                                           (6, 2.0, "Tile.nr must be a positive integer"),
                                           (True, 16, "Tile.mr must be a positive integer"),
                                           (16, 128, "2048 accumulators, more than 1024")])
def test_bad_tile_is_refused(mr, nr, problem):
    with pytest.raises(ValueError, match=problem):
        Tile(mr, nr)


CACHE_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from mobinumba.kernels._tile import Tile
    from mobinumba.kernels.pointwise import pack_pointwise_weights, pwconv_nhwc_clamp_kernel
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (11, 19)).astype(np.float32)
    weight = rng.uniform(-1, 1, (37, 19, 1, 1)).astype(np.float32)
    bias = rng.uniform(-1, 1, 37).astype(np.float32)
    expected = np.maximum(x.astype(np.float64) @ weight[:, :, 0, 0].T + bias, 0)
    for text in sys.argv[1:]:
        tile = Tile(*(int(part) for part in text.split("x")))
        kernel = pwconv_nhwc_clamp_kernel(tile)
        out = np.full((11, 37), np.nan, np.float32)
        kernel(x, *pack_pointwise_weights(weight, bias, tile.nr), np.float32(np.inf), out)
        hits = sum(kernel.compiled.stats.cache_hits.values())
        print(text, bool(np.allclose(out, expected, rtol=1e-5, atol=1e-5)), hits)
""")


def test_tiles_have_separate_cache_entries(tmp_path):
    """Two tiles compiled into one fresh NUMBA_CACHE_DIR, then loaded by a new process in the
    other order: each must get its own machine code (a shared cache key would hand one tile
    the other's code, which reads panels of the wrong width)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))

    def run(*tiles):
        result = subprocess.run([sys.executable, "-c", CACHE_CHILD, *tiles], env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout.split()

    assert run("2x16", "3x32") == ["2x16", "True", "0", "3x32", "True", "0"]  # compiled
    assert run("3x32", "2x16") == ["3x32", "True", "1", "2x16", "True", "1"]  # from the cache
