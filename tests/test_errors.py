"""One error policy for every entry point: a user's mistake is one `error: ...` line, exit 1."""

import pytest
from helpers import run_cli

from musicgen.errors import ConfigError, user_errors


@pytest.mark.parametrize("args, message", [
    (["musicgen.generate", "ckpt_path=/nonexistent"], "error: ckpt_path=/nonexistent does not exist"),
    (["musicgen.evaluate", "ckpt_path=/nonexistent"], "error: ckpt_path=/nonexistent does not exist"),
    (["musicgen.prepare", "corpora=[nope]"], "error: corpora=['nope']: ['nope'] unknown"),
])
def test_entry_points_print_one_line(args, message, tmp_path):
    module, *overrides = args
    proc = run_cli(module, [*overrides, f"hydra.run.dir={tmp_path}"], timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr[-2000:]


def test_config_problems_are_reported_together(tmp_path):
    proc = run_cli("musicgen.train", ["+version=v7", "model.n_heads=3", "sampling.top_p=2", "data.root=/no/midi",
                                      f"hydra.run.dir={tmp_path}"], timeout=120)
    assert proc.returncode == 1
    err = proc.stderr.strip()
    for problem in ("sampling: top_p=2", "model: d_model=512 is not divisible by n_heads=3",
                    "data.root=/no/midi does not exist"):
        assert problem in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "checkpoints").exists()


def test_other_exceptions_keep_their_traceback():
    @user_errors
    def task(kind):
        raise kind("boom")

    with pytest.raises(SystemExit, match="error: boom"):
        task(ConfigError)
    with pytest.raises(KeyError):
        task(KeyError)
