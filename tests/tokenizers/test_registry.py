"""Hydra configs build working tokenisers; ``load_tokenizer`` picks the class from the file."""

from __future__ import annotations

import inspect
import json

import hydra.utils
import pytest
from hydra import compose, initialize_config_dir

from musicgen.config import CONF_DIR
from musicgen.tokenizers import PitchTokenizer, RemiTokenizer, load_tokenizer


def load(name: str):
    """``conf/tokenizer/<name>.yaml`` as Hydra composes it (its defaults list included)."""
    with initialize_config_dir(config_dir=str(CONF_DIR / "tokenizer"), version_base="1.3"):
        return compose(config_name=name)


EXPECTED = {
    "pitch": (PitchTokenizer, "pitch"),
    "remi": (RemiTokenizer, "remi"),
    "remi_bpe": (RemiTokenizer, "remi_bpe"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_yaml_instantiates_and_names_every_argument(name):
    cfg = load(name)
    tok = hydra.utils.instantiate(cfg)
    cls, kind = EXPECTED[name]
    assert type(tok) is cls and tok.kind == kind
    # every constructor argument is spelled out in the YAML, and nothing else is
    params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert set(cfg) - {"_target_"} == params


def test_yaml_values():
    remi = hydra.utils.instantiate(load("remi"))
    bpe = hydra.utils.instantiate(load("remi_bpe"))
    # the shipped configs mark every bar line (rests_cross_bars=false); the constructor keeps MidiTok's
    # encoding for tokeniser files written before the option
    assert remi.vocab_size == 362 and remi.config_dict() == RemiTokenizer(rests_cross_bars=False).config_dict()
    assert bpe.bpe_vocab_size == 512
    assert bpe.config_dict() == RemiTokenizer(bpe_vocab_size=512, rests_cross_bars=False).config_dict()
    v8 = hydra.utils.instantiate(load("remi_bpe"), bpe_vocab_size=1024)
    assert v8.bpe_vocab_size == 1024


def test_load_tokenizer_rejects_unknown_kind(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"musicgen": {"kind": "abc"}}))
    with pytest.raises(ValueError, match="unknown tokeniser kind 'abc'"):
        load_tokenizer(path)
    PitchTokenizer().save(path)  # an untrained pitch tokeniser saves and loads too
    assert load_tokenizer(path).vocab_size == 4
    with pytest.raises(ValueError, match="not a REMI"):
        RemiTokenizer.load(path)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_dict_is_json_and_stable(name):
    """The data cache hashes ``json.dumps(config_dict(), sort_keys=True)``."""
    make = lambda: hydra.utils.instantiate(load(name))  # noqa: E731
    assert json.dumps(make().config_dict(), sort_keys=True) == json.dumps(make().config_dict(), sort_keys=True)
