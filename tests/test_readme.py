"""The README's OTI and OVI examples run verbatim, on a tiny model instead of a downloaded checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import crossgap

README = Path(__file__).resolve().parents[1] / "README.md"


def example(title: str) -> str:
    text = README.read_text()
    match = re.search(rf"### {re.escape(title)}\n\n```python\n(.*?)```", text, re.S)
    assert match, f"README has no '### {title}' python block"
    return match.group(1)


@pytest.mark.parametrize("title, steps", [("Minimal OTI example", 150), ("Minimal OVI example", 1000)])
def test_readme_example_runs(monkeypatch, capsys, tiny_models, title, steps):
    code = example(title)
    assert "from crossgap import" in code and f"steps={steps}" in code
    model = tiny_models["open_clip-vit"]
    calls = []

    def tiny_load_clip(name, pretrained=None, **kwargs):
        calls.append((name, pretrained))
        from open_clip import image_transform

        return model, name, image_transform(32, is_train=False)

    monkeypatch.setattr(crossgap, "load_clip", tiny_load_clip)
    # keep the suite fast: same code, fewer steps
    code = code.replace(f"steps={steps}", "steps=60")
    exec(compile(code, f"README:{title}", "exec"), {})
    assert calls == [("ViT-B/32", "checkpoints/ViT-B-32.pt")]
    similarity = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.5 < similarity <= 1.0
