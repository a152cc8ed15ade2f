"""The one pydantic base every config and on-disk record derives from."""

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, PositiveFloat


class StrictModel(BaseModel):
    """Unknown keys are errors, so a typo in YAML or JSON names itself instead of being ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """`set_dotted(raw, "embed.batch_size", 32)` sets raw['embed']['batch_size'], creating sections
    (a section that is null in YAML, e.g. a disabled generator, becomes a mapping)."""
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted!r}: {part!r} is not a section")
    node[leaf] = value


_BUILTIN_RESOURCES = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory", "object_store_memory": "memory"}


def _custom_only(resources: dict[str, float]) -> dict[str, float]:
    for name in resources:
        if name in _BUILTIN_RESOURCES:
            raise ValueError(f"resource {name!r} is not custom: set {_BUILTIN_RESOURCES[name]} instead")
    return resources


# Ray custom resources a task or actor needs, e.g. {"embed_node": 1}: nodes offer them (`ray start
# --resources`, `resources:` of a node type in cluster.yaml), so a stage lands only on such nodes.
CustomResources = Annotated[dict[str, PositiveFloat], AfterValidator(_custom_only)]
