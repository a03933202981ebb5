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

`--model FOLDER` re-exports any supported HF / sentence-transformers folder (its own pipeline,
as `encode --model` reads it). `--format onnx` adds `onnx/model.onnx` (and with `--quantize int8`
`onnx/model_qint8_dynamic.onnx`): a graph whose `sentence_embedding` output is the final
embedding, pooling, heads, width map, `--dim` truncation and normalisation inside
(interop/onnx_graph.py; docs/edge.md). `--dim D` keeps the first D coordinates (a Matryoshka
model): written as sentence-transformers' `truncate_dim`, and in the graph truncated, then
re-normalised when the model normalises.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from distilface_jax import run_folder
from distilface_jax.cli.model_arguments import STEP_HELP, check_step, make_parser
from distilface_jax.cli.policy import UsageError, configure_output, run_main
from distilface_jax.interop import onnx_export
from distilface_jax.models.sentence_pipeline import PROJECTION


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = make_parser("python -m distilface_jax.export", __doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="the training run's folder")
    source.add_argument("--model", help="a local HF / sentence-transformers model folder to re-export")
    parser.add_argument("--step", default=None, help=STEP_HELP)
    parser.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    parser.add_argument("--normalize", action="store_true", help="append a Normalize module (unit-length output)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument(
        "--format",
        choices=("hf", "onnx"),
        default="hf",
        help="hf: the HF + sentence-transformers folder; onnx: the same folder plus onnx/model.onnx",
    )
    parser.add_argument(
        "--quantize", choices=onnx_export.QUANTIZATIONS, default=None, help="with --format onnx: also an int8 graph"
    )
    parser.add_argument("--dim", type=int, default=None, help="keep the first DIM embedding coordinates (Matryoshka)")
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


def _check_options(args) -> None:
    """Flag combinations, checked before anything is read."""
    if args.quantize and args.format != "onnx":
        raise UsageError(f"--quantize {args.quantize} needs --format onnx")
    if args.dim is not None and args.dim < 1:
        raise UsageError(f"--dim must be >= 1, got {args.dim}")
    if args.model and args.step is not None:
        raise UsageError("--step goes with --workdir")
    if args.format == "onnx":
        try:
            onnx_export.require("onnx")
            if args.quantize:
                onnx_export.require("onnxruntime")
        except onnx_export.MissingDependency as error:
            raise UsageError(str(error)) from None


def _load(args):
    """(pipeline, params, step) of --workdir or --model, with --normalize and --dim applied."""
    from distilface_jax import trained_model

    if args.workdir:
        if not run_folder.is_remote(args.workdir) and not Path(args.workdir).is_dir():
            raise UsageError(f"--workdir {args.workdir}: no such folder")
        model = trained_model.load_run_model(args.workdir, step=args.step)
        pipeline, params, step = model.pipeline, model.params, model.step
    else:
        from distilface_jax.cli.model_arguments import load_model

        # The folder's own pipeline, its truncation (max_seq_length) and kept width (truncate_dim) included.
        pipeline, params = load_model(
            argparse.Namespace(model=args.model, workdir=None, step=None, pooler=None, max_length=None),
            folder_truncation=True,
        )
        step = None
    if args.normalize:
        pipeline = pipeline.replace(normalize=True)
    if args.dim is not None:
        full = pipeline.width_map or pipeline.encoder.hidden_size
        if args.dim > full:
            raise UsageError(f"--dim {args.dim}: the model's embeddings have {full} dimensions")
        pipeline = pipeline.replace(output_dim=args.dim)
    return pipeline, params, step


def _export(args) -> int:
    from distilface_jax.interop import hf

    _check_options(args)
    check_step(args.step)
    _check_out(args.out, args.overwrite)
    try:
        pipeline, params, step = _load(args)
        write_onnx = None
        if args.format == "onnx":
            write_onnx = lambda staging: onnx_export.write_pipeline(staging, pipeline, params, quantize=args.quantize)
        out = hf.save_pretrained(args.out, pipeline, params, overwrite=args.overwrite, write_extra=write_onnx)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as error:
        if isinstance(error, UsageError):
            raise
        raise UsageError(str(error).strip("'\"")) from error
    extras = [
        "MLP head kept" if pipeline.uses_mlp else "",
        "width map kept" if PROJECTION in params and pipeline.width_map is not None else "",
        f"first {pipeline.output_dim} dimensions" if pipeline.output_dim else "",
        "onnx" + (f" + {args.quantize}" if args.quantize else "") if args.format == "onnx" else "",
    ]
    what = f"step {step} of {args.workdir}" if args.workdir else args.model
    print(
        f"exported {what} ({pipeline.encoder.model_type}, pooler {pipeline.pooler}"
        f"{''.join(', ' + e for e in extras if e)}) to {out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
