"""Direct preference optimization (chapter 8, "Preference tuning with DPO").

DPO (Rafailov et al., 2023) fine-tunes a policy on pairs of answers to one prompt, one
*chosen* and one *rejected*, without a reward model. Under the Bradley-Terry model the
probability that ``y_w`` is preferred to ``y_l`` is ``sigmoid(r(x, y_w) - r(x, y_l))``;
the policy that maximises reward with a KL penalty ``beta`` to a reference model has the
reward ``r(x, y) = beta * log(pi(y | x) / pi_ref(y | x))`` (plus a term that cancels in
the difference), so the pairs' likelihood can be maximised over the policy directly:

    loss = -log sigmoid(beta * [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))])

* ``sequence_log_probs``: ``log pi(y | x)`` of each row's response tokens (the prompt
  masked out exactly as chapter 7's ``collate_instructions`` masks it).
* ``dpo_loss``: the loss above and each answer's implicit reward.
* ``PreferenceDataset`` / ``preference_loader``: tokenized pairs, with the reference
  model's log-probabilities computed once, so the frozen reference need not be run (or
  even kept in memory) while training.
* ``DPOTask``: the ``Task`` that ``companion.train.train`` trains with, and whose
  evaluation gives the held-out preference accuracy and reward margin.

Shape letters: ``B`` pairs in a batch, ``T`` tokens per sequence, ``V`` vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from companion.finetune.instruction import (
    InstructionExample,
    PromptStyle,
    _encode_data,
    collate_instructions,
    eos_id_of,
    format_prompt,
)
from companion.losses import IGNORE_INDEX, device_of
from companion.model import eval_mode

__all__ = [
    "DPOTask",
    "PreferenceDataset",
    "PreferencePair",
    "answer_kl",
    "check_pair",
    "collate_pairs",
    "dpo_loss",
    "preference_loader",
    "sequence_log_probs",
    "token_log_probs",
]

PairBatch = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]
"""chosen inputs, chosen targets, rejected inputs, rejected targets (each ``(B, T)``), and
the reference's log-probabilities of the chosen and rejected answers (each ``(B,)``)."""


def check_pair(record: Mapping[str, Any], where: str = "a preference record") -> None:
    """Refuse a malformed preference record, naming what is wrong and the fix.

    Raises:
        ValueError: A field is missing or not a string.
    """
    for key in ("instruction", "chosen", "rejected"):
        if not isinstance(record.get(key), str):
            raise ValueError(f"{where} needs a string {key!r} field, got {type(record.get(key)).__name__}; "
                             "each record is {'instruction', 'input', 'chosen', 'rejected'}")
    if not isinstance(record.get("input", ""), str):
        raise ValueError(f"{where}: 'input' must be a string (\"\" when there is none)")


# --------------------------------------------------------------------------- #
# Log-probabilities and the loss
# --------------------------------------------------------------------------- #
def token_log_probs(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """The log-probability of every target token, 0 where the target is ``IGNORE_INDEX``.

    Args:
        model: A ``GPTModel`` (or anything mapping ``(B, T)`` ids to ``(B, T, V)`` logits).
        inputs: ``(B, T)`` token ids.
        targets: ``(B, T)`` next tokens, ``IGNORE_INDEX`` for the prompt and the padding.

    Returns:
        ``(B, T)`` float.
    """
    logits = model(inputs)  # (B, T, V)
    log_probs = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    keep = targets != IGNORE_INDEX  # (B, T)
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked * keep


def sequence_log_probs(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """``log pi(response | prompt)`` of each row: the sum of the log-probabilities of the
    targets that are not ``IGNORE_INDEX`` (chapter 8, "The log-probability of an answer").

    Returns:
        ``(B,)`` float: one log-probability per row (0 for a row with no response token).
    """
    return token_log_probs(model, inputs, targets).sum(dim=-1)  # (B,)


def answer_kl(policy: nn.Module, reference: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """``log pi(y | x) - log pi_ref(y | x)`` of each row's answer, without gradients.

    Averaged over answers *sampled from the policy*, this estimates the KL divergence
    ``KL(pi || pi_ref)`` in nats per answer (chapter 8, "Training with DPO").

    Returns:
        ``(B,)`` float.
    """
    with eval_mode(policy), eval_mode(reference), torch.no_grad():
        return sequence_log_probs(policy, inputs, targets) - sequence_log_probs(reference, inputs, targets)


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor]:
    """The DPO loss of a batch of pairs (Rafailov et al., 2023, eq. 7).

    Args:
        policy_chosen, policy_rejected: ``(B,)`` log-probabilities of the chosen and the
            rejected answers under the model being trained.
        reference_chosen, reference_rejected: ``(B,)`` the same under the frozen reference.
        beta: How strongly the policy is held to the reference: the implicit reward is
            ``beta`` times the log-ratio, so a small ``beta`` lets the log-ratios (and the
            policy) move further before the loss is satisfied.

    Returns:
        ``(loss, chosen_rewards, rejected_rewards)``: the mean loss (a scalar) and the
        implicit rewards ``beta * (log pi - log pi_ref)`` of each answer, ``(B,)``, detached.

    Raises:
        ValueError: ``beta`` is not positive, or the four tensors differ in shape.
    """
    if not (isinstance(beta, (int, float)) and beta > 0):
        raise ValueError(f"beta={beta!r} must be a positive number (0.1 is usual)")
    shapes = {tuple(t.shape) for t in (policy_chosen, policy_rejected, reference_chosen, reference_rejected)}
    if len(shapes) != 1:
        raise ValueError(f"the four log-probability tensors must have one shape (B,), got {sorted(shapes)}")
    chosen_ratio = policy_chosen - reference_chosen  # (B,)
    rejected_ratio = policy_rejected - reference_rejected  # (B,)
    loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean()
    return loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


# --------------------------------------------------------------------------- #
# Data: tokenized pairs with the reference's log-probabilities
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class PreferencePair:
    """One tokenized pair: both answers after the same prompt, each ending in end-of-text.

    ``reference_chosen`` / ``reference_rejected`` are the frozen reference model's
    log-probabilities of the two answers (``nan`` until ``PreferenceDataset`` scores them).
    """

    chosen: InstructionExample
    rejected: InstructionExample
    reference_chosen: float = float("nan")
    reference_rejected: float = float("nan")


def _encode_pair(record: Mapping[str, str], tokenizer: Any, style: PromptStyle, eos: int) -> PreferencePair:
    prompt = _encode_data(tokenizer, format_prompt(record, style))
    answers = [(*prompt, *_encode_data(tokenizer, record[key]), eos) for key in ("chosen", "rejected")]
    return PreferencePair(InstructionExample(answers[0], len(prompt)), InstructionExample(answers[1], len(prompt)))


def collate_pairs(pairs: Sequence[PreferencePair], *, pad_id: int) -> PairBatch:
    """A batch of pairs as chapter 7's masked batches, one for each side, plus the
    reference log-probabilities (see ``PairBatch``)."""
    chosen = collate_instructions([p.chosen for p in pairs], pad_id=pad_id, mask_prompt=True)
    rejected = collate_instructions([p.rejected for p in pairs], pad_id=pad_id, mask_prompt=True)
    reference = torch.tensor([[p.reference_chosen, p.reference_rejected] for p in pairs])  # (B, 2)
    return (*chosen, *rejected, reference[:, 0], reference[:, 1])


class PreferenceDataset(Dataset[PreferencePair]):
    """Preference records tokenized in a prompt style, scored once by the reference model.

    Pairs whose two answers are the same text state no preference (their loss is
    ``log 2`` whatever the model does) and are left out, counted in ``identical``; pairs
    whose longer side does not fit the model's context are dropped, counted in
    ``dropped``, as ``InstructionDataset`` drops examples.

    Args:
        records: ``{"instruction", "input", "chosen", "rejected"}`` records.
        tokenizer: The model's tokenizer.
        reference: The frozen reference model (usually the policy's starting point).
        style: The prompt style the reference was fine-tuned with.
        context_length: Drop pairs longer than this many tokens (after the shift).
        batch_size: Pairs scored at once.

    Raises:
        ValueError: A record is malformed (see ``check_pair``) or no pair fits.
    """

    def __init__(self, records: Sequence[Mapping[str, str]], tokenizer: Any, reference: nn.Module, *,
                 style: PromptStyle = "compact", context_length: int | None = None, batch_size: int = 16) -> None:
        eos = eos_id_of(tokenizer)
        limit = int(context_length or reference.config.context_length)  # type: ignore[union-attr,arg-type]
        pairs, self.identical = [], 0
        for i, record in enumerate(records):
            check_pair(record, f"preference record {i}")
            if record["chosen"].strip() == record["rejected"].strip():
                self.identical += 1
                continue
            pair = _encode_pair(record, tokenizer, style, eos)
            if max(len(pair.chosen.ids), len(pair.rejected.ids)) - 1 <= limit:
                pairs.append(pair)
        if not pairs:
            raise ValueError(f"none of the {len(records)} pairs fits a context of {limit} tokens")
        self.dropped = len(records) - self.identical - len(pairs)
        self.pad_id = eos
        self.pairs = self._score(pairs, reference, batch_size)

    def _score(self, pairs: list[PreferencePair], reference: nn.Module, batch_size: int) -> list[PreferencePair]:
        device, scored = device_of(reference), []
        with eval_mode(reference), torch.no_grad():
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start : start + batch_size]
                c_in, c_tg, r_in, r_tg, _, _ = collate_pairs(chunk, pad_id=self.pad_id)
                chosen = sequence_log_probs(reference, c_in.to(device), c_tg.to(device)).tolist()
                rejected = sequence_log_probs(reference, r_in.to(device), r_tg.to(device)).tolist()
                scored += [PreferencePair(p.chosen, p.rejected, c, r) for p, c, r in zip(chunk, chosen, rejected, strict=True)]
        return scored

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> PreferencePair:
        return self.pairs[index]


def preference_loader(dataset: PreferenceDataset, *, batch_size: int = 8, shuffle: bool = False,
                      drop_last: bool = False) -> DataLoader[PreferencePair]:
    """A ``DataLoader`` of ``PairBatch`` batches over a ``PreferenceDataset``."""
    pad = dataset.pad_id
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      collate_fn=lambda pairs: collate_pairs(pairs, pad_id=pad))


# --------------------------------------------------------------------------- #
# The task train() trains
# --------------------------------------------------------------------------- #
class DPOTask:
    """DPO as a ``companion.train.Task``: the loss of a batch of pairs and the held-out
    preference accuracy (chapter 8).

    ``evaluate`` returns ``loss``, ``accuracy`` (the share of pairs whose implicit reward
    ranks the chosen answer above the rejected one, a tie counting half), ``margin`` (the mean difference of
    the two rewards) and ``chosen_reward`` / ``rejected_reward`` (their means).
    """

    def __init__(self, beta: float = 0.1) -> None:
        dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), beta)  # validates beta
        self.beta = beta

    def _scores(self, model: nn.Module, batch: PairBatch) -> tuple[Tensor, Tensor, Tensor]:
        c_in, c_tg, r_in, r_tg, ref_c, ref_r = batch
        # one forward pass over both sides: (2B, T) after padding to the longer
        width = max(c_in.shape[1], r_in.shape[1])
        both_in = torch.cat([F.pad(c_in, (0, width - c_in.shape[1])), F.pad(r_in, (0, width - r_in.shape[1]))])
        both_tg = torch.cat([F.pad(c_tg, (0, width - c_tg.shape[1]), value=IGNORE_INDEX),
                             F.pad(r_tg, (0, width - r_tg.shape[1]), value=IGNORE_INDEX)])
        chosen, rejected = sequence_log_probs(model, both_in, both_tg).chunk(2)  # (B,), (B,)
        return dpo_loss(chosen, rejected, ref_c, ref_r, self.beta)

    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        return self._scores(model, batch)[0]

    def evaluate(self, model: nn.Module, loader: Iterable[Any], max_batches: int | None) -> dict[str, float]:
        device = device_of(model)
        totals = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0, "chosen_reward": 0.0, "rejected_reward": 0.0}
        count = 0
        with eval_mode(model), torch.no_grad():
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                batch = tuple(t.to(device) for t in batch)
                loss, chosen, rejected = self._scores(model, batch)
                n = chosen.numel()
                totals["loss"] += float(loss) * n
                # a tie (as before any training, when the policy is the reference) counts half
                totals["accuracy"] += float((chosen > rejected).float().sum() + 0.5 * (chosen == rejected).float().sum())
                totals["margin"] += float((chosen - rejected).sum())
                totals["chosen_reward"] += float(chosen.sum())
                totals["rejected_reward"] += float(rejected.sum())
                count += n
        if count == 0:
            raise ValueError("the evaluation loader yielded no pair")
        return {key: value / count for key, value in totals.items()}
