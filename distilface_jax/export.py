"""`python -m distilface_jax.export --workdir RUN_DIR [--step N|best] --out OUT_DIR`.

Writes a folder that `transformers.AutoModel.from_pretrained(OUT_DIR)` and
`sentence_transformers.SentenceTransformer(OUT_DIR)` load: config.json, model.safetensors,
the tokenizer, and the sentence-transformers modules for the run's evaluation pooler. The
MLP head follows the recipe: dropped when it was train-only (`mlp_only_train`, unsupervised
SimCSE), kept as a Dense(tanh) module otherwise (for BERT also as HF's pooler).
A distilled student (configs/distill_*.py) gets its teacher's pipeline: its pooling, its
truncation length, and a Normalize module when the teacher normalises; a student narrower than
its teacher trained with `distill.keep_projection=True` also gets its width map as a linear
Dense module (Pooling → Dense → Normalize), so it gives teacher-wide embeddings.
A single-process tool (on a pod, `launch/tpu_pod.sh` runs it on worker 0 with JAX_PLATFORMS=cpu);
the folder appears whole or not at all. `--step best` exports the checkpoint with the highest
STS-B dev score (WORKDIR/best/, what `launch/tpu_pod.sh` exports); a number, that step's
checkpoint; no `--step`, the latest. Bad input: one line on stderr, exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from distilface_jax import run_folder
from distilface_jax.cli.model_arguments import STEP_HELP, check_step, make_parser
from distilface_jax.cli.policy import UsageError, configure_output, run_main
from distilface_jax.evaluation.inference import PROJECTION


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = make_parser("python -m distilface_jax.export", __doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="the training run's folder")
    parser.add_argument("--step", default=None, help=STEP_HELP.replace("with --workdir, which", "which"))
    parser.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    parser.add_argument("--normalize", action="store_true", help="append a Normalize module (unit-length output)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    args = parser.parse_args(argv)
    if argv is None:  # Run as the program: process-wide output settings (not when a test calls main).
        configure_output(args.verbosity)
    return run_main(lambda: _export(args))


def _check_out(out: str, overwrite: bool) -> None:
    """--out is usable, checked before the checkpoint is read."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: exists and is a file")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UsageError(f"--out {out}: folder exists and is not empty (pass --overwrite to replace it)")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UsageError(f"--out {out}: {parent} is a file, not a folder")


def _export(args) -> int:
    from distilface_jax import trained_model
    from distilface_jax.interop import hf

    check_step(args.step)
    _check_out(args.out, args.overwrite)
    if not run_folder.is_remote(args.workdir) and not Path(args.workdir).is_dir():
        raise UsageError(f"--workdir {args.workdir}: no such folder")
    try:
        model = trained_model.load_run_model(args.workdir, step=args.step)
        out = hf.save_pretrained(
            args.out,
            model.config,
            model.params,
            model.tokenizer,
            pooler=model.pooler,
            keep_mlp=model.apply_mlp,
            normalize=args.normalize or model.normalize,
            projection=model.params.get(PROJECTION),
            max_seq_length=model.max_length,
            overwrite=args.overwrite,
        )
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as error:
        raise UsageError(str(error).strip("'\"")) from error
    print(
        f"exported step {model.step} of {args.workdir} ({model.config.model_type}, pooler {model.pooler}"
        f"{', MLP head kept' if model.pooler == 'cls' and model.apply_mlp else ''}"
        f"{', width map kept' if PROJECTION in model.params else ''}) to {out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
