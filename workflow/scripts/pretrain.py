"""Rule pretrain_tiny: train the tiny CLIP of the embedded default on the synthetic train split."""

from pathlib import Path

from crossgap.config import with_defaults
from crossgap.runtime import job_setup
from crossgap.training import train_tiny_clip
from crossgap.utils import write_json

job_setup(snakemake.log[0], snakemake.threads)
p = with_defaults("pretrain", snakemake.params.pretrain)
summary = train_tiny_clip(
    Path(snakemake.input.data).parent.parent,
    snakemake.output.checkpoint,
    model_name=snakemake.params.architecture,
    epochs=p["epochs"],
    batch_size=p["batch_size"],
    lr=p["learning_rate"],
    weight_decay=p["weight_decay"],
    temperature=p["temperature"],
    intramodal_weight=p["intramodal_weight"],
    seed=p["seed"],
    loss_csv=snakemake.output.loss_curve,
    epoch_csv=snakemake.output.epoch_curve,
    num_threads=snakemake.threads,
)
write_json(snakemake.output.summary, summary)
