"""`rayrag eval answers`: answer a question set with one or two configurations and judge the
answers, as a Ray Data batch job.

Stages are callable classes (models load once per actor, in `__init__`) run by actor pools:
answer with config A -> (answer with config B) -> judge. Each row is one question; a question
whose answering fails keeps its row with the error, so one bad question costs one row, not the run.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import ray

from evaluation.answering import RagAnswerer
from evaluation.beir import read_jsonl
from evaluation.config import AnswerEvalConfig, EvalError, JudgeConfig
from evaluation.judges import AnswerJudge, embedding_distance, string_distances
from serving.config import LlamaCppConfig, ServingSettings


def read_questions(path: Path) -> list[dict[str, Any]]:
    """JSON lines of `{"question": ..., "reference": optional, "id": optional}`."""
    rows = read_jsonl(Path(path), ("question",))
    blank = next((n for n, row in enumerate(rows, 1) if not row["question"].strip()), None)
    if blank or not rows:
        raise EvalError(f"{path}: question {blank} is blank" if blank else f"{path} holds no questions")
    return [{"id": str(row.get("id", n)), "question": row["question"], "reference": row.get("reference") or ""}
            for n, row in enumerate(rows, 1)]  # fmt: skip


class AnswerStage:
    """Adds `answer_<label>`, `passages_<label>`, `model_<label>` (or `error_<label>`) columns."""

    def __init__(self, serving: ServingSettings, label: str) -> None:
        self.answerer = RagAnswerer(serving)
        self.label = label

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = [self._one(q) for q in batch["question"]]
        for key in ("answer", "passages", "model", "error"):
            batch[f"{key}_{self.label}"] = np.array([json.dumps(o.get(key)) for o in outputs], dtype=object)
        return batch

    def _one(self, question: str) -> dict[str, Any]:
        try:
            return asyncio.run(self.answerer.answer(str(question)))
        except Exception as exc:  # noqa: BLE001 - recorded on the question's row
            return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def build_judge(config: JudgeConfig):
    """The judge's generator: the packaged model in llama.cpp, or an OpenAI-compatible endpoint."""
    if config.kind == "openai":
        from evaluation.openai_client import OpenAICompatibleGenerator

        return OpenAICompatibleGenerator(config.base_url, config.model, config.api_key_env, config.timeout_s)
    from serving.generator.llama_cpp_engine import LlamaCppGenerator

    return LlamaCppGenerator(LlamaCppConfig(model=config.model))


class JudgeStage:
    """Adds a `scores` column: every evaluator's result for the row, as JSON."""

    def __init__(self, config: AnswerEvalConfig, embedder, labels: list[str]) -> None:
        from indexes.embedder import load_embedder

        self.judge = AnswerJudge(build_judge(config.judge).generate, config.judge.max_tokens)
        self.embedder = load_embedder(embedder)
        self.labels = labels

    async def _embed(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode(texts)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["question"]))]
        batch["scores"] = np.array([json.dumps(asyncio.run(self._score(row))) for row in rows], dtype=object)
        return batch

    async def _score(self, row: dict[str, Any]) -> dict[str, Any]:
        question, reference = str(row["question"]), str(row["reference"])
        scores: dict[str, Any] = {}
        for label in self.labels:
            answer, passages = json.loads(row[f"answer_{label}"]), json.loads(row[f"passages_{label}"])
            if answer is None:
                continue
            scores[label] = await self._score_answer(question, answer, passages or [], reference)
        answers = [json.loads(row[f"answer_{label}"]) for label in self.labels]
        if len(self.labels) == 2 and None not in answers:
            scores["pairwise"] = await self.judge.pairwise(question, *answers)
        return scores

    async def _score_answer(self, question: str, answer: str, passages: list[str], reference: str) -> dict:
        scores = await self.judge.grades(question, answer, passages)
        scores |= await self.judge.criteria(question, answer, reference or None)
        if reference:
            scores["embedding_distance"] = await embedding_distance(self._embed, answer, reference)
            scores |= string_distances(answer, reference)
        return scores


def run_answer_eval(
    questions: list[dict], configs: dict[str, ServingSettings], settings: AnswerEvalConfig, embedder
) -> list[dict[str, Any]]:
    """Rows of question, answers per label, and their scores (`labels` are "a" and maybe "b")."""
    data = ray.data.from_items(questions, override_num_blocks=min(len(questions), 4 * settings.concurrency))
    for label, serving in configs.items():
        data = data.map_batches(AnswerStage, fn_constructor_kwargs={"serving": serving, "label": label},
                                batch_size=2, concurrency=settings.concurrency, num_cpus=settings.num_cpus)  # fmt: skip
    data = data.map_batches(
        JudgeStage,
        fn_constructor_kwargs={"config": settings, "embedder": embedder, "labels": list(configs)},
        batch_size=2,
        concurrency=settings.concurrency,
        num_cpus=settings.num_cpus,
    )
    return [_decoded(row, list(configs)) for row in data.take_all()]


def _decoded(row: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    out = {"id": row["id"], "question": row["question"], "reference": row["reference"]}
    for label in labels:
        for key in ("answer", "model", "error"):
            out[f"{key}_{label}"] = json.loads(row[f"{key}_{label}"])
    out["scores"] = json.loads(row["scores"])
    return out
