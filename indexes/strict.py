"""The one pydantic base every config and on-disk record derives from."""

from typing import Any

from pydantic import BaseModel, ConfigDict


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
