"""The DPO objective: its loss against a hand computation, sequence log-probabilities against a
direct sum, the frozen reference, and a smoke DPO run from a smoke checkpoint that raises the
chosen-over-rejected log-ratio on its training pairs (critic preferences)."""

import json
import math

import numpy as np
import pytest
import torch
from helpers import dpo_overrides

from musicgen.api import MusicModel
from musicgen.config import compose
from musicgen.constants import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID
from musicgen.errors import ConfigError
from musicgen.training.dpo import dpo_loss, pad_pieces, sequence_logp
from musicgen.training.fit import train


def test_dpo_loss_by_hand():
    pc, pr = torch.tensor([-10.0, -20.0]), torch.tensor([-12.0, -15.0])
    rc, rr = torch.tensor([-11.0, -19.0]), torch.tensor([-11.0, -16.0])
    loss, margin = dpo_loss(pc, pr, rc, rr, beta=0.5)
    # pair 1: (-10 + 11) - (-12 + 11) = 2; pair 2: (-20 + 19) - (-15 + 16) = -2
    assert margin.tolist() == [2.0, -2.0]
    by_hand = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(1.0)))) / 2
    assert loss.item() == pytest.approx(by_hand)


def test_sequence_logp_sums_the_targets_and_skips_padding():
    torch.manual_seed(0)
    table = torch.randn(10, 10)

    class Bigram(torch.nn.Module):  # logits of the next token from the current one
        def forward(self, x):
            return table[x]

    x, y = pad_pieces([[1, 4, 5, 2], [1, 7]], max_len=8)
    assert x.tolist() == [[1, 4, 5], [1, PAD_ID, PAD_ID]] and y.tolist() == [[4, 5, 2], [7, IGNORE_INDEX, IGNORE_INDEX]]
    logp = sequence_logp(Bigram(), x, y)
    lsm = table.log_softmax(-1)
    assert logp[0].item() == pytest.approx((lsm[1, 4] + lsm[4, 5] + lsm[5, 2]).item())
    assert logp[1].item() == pytest.approx(lsm[1, 7].item())
    x, y = pad_pieces([[1, 4, 5, 2]], max_len=2)  # cut to the window
    assert x.tolist() == [[1, 4]] and y.tolist() == [[4, 5]]


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_smoke_dpo_raises_the_chosen_log_ratio(smoke_run, smoke_overrides, tmp_path):
    cfg = compose("train", dpo_overrides(smoke_run, smoke_overrides))
    train(cfg)
    run = tmp_path / "run"
    saved = json.loads((run / "preferences.json").read_text())
    assert saved["source"] == "critic" and 1 <= len(saved["pairs"]) <= 12
    start = MusicModel.load(smoke_run).net.eval()
    tuned = MusicModel.load(run / "checkpoints" / "last.ckpt").net.eval()
    pairs = saved["pairs"]
    x, y = pad_pieces([c for c, _ in pairs] + [r for _, r in pairs], cfg.data.seq_len)
    with torch.no_grad():
        before, after = sequence_logp(start, x, y), sequence_logp(tuned, x, y)
    b = len(pairs)
    margin = (after[:b] - before[:b]) - (after[b:] - before[b:])  # the DPO margin on the training pairs
    assert margin.mean() > 0
    # it trained on the pairs (the DPO margin logged), and validated on the real pieces as before
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/dpo_margin", "train/dpo_accuracy", "val/loss"} <= set(header)
    # the start run is untouched and the reference is not part of the tuned checkpoint
    assert all(torch.equal(p, q) for p, q in zip(start.state_dict().values(),
                                                  MusicModel.load(smoke_run).net.state_dict().values()))
    keys = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert not any("reference" in k for k in keys)
    # best.ckpt is the latest (val/loss is watched, not selected on): evaluating the run evaluates the tuned model
    steps = [torch.load(run / "checkpoints" / f"{n}.ckpt", map_location="cpu", weights_only=False)["global_step"]
             for n in ("best", "last")]
    assert steps[0] == steps[1] == 6


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_the_reference_is_frozen_and_outside_the_parameters(smoke_run, smoke_overrides):
    from hydra.utils import instantiate

    cfg = compose("train", dpo_overrides(smoke_run, smoke_overrides))
    start = MusicModel.load(smoke_run)
    model_cfg = dict(start.metadata.model)
    module = instantiate(cfg.objective.module)(net=instantiate(model_cfg), metadata=start.metadata.to_dict())
    assert all(not p.requires_grad for p in module.reference.parameters())
    assert not {id(p) for p in module.reference.parameters()} & {id(p) for p in module.parameters()}
    assert all(torch.equal(p, q) for p, q in zip(module.net.state_dict().values(), start.net.state_dict().values()))
    module.net.eval()  # no dropout: the network and its reference compute the same
    x, y = pad_pieces([[1, 5, 6, 7, 2], [1, 8, 9, 2]], max_len=16)
    loss, margin = module.pair_margins(x, y)
    assert margin.abs().max().item() < 1e-4  # the network starts at the reference
    loss.backward()
    assert all(p.grad is None for p in module.reference.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.net.parameters())


def test_study_preferences_are_the_answered_pairs_encoded(folk_midi_files, tmp_path):
    """The extension point for listeners: a study's SQLite answers (musicgen.data.preferences) become
    (chosen, rejected) id lists, the preferred piece chosen, ties left out."""
    import shutil

    from musicgen.data.preferences import PreferenceStore, StudyPiece
    from musicgen.tokenizers import RemiTokenizer
    from musicgen.training.dpo import study_preferences

    for i in range(3):
        shutil.copy(folk_midi_files[i], tmp_path / f"p{i}.mid")
    store = PreferenceStore(tmp_path / "study.sqlite")
    store.add_study([StudyPiece(f"p{i}", "model" if i else "real", f"p{i}.mid") for i in range(3)],
                    [("p0", "p1"), ("p0", "p2")])
    store.record("ann", 1, "p1", "p0", "right")  # p0 preferred over p1
    store.record("ann", 2, "p0", "p2", "none")  # a tie: no pair
    tok = RemiTokenizer()
    pairs = study_preferences(tmp_path / "study.sqlite", tok)
    encoded = [[1, *tok.encode(tmp_path / f"p{i}.mid"), 2] for i in range(2)]
    assert pairs == [(encoded[0], encoded[1])]


def test_dpo_needs_a_starting_run(smoke_overrides):
    from hydra.utils import instantiate

    cfg = compose("train", ["+version=v7", *smoke_overrides, "objective=dpo"])
    with pytest.raises(ConfigError, match="init_from"):
        instantiate(cfg.objective.module)(net=torch.nn.Linear(1, 1))


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_critic_pairs_are_the_best_and_worst_of_each_group_of_candidates(smoke_run):
    """Each pair is the i-th of each block of ``pairs`` samples: the one the critic finds the most
    real chosen over the least real (with 2 candidates: the more real of two, as ``prefer`` says),
    each cut to what the critic read of it: the same notes as ``first_notes`` at the group's
    shortest note count, no EOS, and not one token more than they need."""
    from musicgen.metrics.critic import critic_scores, fit_critic, prefer
    from musicgen.metrics.samples import body, first_notes, note_count
    from musicgen.training.dpo import critic_preferences

    start = MusicModel.load(smoke_run)
    train_split, tok = start.pieces_of("train"), start.tokenizer
    originals = train_split.originals()
    real_idx = np.random.default_rng(0).choice(originals, size=min(len(originals), 8), replace=False)
    real = [tok.decode(body(train_split.doc(i))) for i in real_idx]
    fake = start.generate(8, seed=0, max_new_tokens=48, batch_size=32)
    critic = fit_critic(real, [tok.decode(p.ids) for p in fake], seed=0)  # the critic critic_preferences trains
    for candidates in (2, 3):
        pairs = critic_preferences(start, train_split, 4, 8, None, 48, 0, candidates=candidates)
        drawn = start.generate(4 * candidates, seed=1, max_new_tokens=48, batch_size=32)
        expected, cut = [], False
        for i in range(4):
            group = drawn[i::4]
            s = critic_scores(critic, [tok.decode(p.ids) for p in group])
            if s.max() > s.min():
                k = min(note_count(tok.decode(p.ids)) for p in group)
                pair = []
                for j in (int(s.argmax()), int(s.argmin())):
                    read = first_notes(tok.decode(group[j].ids), k)
                    n = next(n for n in range(len(group[j].ids) + 1)
                             if note_count(tok.decode(group[j].ids[:n])) == note_count(read))
                    assert tok.decode(group[j].ids[:n]).tracks[0].notes.numpy()["pitch"].tolist() \
                        == read.tracks[0].notes.numpy()["pitch"].tolist()
                    pair.append([BOS_ID, *group[j].ids[:n]])
                    cut |= n < len(group[j].ids)
                expected.append(tuple(pair))
                if candidates == 2:
                    assert (prefer(critic, tok.decode(group[0].ids), tok.decode(group[1].ids)) > 0) == (s.argmax() == 0)
        assert pairs == expected and pairs
        assert not any(EOS_ID in c or EOS_ID in r for c, r in pairs)
        assert cut  # the longer pieces lost the tails the critic never read


def test_dpo_needs_two_candidates_or_more(smoke_overrides):
    from hydra.utils import instantiate

    cfg = compose("train", ["+version=v7", *smoke_overrides, "objective=dpo", "objective.module.init_from=x",
                            "objective.module.candidates=1"])
    with pytest.raises(ConfigError, match="candidates >= 2"):
        instantiate(cfg.objective.module)(net=torch.nn.Linear(1, 1))
