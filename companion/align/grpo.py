"""Group relative policy optimization (chapter 8, "Rewards a program can check: GRPO").

GRPO (Shao et al., 2024, DeepSeekMath) is reinforcement learning without a value model.
For each prompt the policy samples a *group* of ``G`` answers; a program scores each one
(here chapter 7's checker: 1 for a right answer, 0 otherwise); each answer's advantage is
its reward normalised within its group, ``(r - mean) / (std + eps)``, so that the group's
better-than-average answers are pushed up and the worse ones down, with no learned
critic. The update maximises PPO's clipped objective (Schulman et al., 2017) with a
per-token KL penalty to a frozen reference model:

    J = mean over answers, tokens of  min(rho * A, clip(rho, 1 - eps, 1 + eps) * A) - beta * KL

with ``rho = pi(token) / pi_old(token)`` and the KL estimated per token as
``exp(q) - q - 1``, ``q = log pi_ref - log pi`` (non-negative, unbiased).

* ``group_advantages``: rewards ``(P, G)`` -> advantages ``(P, G)``.
* ``sample_groups``: ``G`` sampled answers per prompt, as masked batches for the loss.
* ``grpo_loss``: the objective above (negated, to minimise), with its KL and clip statistics.
* ``GRPOTask``: a ``companion.train.Task`` whose batches are prompt indices: ``loss``
  samples, rewards and scores one step's groups, so GRPO runs in the same loop (and with
  the same checkpoints, resume, folder lock and non-finite-loss check) as every other
  chapter. It takes one gradient step per batch of samples, so ``pi_old`` is the policy
  itself (``rho = 1`` in value, the clip inactive; TRL's default too).

Shape letters: ``P`` prompts, ``G`` answers per prompt, ``N = P * G``, ``T`` tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from companion.align.dpo import token_log_probs
from companion.finetune.instruction import (
    InstructionExample,
    PromptStyle,
    _encode_data,
    collate_instructions,
    eos_id_of,
    format_prompt,
)
from companion.finetune.tasks import check_answer, evaluate_tasks
from companion.generate import generate
from companion.losses import IGNORE_INDEX, device_of
from companion.model import eval_mode

__all__ = ["GRPOTask", "Groups", "group_advantages", "grpo_loss", "sample_groups"]

Reward = Callable[[Mapping[str, str], str], float]


def group_advantages(rewards: Tensor, eps: float = 1e-4) -> Tensor:
    """Each reward minus its group's mean, divided by the group's standard deviation.

    Args:
        rewards: ``(P, G)``: row ``p`` holds the rewards of prompt ``p``'s ``G`` answers.
        eps: Added to the standard deviation, so a group whose answers all scored the same
            gets advantages of 0 (nothing to learn from it) instead of 0 / 0.

    Returns:
        ``(P, G)`` float. A group of one answer always gets 0: it has nothing to be
        compared with.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (prompts, group size), got shape {tuple(rewards.shape)}")
    rewards = rewards.float()
    mean = rewards.mean(dim=1, keepdim=True)  # (P, 1)
    std = rewards.std(dim=1, correction=0, keepdim=True)  # (P, 1), population std
    return (rewards - mean) / (std + eps)


def grpo_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    reference_log_probs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip: float = 0.2,
    kl_beta: float = 0.04,
) -> tuple[Tensor, dict[str, float]]:
    """The negated GRPO objective of a batch of answers (Shao et al., 2024, eq. 3).

    Args:
        log_probs: ``(N, T)`` log-probabilities of the answers' tokens under the policy
            (with gradients).
        old_log_probs: ``(N, T)`` the same under the policy that sampled them (no gradient).
        reference_log_probs: ``(N, T)`` the same under the frozen reference.
        advantages: ``(N,)`` one advantage per answer (``group_advantages``, flattened).
        mask: ``(N, T)`` bool, ``True`` at the answers' tokens.
        clip: PPO's ``epsilon``: the ratio is clipped to ``[1 - clip, 1 + clip]``.
        kl_beta: Weight of the KL penalty; 0 turns it off.

    Returns:
        ``(loss, stats)``: the scalar loss (each answer's tokens averaged, then the answers
        averaged) and ``{"kl": mean per-token KL, "clipped": share of clipped tokens}``.
    """
    if not (0 < clip < 1):
        raise ValueError(f"clip={clip!r} must be in (0, 1) (0.2 is usual)")
    if not kl_beta >= 0:
        raise ValueError(f"kl_beta={kl_beta!r} must be 0 (no penalty) or positive (0.04 is usual)")
    mask = mask.float()
    ratio = torch.exp(log_probs - old_log_probs)  # (N, T)
    A = advantages.unsqueeze(1)  # (N, 1)
    surrogate = torch.minimum(ratio * A, ratio.clamp(1 - clip, 1 + clip) * A)  # (N, T)
    q = reference_log_probs - log_probs  # (N, T)
    kl = torch.exp(q) - q - 1  # (N, T), >= 0
    per_token = -(surrogate - kl_beta * kl)  # (N, T)
    lengths = mask.sum(dim=1).clamp(min=1)  # (N,)
    loss = ((per_token * mask).sum(dim=1) / lengths).mean()
    n = mask.sum().clamp(min=1)
    clipped = ((ratio - ratio.clamp(1 - clip, 1 + clip)).abs() > 0).float()
    return loss, {"kl": float((kl.detach() * mask).sum() / n), "clipped": float((clipped * mask).sum() / n)}


@dataclass
class Groups:
    """``G`` sampled answers for each of ``P`` prompts, ready for the loss.

    Attributes:
        inputs, targets: ``(N, T)`` as chapter 7's masked batches: the answer's tokens are
            the targets, the prompt and the padding ``IGNORE_INDEX``.
        texts: The ``N`` answers as text (up to the end-of-text token), prompt-major.
        rewards: ``(P, G)`` each answer's reward.
    """

    inputs: Tensor
    targets: Tensor
    texts: list[str]
    rewards: Tensor


def sample_groups(
    model: nn.Module,
    tokenizer: Any,
    records: Sequence[Mapping[str, str]],
    *,
    group_size: int = 8,
    reward: Reward | None = None,
    temperature: float = 1.0,
    max_new_tokens: int = 16,
    style: PromptStyle = "compact",
    generator: torch.Generator | None = None,
) -> Groups:
    """Sample ``group_size`` answers to each record's prompt and score them.

    Args:
        reward: ``reward(record, answer_text) -> float``; the default is chapter 7's exact
            checker (1.0 right, 0.0 wrong).
        generator: Source of the sampling randomness; ``None`` uses torch's global one
            (which ``train`` seeds and checkpoints).

    An answer is cut at ``max_new_tokens`` or where prompt and answer fill the model's
    context, whichever comes first.

    Raises:
        ValueError: ``group_size`` is not positive, or a prompt fills the whole context.
    """
    if not (isinstance(group_size, int) and group_size >= 1):
        raise ValueError(f"group_size={group_size!r} must be a positive integer")
    score = reward or (lambda record, text: float(check_answer(record, text)))
    eos, device = eos_id_of(tokenizer), device_of(model)
    examples, texts, rewards = [], [], []
    context = int(model.config.context_length)  # type: ignore[union-attr,arg-type]
    for record in records:
        prompt = _encode_data(tokenizer, format_prompt(record, style))
        # prompt and answer must fit the context together, to be scored in one forward pass
        room = min(max_new_tokens, context + 1 - len(prompt))
        if room < 1:
            raise ValueError(f"the prompt of {record['instruction'][:40]!r}... has {len(prompt)} tokens and "
                             f"leaves no room for an answer in the model's context of {context}; "
                             "shorten it or leave it out")
        idx = torch.tensor([prompt] * group_size, device=device)  # (G, T0)
        out = generate(model, idx, room,  # type: ignore[arg-type]
                       temperature=temperature, eos_id=eos, generator=generator)  # (G, T0 + n)
        row_rewards = []
        for row in out[:, len(prompt):].tolist():
            answer = row[: row.index(eos) + 1] if eos in row else row  # keep the end-of-text token
            text = tokenizer.decode([t for t in answer if t != eos]).strip()
            examples.append(InstructionExample((*prompt, *answer), len(prompt)))
            texts.append(text)
            row_rewards.append(score(record, text))
        rewards.append(row_rewards)
    inputs, targets = collate_instructions(examples, pad_id=eos, mask_prompt=True)
    return Groups(inputs, targets, texts, torch.tensor(rewards, dtype=torch.float32))


class GRPOTask:
    """GRPO as a ``companion.train.Task`` over chapter 7's checkable tasks (chapter 8).

    The training loader yields batches ``(indices,)`` of positions in ``records``. Each
    step samples a group per prompt with the model being trained, rewards the answers with
    the checker, and returns ``grpo_loss``. ``rewards`` keeps every step's mean reward
    and ``kl`` its mean KL (for the curves; they restart with the object, not with a resumed
    run). ``evaluate`` answers ``eval_records`` greedily and returns their mean accuracy
    over the families as ``accuracy`` (and ``loss`` as ``1 - accuracy``, so the history's
    validation column shows it too).

    Args:
        records: Training task records (``companion.finetune.tasks.make_tasks``).
        tokenizer: The model's tokenizer.
        reference: The frozen reference model (a copy of the starting policy).
        eval_records: Held-out records for ``evaluate``.
        group_size, temperature, max_new_tokens, style: As for ``sample_groups``.
        clip, kl_beta: As for ``grpo_loss``.
    """

    def __init__(self, records: Sequence[Mapping[str, str]], tokenizer: Any, reference: nn.Module, *,
                 eval_records: Sequence[Mapping[str, str]] = (), group_size: int = 8, temperature: float = 1.0,
                 max_new_tokens: int = 16, style: PromptStyle = "compact", clip: float = 0.2,
                 kl_beta: float = 0.04) -> None:
        if not records:
            raise ValueError("GRPO needs at least one training record")
        grpo_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1),
                  clip=clip, kl_beta=kl_beta)  # validates clip and kl_beta
        if not (isinstance(group_size, int) and group_size >= 1):
            raise ValueError(f"group_size={group_size!r} must be a positive integer")
        self.records, self.eval_records = list(records), list(eval_records)
        self.tokenizer, self.reference = tokenizer, reference.eval().requires_grad_(False)
        self.group_size, self.temperature, self.max_new_tokens = group_size, temperature, max_new_tokens
        self.style, self.clip, self.kl_beta = style, clip, kl_beta
        self.rewards: list[float] = []
        self.kl: list[float] = []

    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        (indices,) = batch
        chosen = [self.records[i] for i in indices.tolist()]
        groups = sample_groups(model, self.tokenizer, chosen, group_size=self.group_size,
                               temperature=self.temperature, max_new_tokens=self.max_new_tokens, style=self.style)
        device = device_of(model)
        inputs, targets = groups.inputs.to(device), groups.targets.to(device)
        advantages = group_advantages(groups.rewards).flatten().to(device)  # (N,)
        log_probs = token_log_probs(model, inputs, targets)  # (N, T)
        with torch.no_grad():
            reference = token_log_probs(self.reference, inputs, targets)  # (N, T)
        loss, stats = grpo_loss(log_probs, log_probs.detach(), reference, advantages, targets != IGNORE_INDEX,
                                clip=self.clip, kl_beta=self.kl_beta)
        self.rewards.append(float(groups.rewards.mean()))
        self.kl.append(stats["kl"])
        return loss

    def evaluate(self, model: nn.Module, loader: Iterable[Any], max_batches: int | None) -> dict[str, float]:
        if not self.eval_records:
            return {}
        with eval_mode(model):
            result = evaluate_tasks(model, self.tokenizer, self.eval_records, style=self.style,  # type: ignore[arg-type]
                                    max_new_tokens=self.max_new_tokens)
        return {"loss": 1 - result.mean, "accuracy": result.mean}
