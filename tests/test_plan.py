"""The static plan: parameter tags and result paths."""

from __future__ import annotations

import hashlib
import json

from crossgap import plan

OTI = {"steps": 150, "lr": 0.02, "weight_decay": 0.01, "template": "a photo of £", "batch_size": 64, "seed": 0}


def test_inversion_tag_is_a_content_address():
    tag = plan.inversion_tag(OTI)
    expected = hashlib.sha256(json.dumps(OTI, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]
    assert tag == expected
    assert plan.inversion_tag(dict(reversed(list(OTI.items())))) == tag  # key order does not matter
    assert plan.inversion_tag(dict(OTI, steps=151)) != tag
    assert plan.inversion_tag(dict(OTI, lr=0.020000001)) != tag


def test_result_files_carry_the_tags_of_inverted_methods():
    cfg = {"adapter": "synthetic"}
    files = plan.result_files("synthetic", "tiny", cfg, {}, {"oti": "a" * 10, "ovi": "b" * 10})
    assert "data/results/synthetic/tiny/image_retrieval/image.json" in files
    assert "data/results/synthetic/tiny/image_retrieval/oti-aaaaaaaaaa.json" in files
    assert "data/results/synthetic/tiny/text_retrieval/ovi-bbbbbbbbbb.json" in files
    assert "data/results/synthetic/tiny/zero_shot/standard.json" in files
    assert {f.rsplit("/", 1)[1] for f in files if "/zero_shot/" in f} == {
        "standard.json",
        "oti-aaaaaaaaaa.json",
        "ovi-bbbbbbbbbb.json",
    }
