"""Evaluation: retrieval (incl. revisited Oxford/Paris), zero-shot classification, result files."""

from crossgap.metrics.results import TASK_METHODS, aggregate_results, read_result, write_result
from crossgap.metrics.retrieval import (
    RetrievalPerQuery,
    evaluate_retrieval,
    retrieval_per_query,
    summarize_retrieval,
)
from crossgap.metrics.revisited import evaluate_revisited, revisited_per_query, setup_ground_truth
from crossgap.metrics.zeroshot import build_classifier, evaluate_zero_shot

__all__ = [
    "TASK_METHODS",
    "RetrievalPerQuery",
    "aggregate_results",
    "build_classifier",
    "evaluate_retrieval",
    "evaluate_revisited",
    "evaluate_zero_shot",
    "read_result",
    "retrieval_per_query",
    "revisited_per_query",
    "setup_ground_truth",
    "summarize_retrieval",
    "write_result",
]
