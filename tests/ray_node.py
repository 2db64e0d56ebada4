"""`ray start` for a cluster whose nodes all live on this machine's loopback.

With RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 Ray keeps every address on 127.0.0.1
instead of resolving it to the machine's outward address, but its CLI then
refuses to start a worker node ("multi-node clusters are not supported"). This
runs the same CLI with only that one check seeing multi-node mode allowed; Ray's
address resolution still sees 0 and stays on loopback.

    python tests/ray_node.py start --address=127.0.0.1:PORT --node-ip-address=127.0.0.1 ...
"""

import os
import sys
import types

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from ray._private import ray_constants  # noqa: E402
from ray.scripts import scripts  # noqa: E402


class _MultiNodeConstants(types.ModuleType):
    def __getattr__(self, name: str) -> object:
        return getattr(ray_constants, name)


constants = _MultiNodeConstants("ray_constants")
constants.ENABLE_RAY_CLUSTER = True  # type: ignore[attr-defined]
scripts.ray_constants = constants  # type: ignore[attr-defined]

if __name__ == "__main__":
    sys.argv[0] = "ray"
    sys.exit(scripts.main())
