"""An architecture-true OpenCLIP ViT-B-32 with random weights, for benchmarks only.

    .venv/bin/pip install torch==2.13.0      # dev only
    .venv/bin/python tools/make_vit_b32.py --model-dir /tmp/assetq-bench/models [--textual]

Same shapes as OpenAI's ViT-B-32 (224 px input, 32 px patches, width 768,
12 layers, 12 heads, QuickGELU, 512-d embedding; text: 77 tokens, width 512,
12 layers, 8 heads, the full 49,408-token vocabulary), random weights, written
in the same pack layout as any other CLIP model (``clip/ViT-B-32__random/``).
Its embeddings mean nothing; its speed is the real model's. Nothing it writes
is committed (the visual tower alone is ~350 MB).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.train_tiny_clip import VOCAB_SIZE, TextTower, VisionTower, export, fetch_bpe_vocab  # noqa: E402

NAME = "ViT-B-32__random"
VIT_B_32 = {
    "embed_dim": 512,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "patch_size": 32, "width": 768, "layers": 12, "heads": 12, "mlp_ratio": 4.0},
    "text_cfg": {
        "context_length": 77,
        "vocab_size": VOCAB_SIZE,
        "width": 512,
        "heads": 8,
        "layers": 12,
        "mlp_ratio": 4.0,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/assetq-bench/models"))
    parser.add_argument("--textual", action="store_true", help="also write the text tower (~250 MB)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    t0 = time.time()
    visual = VisionTower(VIT_B_32["embed_dim"], **VIT_B_32["vision_cfg"], quick_gelu=True).eval()  # type: ignore[arg-type]
    textual = None
    if args.textual:
        text_cfg = dict(VIT_B_32["text_cfg"])  # type: ignore[call-overload]
        textual = TextTower(VIT_B_32["embed_dim"], list(range(VOCAB_SIZE)), **text_cfg, quick_gelu=True).eval()  # type: ignore[arg-type]
    out = args.model_dir / "clip" / NAME
    export(out, visual, textual, VIT_B_32, fetch_bpe_vocab())
    params = sum(p.numel() for p in visual.parameters())
    print(f"{NAME}: visual {params / 1e6:.1f} M parameters, written to {out} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
