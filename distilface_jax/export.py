"""`python -m distilface_jax.export --workdir RUN_DIR [--step N|best] --out OUT_DIR`.

Writes a folder that `transformers.AutoModel.from_pretrained(OUT_DIR)` and
`sentence_transformers.SentenceTransformer(OUT_DIR)` load: config.json, model.safetensors,
the tokenizer, and the sentence-transformers modules for the run's evaluation pooler. The
MLP head follows the recipe: dropped when it was train-only (`mlp_only_train`, unsupervised
SimCSE), kept as a Dense(tanh) module otherwise (for BERT also as HF's pooler).
A distilled student (configs/distill_*.py) gets its teacher's pipeline: its pooling, and a
Normalize module when the teacher normalises.
A single-process tool (on a pod, `launch/tpu_pod.sh` runs it on worker 0 with JAX_PLATFORMS=cpu);
the folder appears whole or not at all.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distilface_jax.export", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="the training run's folder")
    parser.add_argument("--step", default=None, help="checkpoint step, 'best', or (default) the latest")
    parser.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    parser.add_argument("--normalize", action="store_true", help="append a Normalize module (unit-length output)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    args = parser.parse_args(argv)

    from distilface_jax import hf, run_model
    try:
        model = run_model.load_run_model(args.workdir, step=args.step)
        out = hf.save_pretrained(args.out, model.config, model.params, model.tokenizer, pooler=model.pooler,
                                 keep_mlp=model.apply_mlp, normalize=args.normalize or model.normalize,
                                 overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported step {model.step} of {args.workdir} ({model.config.model_type}, pooler {model.pooler}"
          f"{', MLP head kept' if model.pooler == 'cls' and model.apply_mlp else ''}) to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
