"""Zero-shot with positive and negative examples: the scoring rule, the cache, and the real tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from tools.synthetic_world import COLOURS, HELD_OUT_SEED, SHAPES, article, balanced_scenes
from worker.models.base import RuntimeOptions
from worker.models.clip_visual import ClipVisual
from worker.models.install import install_pack
from worker.models.packs import PACKS
from worker.models.zero_shot import (
    ClassExamples,
    ZeroShotClassifier,
    build_class_examples,
    class_config_key,
    top_labels,
    zero_shot_scores,
)
from worker.pipeline.image import DecodedImage

TINY = "tiny-vit-shapes"
Tiny = tuple[ClipVisual, ZeroShotClassifier]
HeldOut = list[tuple[str, str, DecodedImage]]


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def _brute_force(
    images: np.ndarray, classes: dict[str, dict[str, list[str]]], vectors: dict[str, np.ndarray]
) -> np.ndarray:
    """The rule written out literally: per class, the single most similar example decides the sign."""
    out = np.zeros((len(images), len(classes)), dtype=np.float64)
    for i, v in enumerate(images):
        for c, spec in enumerate(classes.values()):
            candidates = [(float(1 + vectors[t] @ v) / 2, +1) for t in spec["positive"]]
            candidates += [(float(1 + vectors[t] @ v) / 2, -1) for t in spec.get("negative", [])]
            best = max(d for d, _ in candidates)
            # Ties between a positive and a negative go to the negative.
            sign = -1 if any(d == best and s < 0 for d, s in candidates) else +1
            out[i, c] = sign * best
    return out


def _random_problem(
    seed: int, n_classes: int, dim: int = 16
) -> tuple[dict[str, dict[str, list[str]]], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    classes: dict[str, dict[str, list[str]]] = {}
    texts: list[str] = []
    for c in range(n_classes):
        n_pos, n_neg = int(rng.integers(1, 5)), int(rng.integers(0, 4))
        positive = [f"c{c}-p{k}" for k in range(n_pos)]
        negative = [f"c{c}-n{k}" for k in range(n_neg)]
        # Sometimes share an example between classes (as positive of one, negative of another).
        if texts and rng.random() < 0.3:
            negative.append(texts[int(rng.integers(len(texts)))])
        classes[f"class-{c}"] = {"positive": positive, "negative": negative}
        texts += positive
    all_texts = sorted({t for spec in classes.values() for key in ("positive", "negative") for t in spec[key]})
    vectors = dict(zip(all_texts, _unit(rng.normal(size=(len(all_texts), dim))), strict=True))
    return classes, vectors


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_scores_match_brute_force(seed: int) -> None:
    classes, vectors = _random_problem(seed, n_classes=int(np.random.default_rng(seed).integers(1, 30)))
    images = _unit(np.random.default_rng(100 + seed).normal(size=(40, 16)))
    examples = build_class_examples(classes, lambda texts: np.stack([vectors[t] for t in texts]))
    got = zero_shot_scores(images, examples)
    expected = _brute_force(images, classes, vectors)
    assert got.shape == (40, len(classes))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_without_negatives_it_is_plain_clip_zero_shot() -> None:
    rng = np.random.default_rng(3)
    prompts = _unit(rng.normal(size=(12, 32)))
    images = _unit(rng.normal(size=(50, 32)))
    classes = {f"k{i}": {"positive": [f"prompt {i}"]} for i in range(12)}
    examples = build_class_examples(classes, lambda texts: prompts[[int(t.split()[1]) for t in texts]])
    scores = zero_shot_scores(images, examples)
    cosine = images @ prompts.T
    np.testing.assert_allclose(scores, (1 + cosine) / 2, atol=1e-6)
    assert (scores.argmax(axis=1) == cosine.argmax(axis=1)).all()
    # ... and the softmax CLIP reports ranks the classes the same way.
    logits = 100 * cosine
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    assert (np.argsort(-scores, axis=1) == np.argsort(-softmax, axis=1)).all()


def test_a_negative_example_turns_the_class_score_negative() -> None:
    v = _unit(np.array([[1.0, 0.0, 0.0]]))
    vectors = {
        "dog": _unit(np.array([0.8, 0.6, 0.0])),
        "fox": _unit(np.array([0.95, 0.0, 0.31])),
        "cat": _unit(np.array([0.5, 0.0, 0.87])),
    }
    embed = lambda texts: np.stack([vectors[t] for t in texts])  # noqa: E731
    plain = build_class_examples({"dog": {"positive": ["dog"]}, "cat": {"positive": ["cat"]}}, embed)
    assert top_labels(plain.names, zero_shot_scores(v, plain)[0], None, None)[0].name == "dog"
    guarded = build_class_examples(
        {"dog": {"positive": ["dog"], "negative": ["fox"]}, "cat": {"positive": ["cat"]}}, embed
    )
    scores = zero_shot_scores(v, guarded)[0]
    assert scores[0] == pytest.approx(-(1 + 0.95 / np.linalg.norm([0.95, 0, 0.31])) / 2, abs=1e-6)
    assert top_labels(guarded.names, scores, None, None)[0].name == "cat"


def test_build_class_examples_embeds_each_text_once_and_rejects_classes_without_positives() -> None:
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return _unit(np.random.default_rng(len(texts)).normal(size=(len(texts), 8)))

    examples = build_class_examples(
        {"a": {"positive": ["x", "y"], "negative": ["z"]}, "b": {"positive": ["z"], "negative": ["x"]}}, embed
    )
    assert calls == [["x", "y", "z"]]
    assert isinstance(examples, ClassExamples)
    assert examples.positive.shape == (8, 3) and examples.negative.shape == (8, 2)
    assert examples.negative_classes.tolist() == [0, 1]
    with pytest.raises(ValueError, match="no positive example"):
        build_class_examples({"a": {"positive": [], "negative": ["z"]}}, embed)
    with pytest.raises(ValueError, match="at least one class"):
        build_class_examples({}, embed)


def test_top_labels_sorts_filters_and_truncates() -> None:
    names = ["a", "b", "c", "d"]
    scores = np.array([0.2, 0.9, -0.4, 0.6], dtype=np.float32)
    assert [label.name for label in top_labels(names, scores, None, None)] == ["b", "d", "a", "c"]
    assert [label.name for label in top_labels(names, scores, 0.5, None)] == ["b", "d"]
    assert [label.name for label in top_labels(names, scores, None, 2)] == ["b", "d"]
    assert [label.name for label in top_labels(names, scores, 0.95, None)] == []
    assert top_labels(names, scores, None, 1)[0].score == pytest.approx(0.9)


def test_class_config_key_ignores_order_of_classes_but_not_content() -> None:
    a = {"x": {"positive": ["1"], "negative": []}, "y": {"positive": ["2"]}}
    b = {"y": {"positive": ["2"], "negative": []}, "x": {"positive": ["1"]}}
    assert class_config_key(a) == class_config_key(b)
    assert class_config_key(a) != class_config_key(
        {"x": {"positive": ["1"], "negative": ["2"]}, "y": {"positive": ["2"]}}
    )


# -- the real tiny model ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    model_dir = tmp_path_factory.mktemp("models")
    install_pack(PACKS[TINY], model_dir, model_dir / "wheels")
    runtime = RuntimeOptions(intra_op_threads=1, warmup=False)
    return ClipVisual(TINY, model_dir, runtime), ZeroShotClassifier(TINY, model_dir, runtime)


@pytest.fixture(scope="module")
def held_out() -> HeldOut:
    return [(s.shape, s.colour, DecodedImage.from_array(px)) for s, px in balanced_scenes(HELD_OUT_SEED, 3)]


def _classify(tiny: Tiny, images: list[DecodedImage], classes: dict) -> list[str]:
    visual, classifier = tiny
    embeddings = visual.run_chunk(images, {}, {}, max_batch=64)
    labels = classifier.run_chunk(images, {("clip", "visual"): embeddings}, {"classes": classes})
    return [per_image[0].name for per_image in labels]


def test_tiny_model_zero_shot_accuracy_on_held_out_images(tiny: Tiny, held_out: HeldOut) -> None:
    images = [image for _, _, image in held_out]
    shape_classes = {s: {"positive": [f"a photo of {article(s)} {s}"]} for s in SHAPES}
    colour_classes = {c: {"positive": [f"a photo of something {c}"]} for c in COLOURS}
    shape_acc = np.mean([p == s for p, (s, _, _) in zip(_classify(tiny, images, shape_classes), held_out, strict=True)])
    colour_acc = np.mean(
        [p == c for p, (_, c, _) in zip(_classify(tiny, images, colour_classes), held_out, strict=True)]
    )
    assert shape_acc >= 0.9, shape_acc
    assert colour_acc >= 0.9, colour_acc


def test_without_negatives_the_real_model_gives_plain_clip_zero_shot(tiny: Tiny, held_out: HeldOut) -> None:
    visual, classifier = tiny
    images = [image for _, _, image in held_out]
    embeddings = visual.run_chunk(images, {}, {}, max_batch=64)
    prompts = [f"a photo of a {c} {s}" for c in COLOURS for s in SHAPES]
    labels = classifier.run_chunk(
        images, {("clip", "visual"): embeddings}, {"classes": {p: {"positive": [p]} for p in prompts}}
    )
    cosine = np.stack(embeddings) @ classifier.textual.embed_texts(prompts).T
    assert [row[0].name for row in labels] == [prompts[i] for i in cosine.argmax(axis=1)]
    np.testing.assert_allclose([row[0].score for row in labels], (1 + cosine.max(axis=1)) / 2, atol=1e-6)


def test_text_embeddings_are_cached_per_class_config(tiny: Tiny, held_out: HeldOut) -> None:
    visual, classifier = tiny
    images = [image for _, _, image in held_out[:4]]
    upstream = {("clip", "visual"): visual.run_chunk(images, {}, {})}
    classes = {"circle": {"positive": ["a circle"]}, "star": {"positive": ["a star"]}}
    misses = classifier.text_cache.misses
    first = classifier.run_chunk(images, upstream, {"classes": classes})
    second = classifier.run_chunk(images, upstream, {"classes": dict(reversed(classes.items()))})
    assert classifier.text_cache.misses == misses + 1
    assert [[(label.name, round(label.score, 6)) for label in row] for row in first] == [
        [(label.name, round(label.score, 6)) for label in row] for row in second
    ]
    classifier.run_chunk(images, upstream, {"classes": {**classes, "heart": {"positive": ["a heart"]}}})
    assert classifier.text_cache.misses == misses + 2


def test_negative_examples_flip_decisions_the_right_way(tiny: Tiny, held_out: HeldOut) -> None:
    """'Things of colour C, except shape X': the positive names only the colour, so images of the excluded shape
    in that colour match it too; a negative example naming them must move them to 'other' and nothing else."""
    visual, classifier = tiny
    images = [image for _, _, image in held_out]
    upstream = {("clip", "visual"): visual.run_chunk(images, {}, {}, max_batch=64)}

    def predict(classes: dict) -> list[str]:
        return [labels[0].name for labels in classifier.run_chunk(images, upstream, {"classes": classes})]

    right = wrong = excluded_as_target_before = excluded_as_target_after = 0
    for colour in COLOURS:
        plain = {"target": {"positive": [f"something {colour}"]}, "other": {"positive": ["a shape"]}}
        before = predict(plain)
        for shape in SHAPES:
            negatives = [f"a {colour} {shape}", f"a photo of a {colour} {shape}"]
            after = predict({**plain, "target": {"positive": [f"something {colour}"], "negative": negatives}})
            truth = ["target" if c == colour and s != shape else "other" for s, c, _ in held_out]
            for b, a, t, (s, c, _) in zip(before, after, truth, held_out, strict=True):
                right += b != a and a == t
                wrong += b != a and b == t
                if (s, c) == (shape, colour):
                    excluded_as_target_before += b == "target"
                    excluded_as_target_after += a == "target"
    # Without negatives many excluded images land in 'target'; the negatives move a good share of them, and
    # (almost) never move a correctly classified image.
    assert excluded_as_target_before >= 40, excluded_as_target_before
    assert right >= 20 and wrong <= 2, (right, wrong)
    assert excluded_as_target_after <= 0.75 * excluded_as_target_before, excluded_as_target_after
