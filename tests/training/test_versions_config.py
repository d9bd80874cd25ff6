"""Every version composes, reads like its row of the design table, and builds its model and data."""

import shutil

import pytest
from helpers import VERSIONS
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicgen.config import CONF_DIR, compose

# (model class, hidden sizes | transformer shape, input, tokeniser, bpe vocab, original vocab, max_files, schedule)
TABLE = {
    "v1": ("MelodyLSTM", [256, 512, 256], "float", "PitchTokenizer", None, None, 100),
    "v2": ("MelodyLSTM", [256, 512, 256], "float", "PitchTokenizer", None, 59, 24),
    "v3": ("MelodyLSTM", [256, 512, 256], "float", "PitchTokenizer", None, 635, 200),
    "v4": ("MelodyLSTM", [256, 512, 256], "float", "PitchTokenizer", None, 1279, 120),
    "v5": ("MelodyLSTM", [512, 512, 512], "float", "PitchTokenizer", None, 629, 275),
    "v6": ("MelodyLSTM", [512, 512, 512], "embedding", "RemiTokenizer", None, 362, 275),
    "v7": ("MusicTransformer", (8, 8, 512, 2048), "embedding", "RemiTokenizer", 512, 512, 275),
    "v8": ("MusicTransformer", (8, 8, 512, 2048), "embedding", "RemiTokenizer", 1024, 1024, 275),
}


def test_design_table_has_a_row_per_version_file():
    """The versions come from conf/version/: a new one needs its row here before it is tested."""
    assert sorted(TABLE) == VERSIONS


def base_overrides(tmp_path):
    return [f"paths.output_dir={tmp_path}/out", f"paths.data_dir={tmp_path}/data"]


@pytest.mark.parametrize("version", VERSIONS)
def test_version_matches_design_table(version, tmp_path):
    cfg = compose("train", [f"+version={version}", *base_overrides(tmp_path)])
    family, shape, inp, tok, bpe, original_vocab, max_files = TABLE[version]
    assert cfg.version.name == version
    assert cfg.model._target_.endswith(family)
    assert cfg.tokenizer._target_.endswith(tok)
    assert cfg.version.original_vocab == original_vocab
    assert cfg.data.max_files == max_files
    if family == "MelodyLSTM":
        assert list(cfg.model.hidden_sizes) == shape
        assert cfg.model.input_mode == inp
        assert cfg.objective.name == "seq2one" and cfg.data.mode == "seq2one"
        assert (cfg.data.seq_len, cfg.data.stride) == (100, 1)
        if inp == "embedding":
            assert cfg.model.embedding_dim == 128
    else:
        m = cfg.model
        assert (m.n_layers, m.n_heads, m.d_model, m.d_ff) == shape
        assert m.max_seq_len == 512
        assert cfg.tokenizer.bpe_vocab_size == bpe
        assert cfg.objective.name == "causal"
        assert (cfg.data.seq_len, cfg.data.stride, cfg.data.batch_size) == (256, 64, 64)
        assert cfg.trainer.accumulate_grad_batches == 2
        assert cfg.trainer.max_epochs == 100
    if version == "v7":
        assert cfg.optim.warmup_steps == 2000
        assert cfg.callbacks.early_stopping.patience == 15
    if version == "v8":
        assert cfg.optim.warmup_steps == 4000
        assert cfg.callbacks.early_stopping is None
        assert list(cfg.data.corpora) == ["folk", "chorales"]
        assert cfg.data.max_files_per_corpus.chorales is None


@pytest.mark.parametrize("version", VERSIONS)
def test_version_instantiates_model_and_datamodule(version, tmp_path):
    cfg = compose("train", [f"+version={version}", *base_overrides(tmp_path)])
    tokenizer = instantiate(cfg.tokenizer)
    dm = instantiate(cfg.data, tokenizer=tokenizer)
    assert dm.mode == cfg.objective.name
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["vocab_size"] = cfg.version.original_vocab or 128
    net = instantiate(model_cfg)
    assert type(net).__name__ == TABLE[version][0]
    instantiate(cfg.objective.module)(net=net, **cfg.optim)
    for cb in cfg.callbacks.values():
        if cb is not None:
            instantiate(cb)


def test_default_run_is_documented_v7_shape(tmp_path):
    cfg = compose("train", base_overrides(tmp_path))
    assert cfg.version.name == "default"
    assert cfg.model._target_.endswith("MusicTransformer") and cfg.tokenizer.bpe_vocab_size == 512


def test_unknown_version_lists_valid_ones(tmp_path):
    with pytest.raises(ConfigCompositionException) as e:
        compose("train", ["+version=v9", *base_overrides(tmp_path)])
    msg = str(e.value)
    assert "v9" in msg and "v1" in msg and "v8" in msg


def test_presets_apply_after_the_version(tmp_path):
    cfg = compose("train", ["+version=v8", "preset=smoke", *base_overrides(tmp_path)])
    assert cfg.model.d_model == 32 and cfg.data.seq_len == 32 and cfg.trainer.max_steps == 4
    cfg = compose("train", ["+version=v6", "preset=smoke", *base_overrides(tmp_path)])
    assert list(cfg.model.hidden_sizes) == [16, 16, 16] and cfg.model.input_mode == "embedding"
    cfg = compose("train", ["+version=v7", "preset=cpu", *base_overrides(tmp_path)])
    assert cfg.model.d_model == 256 and cfg.trainer.max_time is not None


def test_misspelt_key_in_a_version_file_fails(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    text = (conf / "version" / "v7.yaml").read_text().replace("  n_layers: 8", "  n_layer: 8")
    (conf / "version" / "v7_typo.yaml").write_text(text)
    cfg = compose("train", ["+version=v7_typo", *base_overrides(tmp_path)], conf_dir=conf)
    with pytest.raises(Exception, match="n_layer"):
        instantiate(OmegaConf.to_container(cfg.model, resolve=True) | {"vocab_size": 512})


def test_misspelt_top_level_key_fails(tmp_path):
    with pytest.raises(Exception, match="optm"):
        compose("train", ["+optm.lr=0.1", *base_overrides(tmp_path)])


def test_command_line_wins_over_the_preset(tmp_path):
    cfg = compose("train", ["+version=v7", "preset=smoke", "model.dropout=0.3", "trainer.max_steps=7",
                            *base_overrides(tmp_path)])
    assert cfg.model.dropout == 0.3 and cfg.trainer.max_steps == 7
    assert cfg.model.d_model == 32  # the rest of the preset still applies
