"""Fine-tuning a pretrained GPT (chapters 6 and 7, and the LoRA appendix).

* ``companion.finetune.classification``: a classifier head on the last token, the spam
  data set, and the task ``train`` uses to fine-tune it (chapter 6).
* ``companion.finetune.instruction``: instruction data in the Alpaca prompt format, the
  collate function that pads and masks, and reference-based metrics (chapter 7).
* ``companion.finetune.lora``: low-rank adaptation of linear layers (appendix).

Each fine-tuning run uses the one training loop of ``companion.train``.
"""
