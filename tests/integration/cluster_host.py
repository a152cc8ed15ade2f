"""Owns a multi-node `ray.cluster_utils.Cluster` in its own process, driven over stdin/stdout.

A Cluster keeps GCS clients in the process that made it, and a C++ GCS client ends its process 60 s
after that GCS is gone. So the test's cluster lives here, never in pytest's process (which has its
own Ray session for the other tests). Protocol: one JSON line out when the nodes are up
({"dashboard", "head", "workers": {name: node_id}}); then lines in: `kill NAME` (the node is removed
at once, not gracefully; answers `ok`) and `stop` (every node removed, then exit).
"""

from __future__ import annotations

import json
import sys

from ray.cluster_utils import Cluster


def main(spec: dict) -> None:
    head = spec["head"] | {"include_dashboard": True}
    nodes = Cluster(initialize_head=True, head_node_args=head, shutdown_at_exit=True)
    workers = {name: nodes.add_node(**args) for name, args in spec["workers"].items()}
    nodes.wait_for_nodes()
    ready = {"head": nodes.head_node.node_id, "workers": {n: w.node_id for n, w in workers.items()}}
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        command, _, name = line.strip().partition(" ")
        if command == "kill":
            nodes.remove_node(workers.pop(name), allow_graceful=False)
            print("ok", flush=True)
        elif command == "stop":
            break
    nodes.shutdown()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
