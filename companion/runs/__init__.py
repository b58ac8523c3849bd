"""Whole runs, one module each, every one reading setup → train → save.

* ``companion.runs.pretrain``: chapter 5's pretraining ``Recipe`` and ``companion train``.
* ``companion.runs.classify``: chapter 6's spam classifier (``companion finetune-classifier``).
* ``companion.runs.instruct``: chapter 7's instruction fine-tuning (``companion finetune-instructions``).
* ``companion.runs.task_model``: chapter 7's shipped ``shakespeare-tasks`` model, a ``TaskRecipe``.

What they share:

* ``companion.runs.common``: ``Pretrained`` (a run's result), ``run_key`` and the one resume
  guard ``check_resume``; the run-folder lock is ``companion.train.train``'s own.
* ``companion.runs.base``: ``load_base_model``, the one loader of a base model (a course model,
  GPT-2 by name, or a checkpoint folder), and ``base_identity`` for a run's key.
* ``companion.runs.flags``: command-line flags made from ``TrainOptions`` fields
  (``add_option_flags``, ``options_from_args``), so each training flag is declared once and
  a run's defaults are its own ``TrainOptions``.

**Adding a run** (say ``dpo``): write ``companion/runs/dpo.py`` (``instruct.py`` is the model) with

1. ``COMMAND = "dpo"`` and ``OPTIONS = TrainOptions(...)``: the run's training settings, its
   default learning rate among them, in this one place (a recipe dataclass that is also a
   course model holds them as a field ``options: TrainOptions``, like ``task_model.TaskRecipe``);
2. ``add_command(commands)``: ``parser = commands.add_parser(COMMAND, help=..., description=...)``,
   ``flags.add_run_flags(parser, model_help=...)`` (``--out``, ``--model`` | ``--checkpoint``),
   the run's own flags (its data, ``--quiet``), then
   ``flags.add_option_flags(parser, TrainOptions, ("max_steps", "lr", ..., "checkpoint_every",
   "resume"), defaults=OPTIONS)`` for the training flags (``--steps``, ``--lr``, ...,
   ``--resume/--no-resume``; type, check, help and default all come from the field), and
   ``parser.set_defaults(run=main)``;
3. ``main(args) -> int``, reading setup → train → save:
   setup: ``model, tokenizer = load_base_model(args.checkpoint or args.model)``, the data,
   ``key = run_key(settings)`` and ``check_resume(args.out, key, resume=args.resume,
   hint="pass --no-resume to overwrite it, or choose another --out", error=UsageError)``;
   train: ``companion.train.train(model, ..., flags.options_from_args(args, OPTIONS, names,
   progress=not args.quiet, checkpoint_dir=args.out), checkpoint_extra={"run_key": key, ...})``,
   which takes the run-folder lock and writes resumable, bit-exact checkpoints (a loss of its
   own is a ``companion.train.Task``);
   save and report: ``train`` wrote the last checkpoint; print one summary line (before → after);

then register it in ``companion.cli.build_parser`` with ``dpo.add_command(commands)``; ``main``
needs nothing more (it calls ``args.run(args)``). Runs import the fine-tuning components
(``companion.finetune.*``), never the other way round (``tests/test_import_graph.py``).
"""
