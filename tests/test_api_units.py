"""The pure parts of ``producer/api``: how requests are split into chunks, and Immich's answer shapes."""

from __future__ import annotations

import json

import pytest

from producer.api.immich import EntriesError, answer, image_tasks, parse_entries, text_model
from producer.api.interactive import split

FACES = {"facial-recognition": {"detection": {"modelName": "buffalo_s"}, "recognition": {"modelName": "buffalo_s"}}}


@pytest.mark.parametrize(
    ("n", "chunk_size", "slots", "sizes"),
    [
        (4, 16, 1, [4]),  # one pool process: one chunk
        (4, 16, 2, [2, 2]),  # two: one chunk each, so neither idles
        (5, 16, 2, [3, 2]),
        (1, 16, 4, [1]),
        (40, 16, 2, [14, 13, 13]),  # never over chunk_size
        (3, 16, 8, [1, 1, 1]),
    ],
)
def test_a_window_is_split_over_the_pool_processes(n: int, chunk_size: int, slots: int, sizes: list[int]) -> None:
    parts = split(n, chunk_size, slots)
    assert [p.stop - p.start for p in parts] == sizes
    assert parts[0].start == 0 and parts[-1].stop == n


def test_answers_take_immichs_shape() -> None:
    result = {
        "status": "ok",
        "image": {"width": 200, "height": 100},
        "faces": [{"box": [10.4, 20.6, 50.5, 80.2], "score": 0.9, "embedding": [0.6, 0.8], "landmarks": []}],
        "ocr": [{"box": [[20, 10], [100, 10], [100, 30], [20, 30]], "text": "OPEN", "score": 0.97, "box_score": 0.8}],
        "clip": {"embedding": [1.0, 0.0]},
    }
    tasks = image_tasks(
        {
            **FACES,
            "clip": {"visual": {"modelName": "tiny-vit-shapes"}},
            "ocr": {"detection": {"modelName": "PP-OCRv6_small"}, "recognition": {"modelName": "PP-OCRv6_small"}},
        }
    )
    out = answer(result, tasks)
    face = out["facial-recognition"][0]
    assert face["boundingBox"] == {"x1": 10, "y1": 21, "x2": 50, "y2": 80}  # whole pixels, as Immich's detector
    assert json.loads(face["embedding"]) == [0.6, 0.8] and face["score"] == 0.9
    assert json.loads(out["clip"]) == [1.0, 0.0]
    assert out["ocr"] == {
        "text": ["OPEN"],
        "box": [0.1, 0.1, 0.5, 0.1, 0.5, 0.3, 0.1, 0.3],  # fractions of width and height
        "boxScore": [0.8],
        "textScore": [0.97],
    }
    assert (out["imageWidth"], out["imageHeight"]) == (200, 100)


def test_entries_are_read_strictly() -> None:
    assert text_model(parse_entries('{"clip": {"textual": {"modelName": "m", "options": {"language": "en"}}}}')) == "m"
    with pytest.raises(EntriesError) as e:
        parse_entries('{"clip": {}, "clip": {}}')
    assert "duplicate" in str(e.value)
    with pytest.raises(EntriesError) as e:
        image_tasks({"facial-recognition": {"detection": {"modelName": "buffalo_s", "options": {"minScore": 5}}}})
    assert e.value.errors[0][0] == "entries.facial-recognition.detection.options.minScore"


def test_workers_read_their_queues_in_a_fixed_order() -> None:
    # Round robin would let a bulk queue come first now and then; the interactive queue must always lead.
    from config.settings import Settings
    from worker.app import celery_config

    assert celery_config(Settings(_env_file=None))["broker_transport_options"]["queue_order_strategy"] == "priority"
