"""Fine-tuning a pretrained GPT (chapters 6 and 7, and the LoRA appendix).

* ``companion.finetune.classification``: a classifier head on the last token, the spam
  data set, and the task ``train`` uses to fine-tune it (chapter 6).
* ``companion.finetune.instruction``: instruction data in the Alpaca prompt format, the
  collate function that pads and masks, and reference-based metrics (chapter 7).
* ``companion.finetune.lora``: low-rank adaptation of linear layers (appendix).
* ``companion.finetune.tasks``: chapter 7's checkable instruction families and their scores.

These are components: data, losses, tasks and layers. They import only the modules below
them (data, losses, model, train, tokenizers), never the course models' registry or a
whole run. The whole runs that put them together (setup → train → save) are in
``companion.runs``, and each uses the one training loop of ``companion.train``.
"""
