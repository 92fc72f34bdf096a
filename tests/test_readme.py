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


# --------------------------------------------------------------------------- "paper grid" claims
def _paper_grid_column() -> list[tuple[str, str]]:
    """``(row id, cell)`` of the "paper grid" column of the README's differences table."""
    text = README.read_text()
    start = text.index("| # | point | reference | crossgap default | paper grid | switch |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        rows.append((cells[0], cells[4]))
    return rows


def _values(config: dict, path: str) -> list[tuple[str, object]]:
    """``[(where, value)]`` of a dotted ``path``; ``<d>`` ranges over the datasets whose entry has the next key."""
    nodes = [("", config)]
    keys = path.split(".")
    for i, key in enumerate(keys):
        following = keys[i + 1] if i + 1 < len(keys) else None
        nxt = []
        for where, node in nodes:
            if key == "<d>":
                nxt += [(f"{where}.{d}", entry) for d, entry in node.items() if following is None or following in entry]
            else:
                assert key in node, f"params/paper.yaml has no {where}.{key} (README says paper grid: {path})"
                nxt.append((f"{where}.{key}", node[key]))
        nodes = nxt
    return nodes


def test_every_paper_grid_setting_of_the_differences_table_holds_in_params_paper():
    import yaml

    from crossgap.config import load_params

    config = load_params(README.parent / "params/paper.yaml")
    checked = 0
    for row, cell in _paper_grid_column():
        for path, raw in re.findall(r"`([A-Za-z_<>.]+): ([^`]+)`", cell):
            expected = yaml.safe_load(raw)
            found = _values(config, path)
            assert found, (row, path)
            for where, value in found:
                assert value == expected, f"row {row}: README says paper grid {path}: {raw}, {where} is {value!r}"
                checked += 1
    # rows 1, 1b, 2, 2b, 3, 3b, 5, 6, 7, C1, C2, L, O hold checkable settings (long-text datasets: 9 each)
    assert checked >= 13 + 2 * 9
