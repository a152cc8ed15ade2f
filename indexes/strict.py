"""The one pydantic base every config and on-disk record derives from."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors, so a typo in YAML or JSON names itself instead of being ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
