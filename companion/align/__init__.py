"""Aligning a fine-tuned model: preferences (DPO) and checkable rewards (GRPO), chapter 8.

* ``companion.align.dpo``: the log-probability of an answer, the DPO loss, preference
  pairs scored by a frozen reference, and the ``DPOTask`` that ``train`` trains.
* ``companion.align.grpo``: group-normalised advantages, the clipped objective with a KL
  penalty, group sampling, and the ``GRPOTask``.

Both run in the one training loop of ``companion.train``.
"""

from companion.align.dpo import (
    DPOTask,
    PreferenceDataset,
    PreferencePair,
    answer_kl,
    dpo_loss,
    preference_loader,
    sequence_log_probs,
    token_log_probs,
)
from companion.align.grpo import Groups, GRPOTask, group_advantages, grpo_loss, sample_groups

__all__ = [
    "DPOTask",
    "GRPOTask",
    "Groups",
    "PreferenceDataset",
    "PreferencePair",
    "answer_kl",
    "dpo_loss",
    "group_advantages",
    "grpo_loss",
    "preference_loader",
    "sample_groups",
    "sequence_log_probs",
    "token_log_probs",
]
