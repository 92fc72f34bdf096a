"""One source per setting (issue 25): the schema holds every configured default, rules read the config
only through crossgap.plan, library signatures take their defaults from the schema, and the defaults of
result fields are frozen (a changed default would leave finished outputs stale with no rerun, since
rules receive only the values that differ from their defaults)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from crossgap.config import schema_default

REPO = Path(__file__).resolve().parents[1]

#: every result field of the schema with its default, written by hand.  A rule receives a result field only
#: when it differs from this default (crossgap.config.non_default), so changing one of these values would
#: change what a job computes while its params, and so Snakemake's rerun trigger, stay the same.  To change
#: a result, add a field (or a HASHED_WHEN_NOT_DEFAULT entry for the inversions) whose default keeps today's behaviour.
FROZEN_RESULT_DEFAULTS = {
    "synthetic.num_train": 6000, "synthetic.num_test": 256, "synthetic.image_size": 32,
    "synthetic.captions_per_image": 3, "synthetic.seed": 0,
    "pretrain.epochs": 10, "pretrain.batch_size": 128, "pretrain.learning_rate": 0.001, "pretrain.weight_decay": 0.1,
    "pretrain.temperature": None, "pretrain.intramodal_weight": 0.0, "pretrain.seed": 0,
    "prepare.skip_corrupt": False, "prepare.check_images": True, "prepare.truncated_images": "fail",
    "features.precision": "fp32",
    "inversion.seed": 0, "inversion.precision": "fp16",
    "inversion.oti.steps": 150, "inversion.oti.num_pseudo_tokens": 1, "inversion.oti.template": "a photo of {}",
    "inversion.oti.learning_rate": 0.02, "inversion.oti.weight_decay": 0.01,
    "inversion.ovi.steps": 1000, "inversion.ovi.template": "a photo of {}", "inversion.ovi.underscores_as_spaces": False,
    "inversion.ovi.learning_rate": 0.02, "inversion.ovi.weight_decay": 0.01,
    "evaluation.reference_compat": False,
    "evaluation.bootstrap.resamples": 1000, "evaluation.bootstrap.seed": 0, "evaluation.bootstrap.confidence": 0.95,
}
#: settings that never change a result (memory, speed, bookkeeping) or only choose what is planned
RUNTIME_OR_PLAN = {
    "features.batch_size", "features.num_workers", "inversion.shard_size", "inversion.batch_size",
    "inversion.resume_every", "inversion.deterministic", "inversion.seeds", "inversion.oti.snapshots",
    "inversion.ovi.snapshots", "evaluation.chunk_size", "evaluation.tasks", "evaluation.method_params",
    "evaluation.paper_methods",  # which methods the paper tables show (the aggregate gets it in full)
}


def _schema_leaf_defaults() -> dict[str, object]:
    import yaml

    schema = yaml.safe_load((REPO / "workflow/schemas/params.schema.yaml").read_text())
    out: dict[str, object] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, sub in node.get("properties", {}).items():
            if "properties" in sub:
                walk(sub, f"{prefix}{key}.")
            elif "default" in sub:
                out[f"{prefix}{key}"] = sub["default"]
    walk(schema, "")
    return out


def test_result_defaults_are_frozen():
    leaves = _schema_leaf_defaults()
    results = {key: value for key, value in leaves.items() if key not in RUNTIME_OR_PLAN}
    assert results == FROZEN_RESULT_DEFAULTS, (
        "a result field's default changed or a new setting has no entry here: a changed result default leaves "
        "finished outputs stale (rules get only non-default values); add a new field instead, and classify new keys")
    assert RUNTIME_OR_PLAN <= set(leaves), "every runtime/plan key named here exists in the schema"


def test_schema_default_reads_nested_and_per_entry_keys():
    assert schema_default("features.batch_size") == 256
    assert schema_default("evaluation.bootstrap.confidence") == 0.95
    assert schema_default("models.*.ovi_tokens") == 1
    assert schema_default("evaluation.tasks") == ("image_retrieval", "text_retrieval", "zero_shot")
    with pytest.raises(KeyError, match="no key 'features.batch_sise'"):
        schema_default("features.batch_sise")
    with pytest.raises(KeyError, match="'models.\\*.architecture' has no default"):
        schema_default("models.*.architecture")


def _default(func, name):
    return inspect.signature(func).parameters[name].default


def test_library_signatures_take_the_schema_defaults():
    """The defaults that used to disagree with the schema (features.batch_size was 128 in the library, the
    bootstrap's 1000/0/0.95 and the 1024 chunk were written three times) are the schema's, values by hand."""
    from crossgap import comparison, features, inversion, training
    from crossgap.metrics import bootstrap, reference_compat, retrieval
    from crossgap.steps import evaluation, report
    from crossgap.steps import features as feature_steps, inversion as inversion_steps

    expected = [
        (features.encode_images, "batch_size", 256), (features.encode_images, "precision", "fp32"),
        (feature_steps.extract_step, "batch_size", 256), (feature_steps.extract_step, "precision", "fp32"),
        (inversion.oti, "steps", 150), (inversion.oti, "precision", "fp16"),
        (inversion.oti, "template_sentence", "a photo of {}"), (inversion.oti, "learning_rate", 0.02),
        (inversion.ovi, "steps", 1000), (inversion.ovi, "precision", "fp16"), (inversion.ovi, "num_pseudo_tokens", 1),
        (bootstrap.paired_bootstrap, "resamples", 1000), (bootstrap.paired_bootstrap, "seed", 0),
        (bootstrap.paired_bootstrap, "confidence", 0.95), (bootstrap.bootstrap_tables, "resamples", 1000),
        (comparison.add_intervals, "resamples", 1000), (comparison.add_intervals, "confidence", 0.95),
        (retrieval.retrieval_per_query, "chunk_size", 1024), (reference_compat.reference_per_query, "chunk_size", 1024),
        (evaluation.retrieval_step, "chunk_size", 1024), (report.aggregate_step, "seed", 0),
        (training.train_tiny_clip, "epochs", 10), (training.train_tiny_clip, "batch_size", 128),
    ]
    wrong = [(f.__qualname__, name, _default(f, name), value) for f, name, value in expected if _default(f, name) != value]
    assert not wrong
    # and they come from the one place: no literal of a configured value in those signatures
    for module in (features, feature_steps, inversion_steps, inversion, bootstrap, comparison, retrieval,
                   reference_compat, evaluation):
        source = inspect.getsource(module)
        assert not re.search(r"\b(batch_size|chunk_size|resamples|steps|epochs): int = \d", source), module.__name__
        assert not re.search(r"confidence: float = 0\.|precision: str = \"", source), module.__name__


def test_rules_read_the_config_only_through_the_plan():
    """No raw ``config[...]`` in a rule: every value a rule gets comes from a thin get_* function of
    common.smk that calls crossgap.plan (the two lines listing the wildcards' values aside)."""
    allowed = {'DATASETS = sorted(config["datasets"])', 'MODELS = sorted(config["models"])'}
    raw = [f"{path.relative_to(REPO)}: {line.strip()}" for path in [REPO / "Snakefile", *sorted((REPO / "workflow").rglob("*.smk")),
                                                                     REPO / "workflow/Snakefile"]
           if path.is_file() for line in path.read_text().splitlines()
           if "config[" in line and line.strip() not in allowed and not line.strip().startswith("#")]
    assert raw == []
