"""Locust users for `bench/load.py`: each posts `/v1/search` back to back (no think time), so N
users keep N requests in flight. Index and queries come from the environment."""

import itertools
import os

from locust import FastHttpUser, constant, task

QUERIES = ["How do I create a virtual environment?", "What does secrets.token_hex do?", "list vs tuple",
           "read a CSV file", "match file names with a wildcard", "where is Python installed"]  # fmt: skip


class SearchUser(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.questions = itertools.cycle(QUERIES)
        self.index = os.environ.get("RAYRAG_BENCH_INDEX", "bench")
        self.mode = os.environ.get("RAYRAG_BENCH_MODE", "dense")  # the bare side's work: encode + FAISS

    @task
    def search(self) -> None:
        self.client.post("/v1/search", json={"query": next(self.questions), "index": self.index, "top_k": 5,
                                                "mode": self.mode})  # fmt: skip
