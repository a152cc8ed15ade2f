"""Strict settings of `rayrag eval`: the `eval:` section of `configs/*.yaml`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from core.strict import StrictModel
from indexes.config import IndexesConfig
from pipelines.config import IndexJobConfig
from serving.config import ServeConfig


class EvalError(ValueError):
    """An evaluation that cannot run as asked: a bad dataset, an unknown mode, rerank without a model."""


RetrievalMode = Literal["dense", "bm25", "hybrid", "mmr", "rerank"]


class GateConfig(StrictModel):
    """`make eval-gate`: nDCG@10 of the configured retriever on a fixed subset, against the figure that
    `rayrag eval gate --record` wrote to `record` (committed); a drop of more than `margin` fails CI."""

    dataset: str = "python-faq"
    split: Literal["dev", "test"] = "test"  # the held-out half: tuning happens on dev
    queries: PositiveInt = 60
    distractors: NonNegativeInt = 400
    seed: int = 0
    record: Path = Path("reports/eval-gate.json")
    margin: PositiveFloat = 0.03


class JudgeConfig(StrictModel):
    """The LLM judge of answer evaluation: the packaged model through the project's own llama.cpp
    generator, or any OpenAI-compatible endpoint."""

    kind: Literal["llama_cpp", "openai"] = "llama_cpp"
    model: str = "smollm2-135m-instruct"
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1
    api_key_env: str = "OPENAI_API_KEY"
    max_tokens: PositiveInt = 96
    timeout_s: PositiveFloat = 60.0

    @model_validator(mode="after")
    def _endpoint_for_openai(self) -> JudgeConfig:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("base_url is required when kind is openai (e.g. http://127.0.0.1:8000/v1)")
        return self


class AnswerEvalConfig(StrictModel):
    concurrency: PositiveInt = 1  # Ray Data actors per stage (answer A, answer B, judge)
    num_cpus: PositiveFloat = 0.5  # per actor: three stages must fit a 2-core machine at once
    judge: JudgeConfig = JudgeConfig()


class EvalConfig(StrictModel):
    datasets_dir: Path = Path(".rayrag/eval/datasets")  # datasets built by name (python-faq)
    workdir: Path = Path(".rayrag/eval/indexes")  # one index per dataset, updated incrementally
    reports_dir: Path = Path(".rayrag/eval/reports")
    published: Path = Path("configs/eval/published.yaml")
    depth: PositiveInt = 100  # chunks retrieved per query; documents are ranked by their best chunk
    recall_at: tuple[PositiveInt, ...] = (10, 100)
    gate: GateConfig = GateConfig()
    answers: AnswerEvalConfig = AnswerEvalConfig()


class EvalSettings(StrictModel):
    """What an evaluation reads of the root config: the shared indexes, the index job that indexes a
    dataset, the serving app it measures, and `eval:` itself (rayrag.config.RootConfig.evaluation)."""

    indexes: IndexesConfig = IndexesConfig()
    index_job: IndexJobConfig = IndexJobConfig()
    serve: ServeConfig = ServeConfig()
    eval: EvalConfig = EvalConfig()
