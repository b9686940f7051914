"""An architecture-true OpenAI ViT-B-32 CLIP with random weights, built without torch, for benchmarks only.

    .venv/bin/python tools/make_vit_b32.py --model-dir /tmp/assetq-bench/models [--no-textual] [--seed 0]

The graphs are written node by node with ``onnx.helper`` and filled with
seeded numpy weights, so a fresh clone makes the model with its runtime
dependencies alone (``onnx`` + ``numpy``) in well under a minute.

Shapes are OpenAI's ViT-B-32: image 224 px, 32 px patches, width 768,
12 layers, 12 heads, MLP 3072, QuickGELU, 512-d projection; text 77 tokens,
the full 49,408-token vocabulary, width 512, 12 layers, 8 heads, causal mask,
pooled at the end-of-text token, 512-d projection. The ops are the ones
``torch.onnx.export`` writes for OpenCLIP's blocks (opset 17: Conv,
LayerNormalization, MatMul + Add, Softmax, QuickGELU as Mul/Sigmoid/Mul), so
ONNX Runtime fuses and times it as it does the torch export: ~88 M visual
parameters, 4.41 GMACs (8.8 GFLOPs counting a multiply-add as 2) per image.

Its embeddings mean nothing; its speed is the real model's. The pack is
written in the layout of any other CLIP pack (``clip/ViT-B-32__random/``)
with an ``assetq.json`` whose ``source`` names the generator version and seed,
so callers can tell a pack they can reuse from a stale one. Nothing it writes
is committed (~600 MB).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
NAME = "ViT-B-32__random"
# Bump when the graphs change: packs made by another version are remade.
GENERATOR_VERSION = 1
OPSET = 17
# CLIP's BPE vocabulary as a tokenizer.json, already in the repository (the bundled tiny CLIP ships it).
BUNDLED_TOKENIZER = ROOT / "worker/models/bundled/clip/tiny-vit-shapes/textual/tokenizer.json"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIT_B_32: dict[str, Any] = {
    "embed_dim": 512,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "patch_size": 32, "width": 768, "layers": 12, "heads": 12, "mlp_ratio": 4.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12, "mlp_ratio": 4.0},
}


def source_tag(seed: int, cfg: dict[str, Any] = VIT_B_32) -> str:
    """What ``assetq.json`` records as the pack's source: same tag, same bytes."""
    shape = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
    return f"tools/make_vit_b32.py v{GENERATOR_VERSION} seed {seed} config {shape}"


@dataclass
class GraphBuilder:
    """Collects nodes and initializers; every name it hands out is unique."""

    rng: np.random.Generator
    nodes: list[onnx.NodeProto]
    inits: list[onnx.TensorProto]
    _count: int = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.require(value, requirements="C"), name))  # keeps 0-d scalars 0-d
        return name

    def weight(self, hint: str, shape: tuple[int, ...], std: float) -> str:
        return self.const(hint, (self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std)))

    def op(
        self, op_type: str, inputs: list[str], hint: str | None = None, output: str | None = None, **attrs: Any
    ) -> str:
        out = output or self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x: str, d_in: int, d_out: int, hint: str) -> str:
        """``nn.Linear`` as the torch export writes it for a 3-D input: MatMul by W^T, then Add bias."""
        w = self.weight(f"{hint}.weight_t", (d_in, d_out), d_in**-0.5)
        b = self.const(f"{hint}.bias", np.zeros(d_out, dtype=np.float32))
        return self.op("Add", [self.op("MatMul", [x, w]), b], hint)

    def layer_norm(self, x: str, width: int, hint: str) -> str:
        gamma = self.const(f"{hint}.weight", np.ones(width, dtype=np.float32))
        beta = self.const(f"{hint}.bias", np.zeros(width, dtype=np.float32))
        return self.op("LayerNormalization", [x, gamma, beta], hint, axis=-1, epsilon=1e-5)

    def block(self, x: str, width: int, heads: int, mlp_ratio: float, mask: str | None, hint: str) -> str:
        """OpenCLIP's pre-LN ResidualAttentionBlock: x + attn(ln_1(x)); x + mlp(ln_2(x))."""
        head_dim = width // heads
        qkv = self.linear(self.layer_norm(x, width, f"{hint}.ln_1"), width, 3 * width, f"{hint}.qkv")
        # (B, N, 3W) -> (3, B, heads, N, head_dim); 0 in a Reshape target keeps that dimension (the batch).
        shape5 = self.const("shape", np.array([0, 0, 3, heads, head_dim], dtype=np.int64))
        qkv = self.op("Transpose", [self.op("Reshape", [qkv, shape5])], perm=[2, 0, 3, 1, 4])
        q, k, v = (self.op("Gather", [qkv, self.const("idx", np.array(i, dtype=np.int64))], axis=0) for i in range(3))
        scores = self.op("MatMul", [q, self.op("Transpose", [k], perm=[0, 1, 3, 2])])
        scores = self.op("Mul", [scores, self.const("scale", np.array(head_dim**-0.5, dtype=np.float32))])
        if mask is not None:
            scores = self.op("Add", [scores, mask])
        attn = self.op("MatMul", [self.op("Softmax", [scores], axis=-1), v])
        shape3 = self.const("shape", np.array([0, 0, width], dtype=np.int64))
        attn = self.op("Reshape", [self.op("Transpose", [attn], perm=[0, 2, 1, 3]), shape3])
        x = self.op("Add", [x, self.linear(attn, width, width, f"{hint}.out_proj")], f"{hint}.resid_1")
        hidden = int(width * mlp_ratio)
        h = self.linear(self.layer_norm(x, width, f"{hint}.ln_2"), width, hidden, f"{hint}.c_fc")
        # QuickGELU, x * sigmoid(1.702 x): OpenAI CLIP's activation (ONNX Runtime fuses it to QuickGelu).
        gelu_scale = self.const("gelu", np.array(1.702, dtype=np.float32))
        h = self.op("Mul", [h, self.op("Sigmoid", [self.op("Mul", [h, gelu_scale])])])
        return self.op("Add", [x, self.linear(h, hidden, width, f"{hint}.c_proj")], f"{hint}.resid_2")

    def l2_normalise(self, x: str) -> str:
        """F.normalize(x, dim=-1): divide by max(||x||, 1e-12)."""
        norm = self.op("ReduceL2", [x], axes=[-1], keepdims=1)
        eps = self.const("eps", np.array(1e-12, dtype=np.float32))
        return self.op("Div", [x, self.op("Max", [norm, eps])], output="embedding")


def _model(b: GraphBuilder, inp: onnx.ValueInfoProto, out: str, dim: int, doc: str) -> onnx.ModelProto:
    output = helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", dim])
    graph = helper.make_graph(b.nodes, doc, [inp], [output], initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="assetq")
    model.ir_version = 8  # what opset 17 exports carry; every onnxruntime since 1.14 reads it
    model.doc_string = doc
    return model


def build_visual(cfg: dict[str, Any], rng: np.random.Generator) -> onnx.ModelProto:
    """(B, 3, 224, 224) float32 -> (B, 512) L2-normalised embedding."""
    v, embed = cfg["vision_cfg"], cfg["embed_dim"]
    width, patch, size = v["width"], v["patch_size"], v["image_size"]
    tokens = (size // patch) ** 2 + 1
    b = GraphBuilder(rng, [], [])
    conv_w = b.weight("conv1.weight", (width, 3, patch, patch), (3 * patch * patch) ** -0.5)
    x = b.op("Conv", ["image", conv_w], "conv1", kernel_shape=[patch, patch], strides=[patch, patch])
    x = b.op("Reshape", [x, b.const("shape", np.array([0, width, -1], dtype=np.int64))])
    x = b.op("Transpose", [x], perm=[0, 2, 1])  # (B, patches, width)
    # The class token, expanded to (B, 1, width) from the input's own batch size.
    batch = b.op("Slice", [b.op("Shape", [x]), b.const("i0", np.array([0])), b.const("i1", np.array([1]))])
    cls_shape = b.op("Concat", [batch, b.const("shape", np.array([1, width], dtype=np.int64))], axis=0)
    cls = b.op("Expand", [b.weight("class_embedding", (1, 1, width), width**-0.5), cls_shape])
    x = b.op("Concat", [cls, x], axis=1)
    x = b.op("Add", [x, b.weight("positional_embedding", (tokens, width), width**-0.5)])
    x = b.layer_norm(x, width, "ln_pre")
    for i in range(v["layers"]):
        x = b.block(x, width, v["heads"], v["mlp_ratio"], None, f"visual.{i}")
    x = b.op("Gather", [x, b.const("idx", np.array(0, dtype=np.int64))], axis=1)  # the class token
    x = b.op("MatMul", [b.layer_norm(x, width, "ln_post"), b.weight("proj", (width, embed), width**-0.5)])
    out = b.l2_normalise(x)
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])
    return _model(b, inp, out, embed, f"{NAME} visual (random weights)")


def build_textual(cfg: dict[str, Any], rng: np.random.Generator) -> onnx.ModelProto:
    """(B, 77) int32 CLIP BPE ids -> (B, 512) L2-normalised embedding, pooled at the end-of-text token."""
    t, embed = cfg["text_cfg"], cfg["embed_dim"]
    width, ctx = t["width"], t["context_length"]
    b = GraphBuilder(rng, [], [])
    x = b.op("Gather", [b.weight("token_embedding", (t["vocab_size"], width), 0.02), "text"], axis=0)
    x = b.op("Add", [x, b.weight("positional_embedding", (ctx, width), 0.01)])
    causal = b.const("causal_mask", np.triu(np.full((ctx, ctx), -np.inf, dtype=np.float32), 1))
    for i in range(t["layers"]):
        x = b.block(x, width, t["heads"], t["mlp_ratio"], causal, f"text.{i}")
    x = b.layer_norm(x, width, "ln_final")
    # End-of-text has the largest id in CLIP's vocabulary: pool at the argmax, as OpenCLIP does.
    eot = b.op("ArgMax", [b.op("Cast", ["text"], to=TensorProto.INT64)], axis=-1, keepdims=1)  # (B, 1)
    # x[b, eot[b]] as torch.gather writes it (GatherElements, then Squeeze): shape inference keeps (B, width).
    index = b.op(
        "Expand", [b.op("Unsqueeze", [eot, b.const("axes", np.array([2]))]), b.const("shape", np.array([1, 1, width]))]
    )
    x = b.op("Squeeze", [b.op("GatherElements", [x, index], axis=1), b.const("axes", np.array([1]))])
    x = b.op("MatMul", [x, b.weight("text_projection", (width, embed), width**-0.5)])
    out = b.l2_normalise(x)
    inp = helper.make_tensor_value_info("text", TensorProto.INT32, ["batch", ctx])
    return _model(b, inp, out, embed, f"{NAME} textual (random weights)")


def parameter_count(model: onnx.ModelProto) -> int:
    """Learned parameters: float initializers but scalars and the causal mask (constants, not weights)."""
    return sum(
        int(np.prod(init.dims))
        for init in model.graph.initializer
        if init.data_type == TensorProto.FLOAT and init.dims and not init.name.startswith("causal_mask")
    )


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def write_pack(
    model_dir: Path, seed: int = 0, textual: bool = True, cfg: dict[str, Any] = VIT_B_32, name: str = NAME
) -> Path:
    """Write ``<model_dir>/clip/<name>`` (replacing any earlier one) and return its path.

    ``cfg`` and ``name`` are for tests, which write the same graphs at a few kB instead of 580 MB.
    """
    out = model_dir / "clip" / name
    staging = out.with_name(f".{name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "visual").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    onnx.save(build_visual(cfg, rng), str(staging / "visual" / "model.onnx"))
    size = cfg["vision_cfg"]["image_size"]
    _write_json(
        staging / "visual" / "preprocess_cfg.json",
        {
            "size": [size, size],
            "mode": "RGB",
            "mean": list(OPENAI_CLIP_MEAN),
            "std": list(OPENAI_CLIP_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
            "fill_color": 0,
        },
    )
    if textual:
        (staging / "textual").mkdir()
        onnx.save(build_textual(cfg, rng), str(staging / "textual" / "model.onnx"))
        shutil.copyfile(BUNDLED_TOKENIZER, staging / "textual" / "tokenizer.json")
        _write_json(
            staging / "textual" / "tokenizer_config.json",
            {
                "model_max_length": cfg["text_cfg"]["context_length"],
                "pad_token": "<|endoftext|>",
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "do_lower_case": True,
                "tokenizer_class": "CLIPTokenizer",
            },
        )
    _write_json(staging / "config.json", cfg)
    _write_json(
        staging / "assetq.json",
        {
            "family": "openclip",
            "licence": "random weights made by assetq (Apache-2.0); tokenizer vocabulary MIT (OpenAI CLIP)",
            "source": source_tag(seed, cfg),
            "textual": textual,
        },
    )
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)  # a reader never sees a half-written pack
    return out


def is_current(pack: Path, seed: int = 0, textual: bool = True, cfg: dict[str, Any] = VIT_B_32) -> bool:
    """Whether ``pack`` was written by this generator version from ``cfg`` and ``seed`` (with the towers asked for)."""
    manifest = pack / "assetq.json"
    if not manifest.is_file() or not (pack / "visual" / "model.onnx").is_file():
        return False
    if textual and not (pack / "textual" / "model.onnx").is_file():
        return False
    return bool(json.loads(manifest.read_text()).get("source") == source_tag(seed, cfg))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/assetq-bench/models"))
    parser.add_argument("--no-textual", dest="textual", action="store_false", help="write the image tower only")
    parser.add_argument(
        "--textual", action="store_true", default=True, help=argparse.SUPPRESS
    )  # the old flag; now the default
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.time()
    out = write_pack(args.model_dir, args.seed, args.textual)
    params = parameter_count(onnx.load(str(out / "visual" / "model.onnx"), load_external_data=False))
    print(f"{NAME}: visual {params / 1e6:.1f} M parameters, written to {out} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
