"""Settings that cannot work fail before any training, in a line or two saying what to change."""

import re

import pytest
from helpers import cli_overrides, gen_cfg, run_cli
from hydra.errors import ConfigCompositionException

from musicgen.cli.generate import run_generation
from musicgen.config import compose
from musicgen.errors import ConfigError
from musicgen.training.fit import train

#: (override, the message: a regular expression matched at its start)
BEFORE_DATA = [
    ("model.n_heads=3", "model: d_model=32 is not divisible by n_heads=3"),
    ("+model.n_kv_heads=2", "model: .*unexpected keyword argument 'n_kv_heads'"),
    ("sampling.temperature=5", r"sampling: temperature=5 is out of range: allowed 0.1..2.0"),
    ("sampling.top_k=-1", "sampling: top_k=-1 is out of range: allowed 0..500"),
    ("data.maestro_root=/no/maestro",
     "data.maestro_root=/no/maestro does not exist; set data.maestro_root=/path/to/maestro-v3.0.0"),
    ("data.root=/no/midi", "data.root=/no/midi does not exist; set data.root=/path/to/your/midi"),
    ("resume=true", "resume=true: no checkpoint at"),
    ("ckpt_path=/no/run", "ckpt_path=/no/run: no checkpoint at /no/run"),
    ("tokenizer.bpe_vocab_size=300",
     r"tokenizer: RemiTokenizer: bpe_vocab_size=300 must be larger than the base REMI vocabulary \(362 tokens\)"),
    ("data.val_frac=1.5", r"data.val_frac=1.5 must be in \[0, 1\)"),
]


@pytest.mark.parametrize("override, message", BEFORE_DATA, ids=[o for o, _ in BEFORE_DATA])
def test_fails_before_the_data_is_prepared(override, message, smoke_overrides, tmp_path):
    with pytest.raises(ConfigError) as e:
        train(compose("train", ["+version=v7", *smoke_overrides, override]))
    assert re.match(message, str(e.value)), str(e.value)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_a_vocabulary_that_disagrees_with_the_tokenizer_fails_before_training(smoke_overrides, tmp_path):
    with pytest.raises(ConfigError, match="model.vocab_size=300 disagrees with the tokeniser's vocabulary of 362; "
                                          "set model.vocab_size=null"):
        train(compose("train", ["+version=v6", *smoke_overrides, "model.vocab_size=300"]))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("override, message", [
    ("+version=v9", "Could not find 'version/v9'"),
    ("model=gpt", "Could not find 'model/gpt'"),
    ("optim.lrr=1", "Could not override 'optim.lrr'"),
    ("+lr=1", r"unknown top-level config keys \['lr'\]"),
])
def test_unknown_versions_options_and_keys_are_named(override, message):
    with pytest.raises((ConfigCompositionException, ValueError), match=message) as e:
        compose("train", [override])
    if "Could not find" in message:
        assert "Available options" in str(e.value)


def test_the_cli_prints_one_line_and_trains_nothing(smoke_overrides, tmp_path):
    proc = run_cli("musicgen.train", ["+version=v7", *cli_overrides(smoke_overrides), f"hydra.run.dir={tmp_path}/run",
                                      "model.n_heads=3"])
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["error: model: d_model=32 is not divisible by n_heads=3"]
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"This is not MIDI\n", "not a MIDI file"),
])
def test_generate_with_an_unusable_prompt_file_fails_before_loading(content, message, tmp_path):
    prompt = tmp_path / "prompt.mid"
    prompt.write_bytes(content)
    cfg = gen_cfg(f"{tmp_path}/no-run", f"{tmp_path}/out", **{"prompt.source": "file", "prompt.file": str(prompt)})
    with pytest.raises(ValueError, match=f"prompt.file={prompt}: {message}.*pass a MIDI file with notes"):
        run_generation(cfg)
