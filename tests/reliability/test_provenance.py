"""Checkpoints record the hashes of their tokeniser, split and config; resuming or generating with
another tokeniser or split is refused, naming what differs."""

import json
import shutil

import pytest
import torch
from helpers import gen_cfg, smoke_override_list

from musicgen.checkpoint.provenance import sha256_text, split_file_lists
from musicgen.cli.generate import run_generation
from musicgen.config import compose
from musicgen.data.cache import load as load_cache
from musicgen.errors import ProvenanceError
from musicgen.tokenizers import RemiTokenizer
from musicgen.training.fit import train

#: small generation runs
TINY = ["num_samples=1", "max_new_tokens=4"]


def overrides(tmp, prepared, run):
    return ["+version=v7", *smoke_override_list(tmp, prepared, output_dir=run)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared_data_dir):
    tmp = tmp_path_factory.mktemp("provenance")
    train(compose("train", overrides(tmp, prepared_data_dir, tmp / "run")))
    return tmp


@pytest.fixture
def run(trained, tmp_path):
    """A private copy of the trained run directory (tests change it)."""
    return shutil.copytree(trained / "run", tmp_path / "run")


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_checkpoint_records_tokenizer_split_and_config_hashes(trained):
    run = trained / "run"
    for name in ("best.ckpt", "last.ckpt"):
        meta = load(run / "checkpoints" / name)["musicgen"]
        prov = meta["provenance"]
        assert prov["tokenizer_sha256"] == sha256_text((run / "tokenizer.json").read_text())
        assert prov["config_sha256"] == sha256_text((run / "config.yaml").read_text())
        cache = load_cache(meta["cache_path"])
        assert prov["split"] == split_file_lists(cache.meta)
        assert prov["split_sha256"] == sha256_text(json.dumps(prov["split"], sort_keys=True))
        assert prov["split"]["train"] and prov["split"]["val"]
        assert not set(prov["split"]["train"]) & set(prov["split"]["val"])


@pytest.mark.parametrize("change, message", [
    ("data.val_frac=0.5", r"the data split differs: train: \d+ files? missing \(folk/"),
    ("tokenizer.bpe_vocab_size=400", "the tokeniser differs"),
])
def test_resume_with_another_split_or_tokenizer_is_refused(change, message, trained, run, prepared_data_dir):
    before = (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    with pytest.raises(ProvenanceError, match=message) as e:
        train(compose("train", [*overrides(trained, prepared_data_dir, run), change, "resume=true"]))
    assert "cannot resume from" in str(e.value)
    assert (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before  # nothing trained


def test_resume_with_another_model_is_refused(trained, run, prepared_data_dir):
    with pytest.raises(ValueError, match=r"the model differs \(model.d_ff=64 there, 128 now\)"):
        train(compose("train", [*overrides(trained, prepared_data_dir, run), "model.d_ff=128", "resume=true"]))


def test_a_model_option_added_since_the_checkpoint_at_its_default_is_not_a_change(trained, run):
    """A checkpoint written before model.bar_position (and its bar_grid, bar_period) existed
    resumes: the same network, so no refusal; a real model change still is one."""
    from musicgen.training.resume import check_resume

    path = run / "checkpoints" / "last.ckpt"
    ckpt = load(path)
    now = json.loads(json.dumps(ckpt["musicgen"]))
    for meta in (ckpt["musicgen"]["model"], ckpt["musicgen"]["config"]["model"]):
        for key in ("bar_position", "bar_grid", "bar_period"):
            del meta[key]
    torch.save(ckpt, path)
    check_resume(str(path), now)
    now["config"]["model"]["bar_period"] = now["model"]["bar_period"] = 8
    with pytest.raises(ValueError, match=r"the model differs \(model.bar_period=None there, 8 now"):
        check_resume(str(path), now)


def test_generate_refuses_a_tokenizer_file_that_is_not_the_checkpoints(run, tmp_path):
    tok = run / "tokenizer.json"
    tok.write_text(tok.read_text().replace("\n", "\n "))  # same tokens, another file
    with pytest.raises(ProvenanceError, match="tokenizer.json is not the one this model was trained with"):
        run_generation(gen_cfg(run, tmp_path / "out", TINY, **{"prompt.source": "none"}))


def test_generate_refuses_a_tokenizer_of_another_vocabulary(run, tmp_path):
    ckpt = run / "checkpoints" / "best.ckpt"
    data = load(ckpt)
    other = RemiTokenizer()  # plain REMI: 362 tokens
    other.save(tmp_path / "remi.json")
    text = (tmp_path / "remi.json").read_text()
    data["musicgen"]["tokenizer"] = text
    data["musicgen"]["provenance"]["tokenizer_sha256"] = sha256_text(text)
    torch.save(data, ckpt)
    (run / "tokenizer.json").unlink()
    with pytest.raises(ProvenanceError, match=r"the tokeniser has 362 tokens but the model was built for \d+"):
        run_generation(gen_cfg(run, tmp_path / "out", TINY, **{"prompt.source": "none"}))


def test_generate_names_a_missing_tokenizer_file(run, tmp_path):
    ckpt = run / "checkpoints" / "best.ckpt"
    data = load(ckpt)
    del data["musicgen"]["tokenizer"]  # a checkpoint that only points at its run's file
    torch.save(data, ckpt)
    (run / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"its tokeniser file .*tokenizer.json is missing"):
        run_generation(gen_cfg(run, tmp_path / "out", TINY, **{"prompt.source": "none"}))


def test_generate_from_data_refuses_a_changed_cache(run, tmp_path):
    cache_path = load(run / "checkpoints" / "best.ckpt")["musicgen"]["cache_path"]
    copy = shutil.copytree(cache_path, tmp_path / "cache_copy")
    meta = json.loads((copy / "meta.json").read_text())
    meta["splits"]["val"]["names"] = meta["splits"]["val"]["names"][1:]
    (copy / "meta.json").write_text(json.dumps(meta))
    ckpt = run / "checkpoints" / "best.ckpt"
    data = load(ckpt)
    data["musicgen"]["cache_path"] = str(copy)
    torch.save(data, ckpt)
    with pytest.raises(ProvenanceError, match=r"the data split differs: val: 1 file missing"):
        run_generation(gen_cfg(run, tmp_path / "out", TINY))
