"""The `jflow` command: subcommands, --help, errors, and `jflow extract` on real data."""

import numpy as np
import pytest

from jflow.cli import SUBCOMMANDS, main
from jflow.flow import FlowClip


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert f"jflow {name}" in capsys.readouterr().out


def test_extract_writes_a_flow_clip_from_the_bridge_episode(shared_data, tmp_path, capsys):
    out = tmp_path / "bridge_flow.npz"
    assert (
        main(["extract", str(shared_data / "bridge_spoon" / "episode.npz"), "--out", str(out)]) == 0
    )
    with np.load(out) as arrays:
        clip = FlowClip.from_arrays(dict(arrays)).validate()
    assert clip.flow.points.shape == (28, 256, 3)
    assert clip.flow.frame == "camera"
    # The spoon lies 0.8-1.0 m from the camera (monocular depth of the episode).
    depth = np.asarray(clip.flow.depth)[np.asarray(clip.flow.visible)]
    assert 0.7 < np.median(depth) < 1.0
    assert "3D flow of 256 points over 28 frames" in capsys.readouterr().out
    # An existing output is never replaced silently.
    assert (
        main(["extract", str(shared_data / "bridge_spoon" / "episode.npz"), "--out", str(out)]) == 2
    )
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_extract_reports_a_missing_file(tmp_path, capsys):
    code = main(["extract", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o.npz")])
    assert code == 2
    assert "missing.mp4" in capsys.readouterr().err
