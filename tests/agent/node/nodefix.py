"""The node service's test config (importable by name: conftest modules of other folders share the
module name ``conftest``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

POLL = 0.05  # seconds between the service's polls in tests


def base_config(node_dir: Path, plugin_dir: Path, pools: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pools": pools,
        "pluginDir": str(plugin_dir),
        "pollSeconds": POLL,
        "fileRoots": [str(node_dir)],
        "deviceRoots": [str(node_dir)],
        "fileOwner": "keep",
    }
