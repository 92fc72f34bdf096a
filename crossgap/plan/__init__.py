"""Static plan of the workflow: which files each dataset × model needs, known without any data.

The DAG must be complete at dry-run time (``snakemake -n`` with no dataset on disk), so
everything here derives from the registered adapters' protocols and published sizes and from
the validated configuration (:func:`crossgap.config.load_params`, or Snakemake's ``validate``),
never from files.  ``workflow/rules/common.smk`` holds only thin input functions that call
these helpers; this module imports neither torch nor Snakemake.

The plan is a package by phase: :mod:`~crossgap.plan.data` (protocols, splits, feature files,
text preparation, the embedded default), :mod:`~crossgap.plan.inversions` (tags per seed, shards,
snapshots), :mod:`~crossgap.plan.evaluation` (each evaluation's inputs, methods, result files) and
:mod:`~crossgap.plan.targets` (the workflow's targets); every public name is importable from here.
"""

from crossgap.plan.data import (  # noqa: F401
    ALL_SPLITS,
    Config,
    split_token,
    protocol_split,
    full_protocol,
    protocol,
    tasks,
    query_split,
    gallery_split,
    zero_shot_split,
    dataset_entry,
    enabled_tasks,
    feature_path,
    preprojection_path,
    prompts_path,
    spaced_text_path,
    class_sentences_path,
    manifest_path,
    feature_files,
    oti_sets,
    ovi_sets,
    query_sets,
    inverted_sets,
    has_text_step,
    source_manifest_path,
    text_options,
    text_step_gpus,
    dataset_pattern,
    generated_datasets,
    synthetic_root,
    generated_split_file,
    pretrained_models,
    model_checkpoint,
    model_spec,
    dataset_spec,
    feature_options,
    text_feature_options,
)
from crossgap.plan.inversions import (  # noqa: F401
    tags,
    seed_tags,
    StaleTagError,
    current_params,
    planned_sizes,
    planned_targets,
    num_shards,
    inversion_dir,
    shard_files,
    inversion_targets,
    inversion_task,
    snapshot_steps,
    snapshot_slug,
    snapshot_file,
)
from crossgap.plan.evaluation import (  # noqa: F401
    result_params,
    method_name,
    retrieval_inputs,
    zero_shot_inputs,
    method_pattern,
    has_modality_gap,
    gap_inputs,
    enabled_transforms,
    method_params,
    dataset_methods,
    result_files,
    per_query_file,
    projections_path,
    classnames_path,
    available_references,
    resolve_references,
    vocabulary_path,
    check_method_params,
)
from crossgap.plan.targets import (  # noqa: F401
    all_manifests,
    all_feature_files,
    all_inversion_files,
    all_loss_curves,
    all_result_files,
    all_per_query_files,
    pretrain_curves,
    all_gap_files,
)
