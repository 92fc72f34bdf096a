"""crossgap import-reference names the query rows of COCO, Flickr30k, nocaps and IMDB as the reference
does (miccunifi/Cross-the-Gap src/datasets/{coco_text,flickr30k_text,nocaps_text,imdb_text}.py), with
no names map: the runs here are written in the reference's layout, named as its dataset classes name
each text, from the small files of tests/fixtures_text_datasets.py in the datasets' real layouts."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures_text_datasets import make_coco_karpathy, make_flickr30k, make_imdb, make_nocaps
from test_interop import write_reference_run

from crossgap.cli import main
from crossgap.datasets import prepare_manifest
from crossgap.interop import ReferenceImportError, import_reference


@pytest.fixture(scope="module")
def model(tiny_model_and_preprocess):
    return tiny_model_and_preprocess[0]


def _import(tmp_path, model, tiny_spec, dataset, split, names, **kw):
    manifest = tmp_path / "manifests" / f"{dataset}.parquet"
    prepare_manifest(dataset, tmp_path / "raw", manifest)
    tokens = torch.randn(len(names), 1, model.visual_token_embedding_dim, generator=torch.Generator().manual_seed(3))
    run = write_reference_run(tmp_path / "ref", "ovi", dataset, split, names, tokens, batch_size=2, steps=2)
    _, fs = import_reference(run, manifest=manifest, dataset=dataset, model_slug="tiny", model_spec=tiny_spec,
                             out=tmp_path / "queries.safetensors", model=model, **kw)
    return tokens, fs


def test_coco_queries_named_by_sentid(tmp_path, model, tiny_spec):
    make_coco_karpathy(tmp_path / "raw")  # test images 0 (sentids 0-4) and 2 (sentids 20-25)
    tokens, fs = _import(tmp_path, model, tiny_spec, "coco_text", "test_query", ["20", "0"])
    assert fs.ids == ["test/COCO_val2014_000000000001.jpg#0", "test/COCO_val2014_000000000003.jpg#0"]
    assert fs.meta["imported_from"]["naming"] == "reference" and fs.meta["imported_from"]["set"] == "queries"
    torch.testing.assert_close(fs.extras["pseudo_tokens"], tokens.flip(0))


def test_coco_names_need_the_annotation_file(tmp_path, model, tiny_spec):
    make_coco_karpathy(tmp_path / "raw")
    manifest = tmp_path / "m.parquet"
    prepare_manifest("coco_text", tmp_path / "raw", manifest)
    source = tmp_path / "raw" / "COCO2014" / "dataset_coco_light.json"
    data = json.loads(source.read_text())
    del data["images"][2]["sentences"][0]["sentid"]
    source.write_text(json.dumps(data))
    run = write_reference_run(tmp_path / "ref", "ovi", "coco_text", "test_query", ["0", "20"],
                              torch.zeros(2, 1, model.visual_token_embedding_dim), batch_size=2, steps=2)
    with pytest.raises(ReferenceImportError) as info:
        import_reference(run, manifest=manifest, dataset="coco_text", model_slug="tiny", model_spec=tiny_spec,
                         out=tmp_path / "q.safetensors", model=model)
    assert str(info.value).endswith(
        f". {source}: the reference names coco_text captions by str(sentid) of each sentence; 1 target(s) have "
        "no such name (e.g. ['COCO_val2014_000000000003.jpg#0']: a sentence without 'sentid'); give --names-map "
        "for them")
    source.unlink()
    with pytest.raises(ReferenceImportError, match=f"{source}: missing \\(the manifest was built from it"):
        import_reference(run, manifest=manifest, dataset="coco_text", model_slug="tiny", model_spec=tiny_spec,
                         out=tmp_path / "q.safetensors", model=model)


@pytest.mark.parametrize("broken_line, names", [
    (False, ["1000268201.jpg_0", "10002456.jpg_0"]),  # pandas reads comment_number as integers
    (True, ["1000268201.jpg_ 0", "10002456.jpg_ 0"]),  # one line without its delimiter: the column stays text
])
def test_flickr30k_queries_named_image_comment_number(tmp_path, model, tiny_spec, broken_line, names):
    make_flickr30k(tmp_path / "raw", broken_line=broken_line)  # val: 10002456.jpg, 1000268201.jpg
    tokens, fs = _import(tmp_path, model, tiny_spec, "flickr30k_text", "val_query", names)
    assert fs.ids == ["val/10002456.jpg#0", "val/1000268201.jpg#0"]
    assert fs.meta["imported_from"]["naming"] == "reference"
    torch.testing.assert_close(fs.extras["pseudo_tokens"], tokens.flip(0))


def test_flickr30k_query_on_a_line_without_delimiter_cannot_be_named(tmp_path, model, tiny_spec):
    make_flickr30k(tmp_path / "raw", broken_line=False)
    results = tmp_path / "raw" / "Flickr30K" / "results.csv"
    results.write_text(results.read_text().replace("10002456.jpg| 0| ", "10002456.jpg| 0   "))
    with pytest.raises(ReferenceImportError) as info:
        _import(tmp_path, model, tiny_spec, "flickr30k_text", "val_query", ["10002456.jpg_ 0", "1000268201.jpg_ 0"])
    assert str(info.value).endswith(
        f". {results}: the reference names flickr30k_text captions by f'{{image_name}}_{{comment_number}}' as "
        "pandas reads results.csv; 1 target(s) have no such name (e.g. ['10002456.jpg#0']: a line without its "
        "second delimiter: pandas reads it as a row without a caption, on which the reference fails); give "
        "--names-map for them")


def test_nocaps_queries_named_by_caption_id(tmp_path, model, tiny_spec):
    make_nocaps(tmp_path / "raw")  # annotations interleaved: ids 0, 1, 2 are the first captions of images 1, 0, 2
    tokens, fs = _import(tmp_path, model, tiny_spec, "nocaps_text", "val_query", ["2", "0", "1"])
    assert fs.ids == ["val/00223c1a1b5d7a2a.jpg#0", "val/0013ea2087020901.jpg#0", "val/0041ab0c0e1e8b20.jpg#0"]
    assert fs.meta["imported_from"]["naming"] == "reference"
    torch.testing.assert_close(fs.extras["pseudo_tokens"], tokens[[1, 2, 0]])


def test_imdb_queries_named_by_their_sentence(tmp_path, model, tiny_spec, capsys):
    make_imdb(tmp_path / "raw")
    names = ["a negative review of a movie.", "a positive review of a movie."]
    tokens, fs = _import(tmp_path, model, tiny_spec, "imdb_text", "query", names)
    assert fs.ids == ["query/positive", "query/negative"] and fs.meta["imported_from"]["naming"] == "text"
    torch.testing.assert_close(fs.extras["pseudo_tokens"], tokens.flip(0))
    # the CLI needs no --names-map either
    params = tmp_path / "params.yaml"
    params.write_text("models:\n  tiny:\n" + "".join(f"    {k}: {v}\n" for k, v in tiny_spec.items()))
    run = tmp_path / "ref" / "data" / "ovi_pseudo_tokens" / "imdb_text" / "query" / "exp1"
    assert main(["import-reference", str(run), "--dataset", "imdb_text", "--model", "tiny", "--manifest",
                 str(tmp_path / "manifests" / "imdb_text.parquet"), "--params", str(params),
                 "--out", str(tmp_path / "cli.safetensors")]) == 0
    assert "2 ovi inversions of set 'queries' (naming 'text', 2 reference rows)" in capsys.readouterr().out
