"""Chapter 8's alignment pieces: DPO and GRPO, against values worked out by hand, and in
the one training loop (learning, checkpoint and resume bit-exact)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from companion.align import (
    DPOTask,
    GRPOTask,
    PreferenceDataset,
    dpo_loss,
    group_advantages,
    grpo_loss,
    preference_loader,
    sample_groups,
    sequence_log_probs,
)
from companion.config import GPTConfig
from companion.finetune.instruction import collate_instructions, encode_example
from companion.losses import IGNORE_INDEX
from companion.model import GPTModel
from companion.tokenizers import BPETokenizer
from companion.train import TrainOptions, train

EOS = 256
BYTES = BPETokenizer([], special_tokens={"<|endoftext|>": EOS})
CFG = GPTConfig(vocab_size=257, context_length=96, emb_dim=32, n_heads=2, n_layers=1, drop_rate=0.0)

PAIRS = [
    {"instruction": "Greet me.", "input": "", "chosen": "Hello!", "rejected": "Go away."},
    {"instruction": "Say yes.", "input": "", "chosen": "Yes, gladly.", "rejected": "Ugh, fine."},
    {"instruction": "Thank her.", "input": "Ann", "chosen": "Thank you, Ann.", "rejected": "Whatever, Ann."},
    {"instruction": "Answer politely.", "input": "", "chosen": "Of course.", "rejected": "Duh."},
]


def model(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(CFG)


# --------------------------------------------------------------------------- DPO
def test_dpo_loss_is_log_2_when_the_policy_is_the_reference() -> None:
    x = torch.tensor([-3.0, -10.0])
    loss, chosen, rejected = dpo_loss(x, x - 1, x, x - 1, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))
    assert torch.equal(chosen, torch.zeros(2)) and torch.equal(rejected, torch.zeros(2))


def test_dpo_loss_by_hand() -> None:
    # log-ratios: chosen -5 - (-6) = 1, rejected -7 - (-6) = -1; beta * margin = 0.5 * 2 = 1
    pc = torch.tensor([-5.0], requires_grad=True)
    loss, chosen, rejected = dpo_loss(pc, torch.tensor([-7.0]), torch.tensor([-6.0]), torch.tensor([-6.0]), 0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert chosen.item() == pytest.approx(0.5) and rejected.item() == pytest.approx(-0.5)
    loss.backward()
    # d/dpc of -log sigmoid(beta * (pc - ...)) = -beta * sigmoid(-1)
    assert pc.grad is not None and pc.grad.item() == pytest.approx(-0.5 / (1 + math.e))


def test_dpo_loss_refuses_bad_input() -> None:
    z = torch.zeros(2)
    with pytest.raises(ValueError, match="beta=0"):
        dpo_loss(z, z, z, z, beta=0)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(z, z, z, torch.zeros(3))


def test_sequence_log_probs_sums_only_the_answer() -> None:
    m = model().eval()
    ex = encode_example({"instruction": "Hi", "input": "", "output": "yo"}, BYTES, style="compact")
    inputs, targets = collate_instructions([ex], pad_id=EOS, mask_prompt=True)
    with torch.no_grad():
        got = sequence_log_probs(m, inputs, targets)
        log_probs = F.log_softmax(m(inputs), dim=-1)[0]
    # by hand: the answer's tokens (and end-of-text) are the last len("yo") + 1 targets
    ids = list(ex.ids)
    want = sum(log_probs[t - 1, ids[t]].item() for t in range(ex.prompt_length, len(ids)))
    assert got.item() == pytest.approx(want, abs=1e-5)
    assert int((targets != IGNORE_INDEX).sum()) == 3


def test_preference_dataset_scores_with_the_reference_and_leaves_out_ties() -> None:
    ref = model().eval()
    data = PreferenceDataset([*PAIRS, {**PAIRS[0], "rejected": "Hello!"}], BYTES, ref)
    assert len(data) == 4 and data.identical == 1 and data.dropped == 0
    c_in, c_tg, *_ = next(iter(preference_loader(data, batch_size=1)))
    with torch.no_grad():
        assert data[0].reference_chosen == pytest.approx(sequence_log_probs(ref, c_in, c_tg).item(), abs=1e-5)
    with pytest.raises(ValueError, match="'rejected'"):
        PreferenceDataset([{"instruction": "x", "chosen": "a"}], BYTES, ref)


def test_dpo_task_learns_the_preferences_and_resumes_bit_exact(tmp_path: Path) -> None:
    ref = model().eval()
    data = PreferenceDataset(PAIRS, BYTES, ref)
    loader = preference_loader(data, batch_size=2, shuffle=True, drop_last=True)
    task = DPOTask(beta=0.5)
    before = task.evaluate(ref, preference_loader(data, batch_size=4), None)
    assert before["accuracy"] == 0.5 and before["loss"] == pytest.approx(math.log(2))  # all ties

    options = TrainOptions(max_steps=30, lr=3e-3, eval_every=10, seed=1, progress=False)
    policy = copy.deepcopy(ref)
    history = train(policy, loader, preference_loader(data, batch_size=4), options, task=task)
    assert history.metrics["val_accuracy"][-1] == 1.0
    assert history.val_loss[-1] is not None and history.val_loss[-1] < 0.3
    assert history.metrics["val_margin"][-1] > 0

    straight = copy.deepcopy(ref)
    train(straight, loader, None, options.replace(max_steps=6), task=task)
    resumed = copy.deepcopy(ref)
    folder = tmp_path / "dpo"
    train(resumed, loader, None, options.replace(max_steps=3, checkpoint_dir=folder), task=task)
    again = copy.deepcopy(ref)  # a fresh process would start from the base weights again
    train(again, loader, None, options.replace(max_steps=6, checkpoint_dir=folder), task=task)
    for a, b in zip(straight.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- GRPO
def test_group_advantages_by_hand() -> None:
    got = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    scale = 0.5 / (0.5 + 1e-4)  # mean 0.5, population std 0.5
    assert torch.allclose(got[0], torch.tensor([1.0, -1.0, -1.0, 1.0]) * scale)
    assert torch.equal(got[1], torch.zeros(4))  # all equal: nothing to learn
    assert torch.equal(group_advantages(torch.tensor([[1.0], [0.0]])), torch.zeros(2, 1))  # groups of one
    with pytest.raises(ValueError, match="prompts, group size"):
        group_advantages(torch.ones(4))


def test_grpo_loss_by_hand() -> None:
    # two answers of lengths 2 and 1; advantages +1 and -1; sampled by this very policy
    logp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True], [True, False]])
    adv = torch.tensor([1.0, -1.0])
    loss, stats = grpo_loss(logp, logp.detach(), logp.detach(), adv, mask, kl_beta=0.04)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)  # -(mean of A) with the KL at 0
    assert stats == {"kl": 0.0, "clipped": 0.0}
    loss.backward()
    # each answer's tokens are averaged, then the two answers: d/dlogp = -A / (len * 2)
    assert logp.grad is not None
    assert torch.allclose(logp.grad, torch.tensor([[-0.25, -0.25], [0.5, 0.0]]))


def test_grpo_loss_clips_and_penalises_the_kl() -> None:
    old = torch.zeros(1, 1)
    up = torch.log(torch.tensor([[1.5]])).requires_grad_(True)  # ratio 1.5 > 1 + 0.2
    loss, stats = grpo_loss(up, old, up.detach(), torch.tensor([2.0]), torch.ones(1, 1, dtype=torch.bool), kl_beta=0)
    assert loss.item() == pytest.approx(-1.2 * 2.0) and stats["clipped"] == 1.0
    loss.backward()
    assert up.grad is not None and up.grad.item() == 0.0  # clipped: no push further
    logp = torch.zeros(1, 1)
    loss, stats = grpo_loss(logp, logp, logp - 1, torch.zeros(1), torch.ones(1, 1, dtype=torch.bool), kl_beta=0.5)
    kl = math.exp(-1) - (-1) - 1  # exp(q) - q - 1 with q = -1
    assert stats["kl"] == pytest.approx(kl) and loss.item() == pytest.approx(0.5 * kl)
    with pytest.raises(ValueError, match=r"clip=1\.5"):
        grpo_loss(logp, logp, logp, torch.zeros(1), torch.ones(1, 1, dtype=torch.bool), clip=1.5)


COUNT = [{"family": "count", "instruction": "How many words?", "input": w, "output": ""}
         for w in ("a b", "a b c", "a", "b c d e")]


def exact_reward(record: dict[str, str], text: str) -> float:
    return float(text == str(len(record["input"].split())))


def test_sample_groups_masks_the_prompt_and_scores_each_answer() -> None:
    torch.manual_seed(0)
    groups = sample_groups(model(), BYTES, COUNT[:2], group_size=3, reward=exact_reward, max_new_tokens=4)
    assert groups.inputs.shape[0] == 6 and groups.rewards.shape == (2, 3) and len(groups.texts) == 6
    answer_tokens = (groups.targets != IGNORE_INDEX).sum(dim=1)
    assert ((answer_tokens >= 1) & (answer_tokens <= 4)).all()
    with pytest.raises(ValueError, match="group_size=0"):
        sample_groups(model(), BYTES, COUNT, group_size=0)


def grpo_run(policy: GRPOTask, m: GPTModel, steps: int, folder: Path | None = None) -> None:
    loader = DataLoader(TensorDataset(torch.arange(len(COUNT))), batch_size=2, shuffle=True, drop_last=True)
    options = TrainOptions(max_steps=steps, lr=1e-3, eval_every=100, seed=3, progress=False, checkpoint_dir=folder)
    train(m, loader, None, options, task=policy)


def test_grpo_task_resumes_bit_exact(tmp_path: Path) -> None:
    def task() -> GRPOTask:
        return GRPOTask(COUNT, BYTES, model(), group_size=3, max_new_tokens=3)

    straight = model()
    grpo_run(task(), straight, 4)
    resumed = model()
    grpo_run(task(), resumed, 2, tmp_path / "grpo")
    again = model()
    grpo_run(task(), again, 4, tmp_path / "grpo")
    for a, b in zip(straight.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(straight.parameters(), model().parameters(), strict=True))


def test_grpo_with_a_group_of_one_does_not_move_the_policy() -> None:
    # every advantage is 0 and the KL to the reference starts at 0: the gradient is 0
    m = model()
    task = GRPOTask(COUNT, BYTES, model(), group_size=1, max_new_tokens=3)
    loader = DataLoader(TensorDataset(torch.arange(4)), batch_size=2, shuffle=True)
    train(m, loader, None, TrainOptions(max_steps=3, lr=1e-2, weight_decay=0.0, seed=0, progress=False), task=task)
    for a, b in zip(m.parameters(), model().parameters(), strict=True):
        assert torch.equal(a, b)


def test_grpo_task_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="kl_beta=-1"):
        GRPOTask(COUNT, BYTES, model(), kl_beta=-1)
    with pytest.raises(ValueError, match="at least one training record"):
        GRPOTask([], BYTES, model())


def test_sample_groups_keeps_prompt_and_answer_within_the_context() -> None:
    long = {"family": "count", "instruction": "x" * 50, "input": "", "output": ""}
    groups = sample_groups(model(), BYTES, [long], group_size=2, reward=exact_reward, max_new_tokens=50)
    assert groups.inputs.shape[1] <= CFG.context_length
    with pytest.raises(ValueError, match="leaves no room for an answer"):
        sample_groups(model(), BYTES, [{**long, "instruction": "x" * 120}], group_size=2, reward=exact_reward)
