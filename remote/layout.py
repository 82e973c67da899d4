"""Remote directory layout under REMOTE_ROOT and safe quoting of paths for the remote shell.

REMOTE_ROOT/
  src/       synced working tree (rsync --delete only ever touches this)
  .venv/     project environment
  runs/      one directory per run; never deleted by this tool
  data/      tokenizers and shards prepared on the host
  env/       secrets (0600), sourced by the launch script
  configs/   config files uploaded for runs
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass


def quote_remote_path(path: str) -> str:
    """shlex.quote, except a leading `~/` stays expandable (quoted `'~'` would be a literal dir)."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def join_command(args: list[str]) -> str:
    """Quote every argument; what reaches the remote shell is exactly these words."""
    return " ".join(shlex.quote(a) for a in args)


@dataclass(frozen=True)
class RemoteLayout:
    root: str

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    @property
    def src(self) -> str:
        return self.path("src")

    @property
    def venv(self) -> str:
        return self.path(".venv")

    @property
    def runs(self) -> str:
        return self.path("runs")

    @property
    def data(self) -> str:
        return self.path("data")

    @property
    def env(self) -> str:
        return self.path("env")

    @property
    def configs(self) -> str:
        return self.path("configs")

    def run_dir(self, run_name: str) -> str:
        return self.path("runs", run_name)

    def q(self, *parts: str) -> str:
        """Quoted path under the root, ready to paste into a remote command."""
        return quote_remote_path(self.path(*parts))
