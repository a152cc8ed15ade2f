"""Autoscaling that can work: the checks every serving config passes before anything is deployed.

Ray Serve accepts any `autoscaling_config`; some of ours could never do what they say. A replica
holds at most `max_ongoing_requests`, and Serve's guide sets that above the target (a target above
it is the callers' queue, not the replica's load). The router sends a generator at most its chain
step's `max_queue_depth` (else `router.max_queue_depth`) requests per router replica and then moves
on down the chain (it spills, it does not queue), so a generator whose target is that many or more never scales out; the
same holds for the retriever, which gets at most `serve.retriever.coalesce.in_flight` calls per gateway replica (each a
batch of searches, see `HandleRetriever`). And a deployment
at `min_replicas: 0` is cold when the first request comes: only a generator with a later chain step
that is always up (the extractive step, or a generator kept at one replica or more) can afford it:
the router then reads its replica count from Serve instead of polling it (serving/router.py).
`ServeConfig` runs these checks (it hands them plain values: this module imports no config), so
`rayrag serve`, `serve run`/`deploy` (the app builder) and `rayrag deploy check` all refuse such a
config, naming the keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

ROLE_OF = {"vllm": "primary", "llama_cpp": "fallback"}  # Serve deployment name -> config section


class Reach(NamedTuple):
    """The most requests a deployment's callers ever have in flight to it, in the words of the
    refusal: who sends them, which keys bound that, and the key to raise."""

    requests: int
    sender: str
    bound: str
    fix: str


def problems(deployments: Mapping[str, Any], chain: list[str], reach: Mapping[str, Reach]) -> list[str]:
    """What cannot work in the autoscaling of `deployments` (Serve name -> its `DeploymentConfig`),
    given the chain's steps in order and what the callers send a deployment at most (its chain role,
    or its name: the retriever; none: unbounded); one sentence per problem, each naming its keys
    (empty: all can work)."""
    found = []
    for name, deployment in deployments.items():
        key = f"serve.{ROLE_OF.get(name, name)}.deployment"
        scaling = deployment.autoscaling
        target = scaling.target_ongoing_requests
        if scaling.max_replicas > 1 and target > deployment.max_ongoing_requests:
            found.append(f"{key}.autoscaling.target_ongoing_requests ({target:g}) is over {key}.max_ongoing_requests "
                         f"({deployment.max_ongoing_requests}): a replica never holds that many")  # fmt: skip
        sent = reach.get(ROLE_OF.get(name, name))
        if sent is not None and scaling.max_replicas > 1 and target >= sent.requests:
            found.append(f"{key}.autoscaling.target_ongoing_requests ({target:g}) is at or over what {sent.sender} it "
                         f"({sent.requests}: {sent.bound}), so it never scales out: raise {sent.fix}")  # fmt: skip
        if scaling.min_replicas == 0 and (why := _why_not_zero(deployments, chain, name)):
            found.append(f"{key}.autoscaling.min_replicas is 0: {why}")
    return found


def _why_not_zero(deployments: Mapping[str, Any], chain: list[str], name: str) -> str | None:
    """Why this deployment cannot scale to zero (None: it can): nothing stands in for it while it
    starts, unless it is a generator with a later chain step that is always up."""
    if name not in ROLE_OF or ROLE_OF[name] not in chain:
        return "nothing answers in its place while it starts (only a generator with a later chain step can)"
    later = chain[chain.index(ROLE_OF[name]) + 1 :]
    warm = {ROLE_OF[n] for n, d in deployments.items() if n in ROLE_OF and d.autoscaling.min_replicas > 0}
    if "extractive" not in later and not warm & set(later):
        return "nothing answers in its place while it starts (no later chain step is always up)"
    return None
