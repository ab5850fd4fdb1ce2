"""BytePiece's trainer, exact: :class:`~gpu_bytepiece.train.trainer.Trainer`.

One file per job, imports going down:

- ``trainer``: the ``Trainer`` API (validation, the stages in order, save);
- ``corpus``: the texts, packed by :func:`gpu_bytepiece.text.iter_packed`,
  once per counting pass;
- ``ngrams``: the n-gram counting pass, per-level pruning, the n-gram model;
- ``pieces``: the piece counting pass and the piece pruning;
- ``runs``: exact merging of sorted count runs, spilled to disk over a budget;
- ``engines`` / ``cuda_engine``: the stages' array work on the CPU drivers
  (``cpu_fallback.train``, ``cpu_fallback.train_pieces``) or the GPU kernels
  (``kernels.train``);
- ``checkpoint``: the work folder (resumable stages and batches);
- ``ray``: both corpus passes as map steps on Ray actors, reduced here;
- ``memory``: glibc heap settings;
- ``cli``: the ``train`` subcommand (its inputs are read by the pipeline's
  one reader, :class:`gpu_bytepiece.pipeline.InputTexts`).

This package's ``__init__`` imports nothing: the command line registers its
subcommand without importing Numba, and no submodule's import of a sibling
goes through here. The public name is ``gpu_bytepiece.Trainer``.
"""
