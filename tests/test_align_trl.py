"""Chapter 8's DPO loss (and GRPO's) against Hugging Face TRL, the reference implementation.

TRL's ``DPOTrainer`` tokenizes preference records its own way (it appends the end-of-text
token to each answer and splits prompt and answer where the two tokenizations diverge),
pads a batch of ``[chosen..., rejected...]`` rows with its data collator, and scores the
answer tokens with its own fused LM head (log-probabilities computed in tiles from the
hidden states, never through ``(B, T, V)`` logits). The test takes the token ids TRL
prepared, builds companion's batches from the same ids with chapter 7's
``collate_instructions`` (prompt masked), scores them with ``sequence_log_probs`` on the
same Hugging Face models, and compares the log-probabilities, the implicit rewards, the
loss and the loss's gradient.

Largest absolute differences measured (TRL 1.16.0, transformers 5.24.0, torch 2.13.0 CPU,
float32, three pairs, answers' log-probabilities between -29 and -7): log-probabilities
1.9e-6, implicit rewards 9.5e-7, loss 2.4e-7, gradient 6.6e-7; asserted below ``TOLERANCE``
(1e-5). TRL's trainers default to bf16 mixed precision (``bf16=True`` unless ``fp16``), which
on this CPU moved the log-probabilities by 1.4e-3, so the test sets ``bf16=False``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from trl import DPOConfig, DPOTrainer

from companion.align import dpo_loss, sequence_log_probs
from companion.finetune.instruction import InstructionExample, collate_instructions
from companion.losses import IGNORE_INDEX

BETA = 0.5
TOLERANCE = 1e-5

# Answers of different lengths, so that both TRL's collator and companion's pad.
PAIRS = [
    {"prompt": "greet me :", "chosen": " hello there my friend", "rejected": " go away"},
    {"prompt": "say yes please :", "chosen": " yes", "rejected": " no no never not ever"},
    {"prompt": "thank ann :", "chosen": " thank you ann", "rejected": " whatever"},
]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the records' words, built offline."""
    words = sorted({w for pair in PAIRS for text in pair.values() for w in text.split()})
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<eos>", "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")


def tiny_gpt2(vocab_size: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.3)
    return GPT2LMHeadModel(config).float()


def logits_of(hf_model: GPT2LMHeadModel):
    """companion's view of a Hugging Face model: ``(B, T)`` ids to ``(B, T, V)`` logits."""
    return lambda ids: hf_model(ids).logits


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tokenizer = tiny_tokenizer()
    policy = tiny_gpt2(len(tokenizer), seed=0)
    reference = tiny_gpt2(len(tokenizer), seed=1)  # another random model, so the log-ratios are not 0
    args = DPOConfig(output_dir=str(tmp_path_factory.mktemp("dpo")), beta=BETA, loss_type=["sigmoid"],
                     report_to=[], use_cpu=True, bf16=False, per_device_train_batch_size=len(PAIRS), max_length=None,
                     precompute_ref_log_probs=False, dataset_num_proc=None, seed=0)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(PAIRS),
                         processing_class=tokenizer)
    examples = [trainer.train_dataset[i] for i in range(len(PAIRS))]
    batch = trainer.data_collator(examples)
    return tokenizer, trainer, policy, reference, examples, batch


def companion_batches(examples, pad_id: int):
    """companion's chosen and rejected batches, from the token ids TRL prepared."""
    sides = []
    for key in ("chosen_ids", "rejected_ids"):
        rows = [InstructionExample((*ex["prompt_ids"], *ex[key]), len(ex["prompt_ids"])) for ex in examples]
        sides.append(collate_instructions(rows, pad_id=pad_id, mask_prompt=True))
    return sides


def test_tokenization_is_aligned(setup):
    """Both sides score exactly the same tokens: TRL's prompts are the records' prompts
    tokenized alone, each answer ends in end-of-text, and companion's non-masked targets
    are, row by row, the tokens TRL's ``completion_mask`` marks."""
    tokenizer, _, _, _, examples, batch = setup
    eos = tokenizer.eos_token_id
    for pair, ex in zip(PAIRS, examples, strict=True):
        assert ex["prompt_ids"] == tokenizer(pair["prompt"])["input_ids"]
        for side in ("chosen", "rejected"):
            assert ex[f"{side}_ids"] == [*tokenizer(pair[side])["input_ids"], eos]
    (c_in, c_tg), (r_in, r_tg) = companion_batches(examples, tokenizer.pad_token_id)
    n = len(PAIRS)
    trl_ids, trl_mask = batch["input_ids"], batch["completion_mask"].bool()
    for row, (inputs, targets) in enumerate([(c_in[i], c_tg[i]) for i in range(n)] + [(r_in[i], r_tg[i]) for i in range(n)]):
        assert targets[targets != IGNORE_INDEX].tolist() == trl_ids[row][trl_mask[row]].tolist()
        length = int(batch["attention_mask"][row].sum())
        assert inputs[: length - 1].tolist() == trl_ids[row][: length - 1].tolist()


def test_dpo_matches_trl(setup):
    """Per-pair log-probabilities (policy and reference), rewards, the loss and its
    gradient agree with TRL's ``DPOTrainer`` (loss type ``sigmoid``)."""
    tokenizer, trainer, policy, reference, examples, batch = setup
    (c_in, c_tg), (r_in, r_tg) = companion_batches(examples, tokenizer.pad_token_id)

    # TRL: per-pair log-probabilities of the answers under each model, and the loss on the batch
    with torch.no_grad():
        trl_policy_c, trl_policy_r = trainer.compute_ref_log_probs(policy, batch)
        trl_ref_c, trl_ref_r = trainer.compute_ref_log_probs(reference, batch)
    policy.zero_grad()
    trl_loss = trainer.compute_loss(policy, batch)
    trl_loss.backward()
    trl_grads = [p.grad.clone() for p in policy.parameters()]
    mode = "train" if policy.training else "eval"
    metrics = {key: values[-1] for key, values in trainer._metrics[mode].items()}

    # companion, on the same models and the same token ids
    policy.zero_grad()
    policy_c = sequence_log_probs(logits_of(policy), c_in, c_tg)
    policy_r = sequence_log_probs(logits_of(policy), r_in, r_tg)
    with torch.no_grad():
        ref_c = sequence_log_probs(logits_of(reference), c_in, c_tg)
        ref_r = sequence_log_probs(logits_of(reference), r_in, r_tg)
    loss, chosen_rewards, rejected_rewards = dpo_loss(policy_c, policy_r, ref_c, ref_r, BETA)
    loss.backward()
    grads = [p.grad.clone() for p in policy.parameters()]
    policy_c, policy_r, loss = policy_c.detach(), policy_r.detach(), loss.detach()

    diffs = {
        "log-probs": max(float((a - b).abs().max()) for a, b in
                         [(policy_c, trl_policy_c), (policy_r, trl_policy_r), (ref_c, trl_ref_c), (ref_r, trl_ref_r)]),
        "rewards": max(float((chosen_rewards - BETA * (trl_policy_c - trl_ref_c)).abs().max()),
                       float((rejected_rewards - BETA * (trl_policy_r - trl_ref_r)).abs().max()),
                       abs(float(chosen_rewards.mean()) - metrics["rewards/chosen"]),
                       abs(float(rejected_rewards.mean()) - metrics["rewards/rejected"])),
        "loss": abs(float(loss) - float(trl_loss.detach())),
        "gradient": max(float((g - h).abs().max()) for g, h in zip(grads, trl_grads, strict=True)),
    }
    assert abs(float(policy_c.mean()) - metrics["logps/chosen"]) < TOLERANCE
    assert abs(float(policy_r.mean()) - metrics["logps/rejected"]) < TOLERANCE
    assert all(value < TOLERANCE for value in diffs.values()), diffs
    # the comparison is not vacuous: the models differ and the loss is far from log 2
    assert float((policy_c - ref_c).abs().min()) > 0.1
    assert abs(float(loss) - 0.6931) > 0.01


# --------------------------------------------------------------------------- #
# GRPO: the clipped objective with the per-token KL penalty
# --------------------------------------------------------------------------- #
# TRL computes GRPO's advantages inline in ``GRPOTrainer._generate_and_score_completions``,
# after sampling, with no function to call on given rewards, and divides by the
# Bessel-corrected standard deviation (``trl.trainer.utils.nanstd``) where
# ``group_advantages`` divides by the population one; the two differ by a factor
# sqrt(G / (G - 1)) for groups of G, so they are not compared. The loss is: the test hands
# ``GRPOTrainer._compute_loss`` the advantages, old and reference log-probabilities TRL would
# have computed, and gives ``grpo_loss`` the same.
#
# TRL 1.16 multiplies the per-token KL by the importance ratio by default
# (``use_bias_correction_kl=True``); ``grpo_loss`` does not, so the test turns it off. With
# it on, the losses differ once the ratio leaves 1 (the mean KL by 1.2e-2 here), and even at
# ratio 1 in value (old = current, as in ``GRPOTask``) the gradients differ (by up to 9.5e-3
# here), since the ratio's gradient is not 0.
#
# Largest absolute differences measured (same versions as above): loss 1.4e-7, gradient
# 8.3e-7, mean KL 1.2e-7.
def test_grpo_loss_matches_trl(tmp_path):
    """``grpo_loss`` (clip 0.2, KL weight 0.04, each answer's tokens averaged, then the
    answers) against TRL's ``loss_type="grpo"``, with ratios both inside and outside the
    clip range and positive and negative advantages; loss, gradient and mean KL."""
    from trl import GRPOConfig, GRPOTrainer

    from companion.align import group_advantages, grpo_loss, token_log_probs

    tokenizer = tiny_tokenizer()
    tiny_gpt2(len(tokenizer), seed=2).save_pretrained(tmp_path / "policy")  # GRPOTrainer loads the reference by path
    prompts, group, width = 2, 3, 5  # P prompts, G answers each, up to 5 answer tokens
    args = GRPOConfig(output_dir=str(tmp_path / "out"), beta=0.04, epsilon=0.2, loss_type="grpo", temperature=1.0,
                      report_to=[], use_cpu=True, bf16=False, num_generations=group,
                      per_device_train_batch_size=prompts * group, max_completion_length=width, seed=0,
                      use_bias_correction_kl=False)

    def no_reward(completions, **kwargs):
        return [0.0] * len(completions)

    trainer = GRPOTrainer(model=str(tmp_path / "policy"), reward_funcs=no_reward, args=args,
                          train_dataset=Dataset.from_list([{"prompt": p["prompt"]} for p in PAIRS]),
                          processing_class=tokenizer)
    model = trainer.model.eval()  # eval: no division by the gradient-accumulation steps

    # N = P * G answers after prompts of one length (no left padding), answers right-padded
    g = torch.Generator().manual_seed(0)
    n = prompts * group
    prompt_ids = torch.tensor(tokenizer("thank ann :")["input_ids"]).repeat(n, 1)  # (N, L)
    lengths = torch.tensor([5, 2, 4, 1, 3, 5])
    completion_mask = (torch.arange(width) < lengths.unsqueeze(1)).long()  # (N, C)
    completion_ids = torch.randint(3, len(tokenizer), (n, width), generator=g)
    completion_ids = completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id)
    advantages = group_advantages(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])).flatten()  # (N,)

    # companion's batch over the same ids: the answer tokens are the targets, the rest ignored
    full = torch.cat([prompt_ids, completion_ids], dim=1)  # (N, L + C)
    targets = full[:, 1:].clone()
    targets[:, : prompt_ids.shape[1] - 1] = IGNORE_INDEX
    targets[:, prompt_ids.shape[1] - 1 :] = targets[:, prompt_ids.shape[1] - 1 :].masked_fill(
        completion_mask == 0, IGNORE_INDEX)
    answer = slice(prompt_ids.shape[1] - 1, None)  # the target columns of the answer tokens
    with torch.no_grad():
        current = token_log_probs(logits_of(model), full[:, :-1], targets)[:, answer]  # (N, C)
    # old and reference log-probabilities a little off the policy's, so that some ratios leave [0.8, 1.2]
    old = current + (torch.rand(n, width, generator=g) - 0.5) * 0.8
    reference = current + (torch.rand(n, width, generator=g) - 0.5) * 2.0
    mask = completion_mask.bool()
    ratio = torch.exp(current - old)[mask]
    assert ((ratio < 0.8) | (ratio > 1.2)).any() and ((ratio > 0.8) & (ratio < 1.2)).any()

    model.zero_grad()
    trl_loss = trainer._compute_loss(model, {
        "prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids, "completion_mask": completion_mask,
        "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": reference})
    trl_loss.backward()
    trl_grads = [p.grad.clone() for p in model.parameters()]
    trl_kl = trainer._metrics["eval"]["kl"][-1]

    model.zero_grad()
    log_probs = token_log_probs(logits_of(model), full[:, :-1], targets)[:, answer]  # (N, C)
    loss, stats = grpo_loss(log_probs, old, reference, advantages, mask, clip=0.2, kl_beta=0.04)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    loss = loss.detach()

    diffs = {
        "loss": abs(float(loss) - float(trl_loss.detach())),
        "gradient": max(float((a - b).abs().max()) for a, b in zip(grads, trl_grads, strict=True)),
        "kl": abs(stats["kl"] - trl_kl),
    }
    assert all(value < TOLERANCE for value in diffs.values()), diffs
    assert abs(float(loss)) > 0.01 and stats["clipped"] > 0  # not vacuous
