"""Keep every library on this process off the network.

Models come from PyPI packages, never from a hub, and unstructured's telemetry ping is disabled.
These are environment variables read lazily by the libraries, so each Ray worker calls
`ensure_offline()` itself: a job submitted to a cluster cannot rely on the driver's environment.
"""

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DO_NOT_TRACK": "true",
    "SCARF_NO_ANALYTICS": "true",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def ensure_offline() -> None:
    """Set the offline switches unless the user set them explicitly."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
