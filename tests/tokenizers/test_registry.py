"""Hydra configs build working tokenisers; ``load_tokenizer`` picks the class from the file."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import hydra.utils
import pytest
from omegaconf import OmegaConf

from musicgen.tokenizers import PitchTokenizer, RemiTokenizer, load_tokenizer

CONF = Path(__file__).resolve().parents[2] / "conf" / "tokenizer"
EXPECTED = {
    "pitch": (PitchTokenizer, "pitch"),
    "remi": (RemiTokenizer, "remi"),
    "remi_bpe": (RemiTokenizer, "remi_bpe"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_yaml_instantiates_and_names_every_argument(name):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    tok = hydra.utils.instantiate(cfg)
    cls, kind = EXPECTED[name]
    assert type(tok) is cls and tok.kind == kind
    # every constructor argument is spelled out in the YAML, and nothing else is
    params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert set(cfg) - {"_target_"} == params


def test_yaml_values():
    remi = hydra.utils.instantiate(OmegaConf.load(CONF / "remi.yaml"))
    bpe = hydra.utils.instantiate(OmegaConf.load(CONF / "remi_bpe.yaml"))
    assert remi.vocab_size == 362 and remi.config_dict() == RemiTokenizer().config_dict()
    assert bpe.bpe_vocab_size == 512 and bpe.config_dict() == RemiTokenizer(bpe_vocab_size=512).config_dict()
    v8 = hydra.utils.instantiate(OmegaConf.load(CONF / "remi_bpe.yaml"), bpe_vocab_size=1024)
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
    make = lambda: hydra.utils.instantiate(OmegaConf.load(CONF / f"{name}.yaml"))  # noqa: E731
    assert json.dumps(make().config_dict(), sort_keys=True) == json.dumps(make().config_dict(), sort_keys=True)
