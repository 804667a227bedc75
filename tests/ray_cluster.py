"""A Ray cluster of two nodes on the loopback interface only, for the Ray tests, run as its own process:

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 python tests/ray_cluster.py

It prints one JSON line ({"address", "head", "worker"}: the GCS address and the two node ids), then reads commands
on stdin: `remove` kills the worker node at once, as if its machine were lost (and prints `removed`); `exit` or the
end of stdin shuts the cluster down. `ray.cluster_utils.Cluster` is what Ray's own tests use; with
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (read when Ray is imported) every Ray process binds to 127.0.0.1 and talks to
nothing else. If this process is killed, Ray's reaper ends the cluster's processes.
"""

from __future__ import annotations

import json
import os
import sys

if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
    sys.exit("set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: the test cluster stays on the loopback interface")

from ray.cluster_utils import Cluster  # noqa: E402

NODE = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "object_store_memory": 80 * 2**20}


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args=dict(NODE, include_dashboard=False))
    worker = cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address, "head": cluster.head_node.node_id,
                      "worker": worker.node_id}), flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "remove":
                cluster.remove_node(worker, allow_graceful=False)
                print("removed", flush=True)
            elif line.strip() == "exit":
                break
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
