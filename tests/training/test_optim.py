"""musicgen.training.optim: the warmup + cosine and warmup-stable-decay schedules (functions and
checkpointable objects), AdamW's parameter groups, Muon's groups and ``build_optimizer``."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from musicgen.constants import IGNORE_INDEX
from musicgen.errors import ConfigError
from musicgen.models import MelodyLSTM, MusicTransformer
from musicgen.training import CausalLM
from musicgen.training.callbacks import Budget
from musicgen.training.optim import (
    MuonAdamW,
    WarmupCosine,
    WarmupStableDecay,
    build_optimizer,
    param_groups,
    warmup_cosine,
    warmup_stable_decay,
)

WARMUP, TOTAL, FLOOR = 4, 20, 0.1


def tiny_transformer() -> MusicTransformer:
    return MusicTransformer(vocab_size=64, n_layers=2, n_heads=2, d_model=32, d_ff=64, max_seq_len=64)


def tiny_lstm(input_mode: str) -> MelodyLSTM:
    return MelodyLSTM(vocab_size=23, hidden_sizes=[8, 8], input_mode=input_mode, embedding_dim=4,
                      context_len=5, attention_heads=2)


# warmup_cosine


def test_warmup_is_linear_and_reaches_the_peak_at_its_last_step():
    values = [warmup_cosine(s, WARMUP, TOTAL, FLOOR) for s in range(WARMUP)]
    assert values == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert warmup_cosine(WARMUP, WARMUP, TOTAL, FLOOR) == pytest.approx(1.0)  # the decay starts at the peak


def test_the_floor_is_reached_at_total_steps_and_kept_after():
    for step in (TOTAL, TOTAL + 1, 2 * TOTAL, 10**6):
        assert warmup_cosine(step, WARMUP, TOTAL, FLOOR) == pytest.approx(FLOOR), step
    assert warmup_cosine(TOTAL - 1, WARMUP, TOTAL, FLOOR) > FLOOR


def test_cosine_values_by_hand():
    # halfway through the decay (step 4 + 16 / 2): cos(pi / 2) = 0, so half way from the peak to the floor
    assert warmup_cosine(12, WARMUP, TOTAL, FLOOR) == pytest.approx(0.1 + 0.9 * 0.5)
    # a quarter of the way (step 8): 0.1 + 0.9 * (1 + cos(pi / 4)) / 2
    assert warmup_cosine(8, WARMUP, TOTAL, FLOOR) == pytest.approx(0.1 + 0.9 * (1 + math.sqrt(0.5)) / 2)
    assert warmup_cosine(12, 0, 20, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.6)))


def test_no_warmup_starts_at_the_peak_and_decays():
    values = [warmup_cosine(s, 0, 10, FLOOR) for s in range(12)]
    assert values[0] == pytest.approx(1.0)
    assert values[5] == pytest.approx((1.0 + FLOOR) / 2)
    assert values[10] == pytest.approx(FLOOR) and values[11] == pytest.approx(FLOOR)
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises


# WarmupCosine


def test_warmup_cosine_object_equals_the_function():
    schedule = WarmupCosine(WARMUP, TOTAL, FLOOR)
    for step in range(TOTAL + 5):
        assert schedule(step) == warmup_cosine(step, WARMUP, TOTAL, FLOOR), step


def _scheduler(schedule: WarmupCosine) -> LambdaLR:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    return LambdaLR(opt, schedule)


def test_warmup_cosine_round_trips_through_the_scheduler_state_dict():
    saved = _scheduler(WarmupCosine(WARMUP, TOTAL, FLOOR))
    saved.lr_lambdas[0].total_steps = 50  # as a time budget sets it during a run
    state = saved.state_dict()
    assert state["lr_lambdas"] == [{"warmup_steps": WARMUP, "total_steps": 50, "min_lr_ratio": FLOOR}]

    loaded = _scheduler(WarmupCosine(WARMUP, TOTAL, FLOOR))
    loaded.load_state_dict(state)
    restored = loaded.lr_lambdas[0]
    assert isinstance(restored, WarmupCosine) and restored.total_steps == 50
    assert restored == WarmupCosine(WARMUP, 50, FLOOR)
    assert restored.__dict__ == saved.lr_lambdas[0].__dict__
    assert WarmupCosine(**state["lr_lambdas"][0]) == restored  # how a checkpoint's schedule is read back


# param_groups


def _no_decay_names(net: nn.Module) -> set[str]:
    """What must not decay, by name: norms, biases (1-D) and embedding weights."""
    embeddings = {f"{name}.weight" for name, m in net.named_modules() if isinstance(m, nn.Embedding)}
    return {name for name, p in net.named_parameters() if p.ndim < 2 or name in embeddings}


def _check_groups(net: nn.Module, weight_decay: float = 0.1) -> tuple[set[str], set[str]]:
    groups = param_groups(net, weight_decay)
    assert [g["weight_decay"] for g in groups] == [weight_decay, 0.0]
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable  # each trainable parameter exactly once
    names = {id(p): n for n, p in net.named_parameters()}  # tied weights: the first name
    decay, keep = ({names[id(p)] for p in g["params"]} for g in groups)
    assert keep == _no_decay_names(net) & {names[i] for i in trainable}
    return decay, keep


def test_transformer_groups_tied_embeddings():
    net = tiny_transformer()
    assert net.lm_head.weight is net.tok_emb.weight
    decay, keep = _check_groups(net)
    assert "tok_emb.weight" in keep  # the tied embedding / output matrix does not decay
    assert {"norm.weight", "layers.0.attn_norm.weight", "layers.1.ffn_norm.weight"} <= keep
    assert {"layers.0.attn.qkv.weight", "layers.0.attn.proj.weight", "layers.1.ffn.w13.weight"} <= decay
    assert not any("norm" in n or n.endswith("bias") or "emb" in n for n in decay)


def test_transformer_groups_untied_embeddings():
    net = tiny_transformer()
    net.lm_head.weight = nn.Parameter(net.tok_emb.weight.detach().clone())  # untied: a matrix of its own
    decay, keep = _check_groups(net)
    assert "tok_emb.weight" in keep and "lm_head.weight" in decay


@pytest.mark.parametrize("input_mode", ["embedding", "float"])
def test_lstm_groups(input_mode):
    net = tiny_lstm(input_mode)
    decay, keep = _check_groups(net)
    assert ("embed.weight" in keep) == (input_mode == "embedding")
    assert {"head.bias", "lstms.0.bias_ih_l0", "lstms.1.bias_hh_l0", "attn.in_proj_bias"} <= keep
    assert {"head.weight", "lstms.0.weight_ih_l0", "lstms.1.weight_hh_l0", "attn.in_proj_weight"} <= decay


def test_frozen_parameters_are_left_out():
    net = tiny_transformer()
    net.norm.weight.requires_grad_(False)
    net.layers[0].attn.qkv.weight.requires_grad_(False)
    decay, keep = _check_groups(net)
    assert "norm.weight" not in keep and "layers.0.attn.qkv.weight" not in decay


# build_optimizer


@pytest.mark.parametrize("fused", [True, False])
def test_build_optimizer(fused):
    net = tiny_transformer()
    opt, sched = build_optimizer(net, total_steps=TOTAL, lr=1e-3, weight_decay=0.1, betas=[0.9, 0.95],
                                 warmup_steps=WARMUP, min_lr_ratio=FLOOR, fused=fused)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["fused"] is fused
    assert opt.defaults["foreach"] is (None if fused else True)
    assert opt.defaults["betas"] == (0.9, 0.95)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert sched.lr_lambdas[0] == WarmupCosine(WARMUP, TOTAL, FLOOR)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3 * 0.25] * 2)  # the first warmup step

    loss = net(torch.randint(0, 64, (2, 8))).float().square().mean()
    loss.backward()
    before = net.tok_emb.weight.detach().clone()
    opt.step()
    sched.step()
    assert not torch.equal(before, net.tok_emb.weight)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3 * 0.5] * 2)


# warmup_stable_decay / WarmupStableDecay


def test_wsd_at_its_milestones():
    # 20 steps, warmup 4, decay over the last 0.25 * 20 = 5 steps: 15 .. 19, to FLOOR at 20
    values = [warmup_stable_decay(s, WARMUP, TOTAL, FLOOR, 0.25) for s in range(TOTAL + 3)]
    assert values[:WARMUP] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # the same warmup as the cosine's
    assert values[:WARMUP] == pytest.approx([warmup_cosine(s, WARMUP, TOTAL, FLOOR) for s in range(WARMUP)])
    assert values[WARMUP:16] == [1.0] * 12  # stable at the peak until the decay starts (step 15)
    assert values[15] == 1.0 and values[16] == pytest.approx(1.0 - 0.9 / 5)
    assert values[18] == pytest.approx(1.0 - 0.9 * 3 / 5)  # linear: 3/5 of the way down
    assert values[TOTAL:] == pytest.approx([FLOOR] * 3)  # the floor at total_steps, and after it
    assert all(a >= b for a, b in zip(values[WARMUP - 1:], values[WARMUP:]))  # never rises after warmup


def test_wsd_decay_sized_to_total_steps_and_never_before_warmup():
    # the decay phase follows total_steps, as the time budget sets it during a run
    schedule = WarmupStableDecay(WARMUP, TOTAL, FLOOR, decay_frac=0.2)
    assert schedule(15) == 1.0 and schedule(17) < 1.0  # decay from step 16 of 20
    schedule.total_steps = 100
    assert schedule(17) == 1.0 and schedule(79) == 1.0 and schedule(90) < 1.0  # now from step 80
    assert schedule(100) == pytest.approx(FLOOR)
    # a run shorter than warmup + decay: the decay starts when the warmup ends
    assert warmup_stable_decay(4, 4, 6, FLOOR, 0.5) == 1.0
    assert warmup_stable_decay(5, 4, 6, FLOOR, 0.5) == pytest.approx(1.0 - 0.9 / 2)
    with pytest.raises(ConfigError, match="optim.decay_frac=0.0 must be in"):
        WarmupStableDecay(WARMUP, TOTAL, FLOOR, decay_frac=0.0)


def test_wsd_round_trips_through_the_scheduler_state_dict_and_the_budget_finds_it():
    saved = _scheduler(WarmupStableDecay(WARMUP, TOTAL, FLOOR, 0.3))
    saved.lr_lambdas[0].total_steps = 50  # what Budget does during a run
    loaded = _scheduler(WarmupStableDecay(WARMUP, TOTAL, FLOOR, 0.3))
    loaded.load_state_dict(saved.state_dict())
    assert loaded.lr_lambdas[0] == WarmupStableDecay(WARMUP, 50, FLOOR, 0.3)
    trainer = SimpleNamespace(lr_scheduler_configs=[SimpleNamespace(scheduler=loaded)])
    assert Budget._schedule(trainer) is loaded.lr_lambdas[0]  # so a time budget sizes its decay


# Muon


def _names(net: nn.Module, params) -> set[str]:
    names = {id(p): n for n, p in net.named_parameters()}
    return {names[id(p)] for p in params}


@pytest.mark.parametrize("tied", [True, False])
def test_muon_groups_are_the_blocks_matrices_and_adamw_takes_the_rest(tied):
    net = tiny_transformer()
    if not tied:
        net.lm_head.weight = nn.Parameter(net.tok_emb.weight.detach().clone())
    opt, _ = build_optimizer(net, total_steps=TOTAL, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95),
                             warmup_steps=WARMUP, min_lr_ratio=FLOOR, name="muon", muon_lr=0.02)
    assert isinstance(opt, MuonAdamW) and isinstance(opt.muon, torch.optim.Muon)
    assert opt.param_groups == opt.muon.param_groups + opt.adamw.param_groups  # the same group dicts
    muon = _names(net, [p for g in opt.muon.param_groups for p in g["params"]])
    assert muon == {f"layers.{i}.{w}.weight" for i in range(2) for w in ("attn.qkv", "attn.proj", "ffn.w13", "ffn.w2")}
    decay, keep = (_names(net, g["params"]) for g in opt.adamw.param_groups)
    assert decay == (set() if tied else {"lm_head.weight"})  # an untied head is a matrix outside the blocks
    norms = {f"layers.{i}.{n}_norm.weight" for i in range(2) for n in ("attn", "ffn")}
    assert keep == {"tok_emb.weight", "norm.weight"} | norms
    assert not muon & (decay | keep) and len(muon | decay | keep) == len(list(net.parameters()))
    group = opt.muon.param_groups[0]
    assert group["initial_lr"] == 0.02 and group["weight_decay"] == 0.1
    assert group["adjust_lr_fn"] == "match_rms_adamw" and group["momentum"] == 0.95 and group["nesterov"]
    assert [g["initial_lr"] for g in opt.adamw.param_groups] == [1e-3, 1e-3]
    # muon_lr None: Muon runs at optim.lr
    opt, _ = build_optimizer(net, TOTAL, 1e-3, 0.1, (0.9, 0.95), WARMUP, FLOOR, name="muon")
    assert opt.muon.param_groups[0]["initial_lr"] == 1e-3


def _train_steps(net, opt, sched, steps: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        net(torch.randint(0, 64, (2, 8), generator=g)).float().square().mean().backward()
        opt.step()
        sched.step()


def test_muon_adamw_steps_both_follows_the_schedule_and_resumes_exactly():
    args = dict(total_steps=TOTAL, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), warmup_steps=WARMUP,
                min_lr_ratio=FLOOR, fused=False, name="muon", muon_lr=0.02, schedule="wsd")
    torch.manual_seed(0)
    net = tiny_transformer().eval()  # no dropout: the continuation depends on the states alone
    opt, sched = build_optimizer(net, **args)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    _train_steps(net, opt, sched, 3)
    assert all(not torch.equal(before[n], p) for n, p in net.named_parameters())  # both optimizers moved theirs
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.02 * 1.0] + [1e-3 * 1.0] * 2)  # step 3 of warmup 4
    # a checkpoint's optimizer and scheduler states continue to the same weights as an unbroken run
    state = {"net": {k: v.clone() for k, v in net.state_dict().items()},
             "opt": copy.deepcopy(opt.state_dict()), "sched": sched.state_dict()}
    _train_steps(net, opt, sched, 4, seed=1)
    torch.manual_seed(1)
    resumed = tiny_transformer().eval()
    resumed.load_state_dict(state["net"])
    opt2, sched2 = build_optimizer(resumed, **args)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    assert opt2.muon.state is opt2.state and opt2.adamw.state is opt2.state
    assert opt2.muon.param_groups[0] is opt2.param_groups[0]  # re-linked to the loaded groups
    _train_steps(resumed, opt2, sched2, 4, seed=1)
    for (name, a), b in zip(net.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)


def test_optimizer_and_schedule_names_are_checked():
    net = tiny_transformer()
    with pytest.raises(ConfigError, match="optim.name='sgd' must be one of adamw, muon"):
        build_optimizer(net, TOTAL, 1e-3, 0.1, (0.9, 0.95), WARMUP, FLOOR, name="sgd")
    with pytest.raises(ConfigError, match="optim.schedule='linear' must be one of cosine, wsd"):
        build_optimizer(net, TOTAL, 1e-3, 0.1, (0.9, 0.95), WARMUP, FLOOR, schedule="linear")
    with pytest.raises(ConfigError, match="optim.name=muon needs a network with transformer blocks"):
        build_optimizer(tiny_lstm("embedding"), TOTAL, 1e-3, 0.1, (0.9, 0.95), WARMUP, FLOOR, name="muon")


# z-loss


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("z_loss", [0.0, 0.5])
def test_z_loss_adds_log_z_squared_per_target_in_training_only(z_loss):
    torch.manual_seed(0)
    net = MusicTransformer(vocab_size=64, n_layers=2, n_heads=2, d_model=32, d_ff=64, max_seq_len=64, dropout=0.0)
    module = CausalLM(net, z_loss=z_loss)  # no dropout: the same logits in training and here
    x = torch.randint(0, 64, (2, 8))
    y = torch.randint(0, 64, (2, 8))
    y[0, :3] = IGNORE_INDEX  # padded targets count for neither loss
    logits = module.net(x).float()
    keep = y != IGNORE_INDEX
    ce = torch.nn.functional.cross_entropy(logits[keep], y[keep])
    z = logits[keep].logsumexp(-1).square().mean()
    assert z > 1.0  # large enough for the comparison below to tell the two apart
    module.train()
    torch.testing.assert_close(module.training_step((x, y), 0), ce + z_loss * z)
    module.eval()  # validation: the cross-entropy alone, whatever z_loss
    loss, n = module._step((x, y))
    torch.testing.assert_close(loss, ce)
    assert int(n) == int(keep.sum())
    with pytest.raises(ConfigError, match="optim.z_loss=-1 must be >= 0"):
        CausalLM(tiny_transformer(), z_loss=-1)
