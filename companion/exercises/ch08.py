"""Chapter 8's checked exercises: the DPO loss, group advantages, and the KL estimate."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from companion.exercises.core import Exercise

__all__ = ["EXERCISES", "dpo_loss", "group_advantages", "kl_estimate"]


# ---------------------------------------------------------------- reference solutions
def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor,
             reference_chosen: Tensor, reference_rejected: Tensor,
             beta: float) -> Tensor:
    # each answer's implicit reward is beta times its log-ratio
    chosen = beta * (policy_chosen - reference_chosen)
    rejected = beta * (policy_rejected - reference_rejected)
    # Bradley-Terry: P(chosen preferred) = sigmoid(difference)
    return -F.logsigmoid(chosen - rejected).mean()


def group_advantages(rewards: Tensor, eps: float = 1e-4) -> Tensor:
    # rewards: (P, G); normalise within each row (group)
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, correction=0, keepdim=True)
    return (rewards - mean) / (std + eps)


def kl_estimate(log_probs: Tensor,
                reference_log_probs: Tensor) -> Tensor:
    # per token: exp(q) - q - 1 with q = log pi_ref - log pi
    q = reference_log_probs - log_probs
    return torch.exp(q) - q - 1


# ---------------------------------------------------------------- checks
def _tensor(got: Any, shape: tuple[int, ...], case: str) -> Tensor:
    assert isinstance(got, Tensor), f"{case}: return a tensor, got {type(got).__name__}"
    assert tuple(got.shape) == shape, f"{case}: expected shape {shape}, got {tuple(got.shape)}"
    assert torch.isfinite(got).all(), f"{case}: the result holds NaN or infinite values: {got}"
    return got


def check_dpo_loss(fn: Callable[..., Tensor]) -> None:
    zeros = torch.zeros(3)
    got = _tensor(fn(zeros, zeros, zeros, zeros, 0.1), (), "a policy equal to its reference")
    assert abs(float(got) - math.log(2)) < 1e-6, (
        f"when the policy is the reference every log-ratio is 0, so the loss is -log sigmoid(0) = log 2 "
        f"= 0.6931; got {float(got):.4f}")
    pc, pr = torch.tensor([-5.0, -9.0]), torch.tensor([-7.0, -4.0])
    rc, rr = torch.tensor([-6.0, -8.0]), torch.tensor([-6.0, -6.0])
    want = float(dpo_loss(pc, pr, rc, rr, 0.5))
    got = _tensor(fn(pc, pr, rc, rr, 0.5), (), "two pairs, beta = 0.5")
    swapped = float(dpo_loss(pr, pc, rr, rc, 0.5))
    if abs(float(got) - swapped) < 1e-5:
        raise AssertionError("the loss rewards the rejected answer: the margin is chosen minus rejected "
                             "(the chosen log-ratio comes first)")
    no_beta = float(dpo_loss(pc, pr, rc, rr, 1.0))
    if abs(float(got) - no_beta) < 1e-5:
        raise AssertionError("beta is missing: multiply the difference of log-ratios by beta before the sigmoid")
    no_ref = float(-F.logsigmoid(0.5 * (pc - pr)).mean())
    if abs(float(got) - no_ref) < 1e-5:
        raise AssertionError("the reference is missing: each reward is beta * (log pi - log pi_ref), "
                             "a log-ratio, not the policy's log-probability alone")
    assert abs(float(got) - want) < 1e-5, (
        f"two pairs with beta = 0.5: expected {want:.5f}, got {float(got):.5f}; the loss is the mean over "
        "pairs of -log sigmoid(beta * ((pc - rc) - (pr - rr)))")
    big = torch.tensor([400.0])
    far = fn(-big, big, torch.zeros(1), torch.zeros(1), 1.0)
    assert torch.isfinite(far) and abs(float(far) - 800.0) < 1e-3, (
        f"a pair ranked wrong by a margin of 800 should cost 800, got {float(far)}: use F.logsigmoid rather "
        "than torch.log(torch.sigmoid(...)), whose sigmoid rounds to 0 and whose log is then -inf")


def check_group_advantages(fn: Callable[..., Tensor]) -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    want = group_advantages(rewards)
    got = _tensor(fn(rewards), (2, 4), "two groups of four")
    whole = (rewards - rewards.mean()) / (rewards.std(correction=0) + 1e-4)
    if torch.allclose(got, whole, atol=1e-4):
        raise AssertionError("the rewards were normalised over the whole batch: normalise each group (row) "
                             "by its own mean and standard deviation (dim=1)")
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if torch.allclose(got, centred, atol=1e-4):
        raise AssertionError("the advantages are centred but not divided by the group's standard deviation")
    assert torch.allclose(got, want, atol=1e-3), (
        f"expected {want.tolist()}, got {got.tolist()}: (reward - group mean) / (group std + eps), "
        "with the std of the group itself (correction=0)")
    same = _tensor(fn(torch.ones(1, 4)), (1, 4), "a group whose answers all scored 1 (std 0)")
    assert torch.allclose(same, torch.zeros(1, 4)), (
        f"a group whose rewards are all equal has nothing to learn from: expected zeros, got {same.tolist()} "
        "(add eps to the standard deviation to avoid 0 / 0)")
    one = _tensor(fn(torch.tensor([[1.0], [0.0]])), (2, 1), "groups of one answer")
    assert torch.allclose(one, torch.zeros(2, 1)), f"a group of one gives advantage 0, got {one.tolist()}"


def check_kl_estimate(fn: Callable[..., Tensor]) -> None:
    logp = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    ref = torch.tensor([-1.0, -1.0, -2.5, -2.0])
    got = _tensor(fn(logp, ref), (4,), "four tokens")
    assert float(got[0]) == 0.0 or abs(float(got[0])) < 1e-7, (
        f"where the policy and the reference agree the estimate is 0, got {float(got[0]):.4f}")
    swapped = kl_estimate(ref, logp)
    if torch.allclose(got, swapped, atol=1e-6):
        raise AssertionError("q has the wrong sign: q = log pi_ref - log pi (the reference first)")
    assert (got >= 0).all(), f"exp(q) - q - 1 is never negative, got {got.tolist()}"
    want = kl_estimate(logp, ref)
    assert torch.allclose(got, want, atol=1e-5), f"expected {want.tolist()}, got {got.tolist()}"


EXERCISES = {
    "ch08-dpo-loss": Exercise("ch08-dpo-loss", "dpo_loss", dpo_loss, check_dpo_loss,
                              "the DPO loss from four log-probabilities and beta"),
    "ch08-advantages": Exercise("ch08-advantages", "group_advantages", group_advantages, check_group_advantages,
                                "GRPO's advantages: rewards normalised within each group"),
    "ch08-kl": Exercise("ch08-kl", "kl_estimate", kl_estimate, check_kl_estimate,
                        "the per-token KL estimate GRPO penalises"),
}
