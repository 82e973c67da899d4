"""Push the working tree to REMOTE_ROOT/src and pull files back (rsync, else tar or SFTP)."""

from __future__ import annotations

import posixpath
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Literal

from remote.errors import RemoteCommandError, SettingsError
from remote.layout import quote_remote_path
from remote.session import RemoteSession
from remote.settings import HOST_ALIAS
from remote.sshconfig import rsync_rsh

# Written next to the synced tree: the files we put there, so the next sync removes only our stale files
# (never the egg-info or caches the host created).
MANIFEST = ".diffusionlm-sync-manifest"
Method = Literal["auto", "rsync", "tar"]


def repo_root(start: Path | None = None) -> Path:
    start = start or Path.cwd()
    out = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True)
    if out.returncode != 0:
        raise SettingsError(f"{start} is not inside a git working tree: sync needs `git ls-files`")
    return Path(out.stdout.strip())


def tracked_files(root: Path) -> list[str]:
    """Existing files from `git ls-files -co --exclude-standard`: tracked plus untracked-not-ignored."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, capture_output=True, check=True
    )
    names = [n for n in out.stdout.decode().split("\0") if n]
    return sorted(n for n in set(names) if (root / n).is_file() or (root / n).is_symlink())


def _remote_has(session: RemoteSession, tool: str) -> bool:
    return session.run(f"command -v {tool} >/dev/null", f"look for {tool}", check=False).exited == 0


def _pick_method(session: RemoteSession, method: Method) -> Literal["rsync", "tar"]:
    if method != "auto":
        return method
    if shutil.which("rsync") and _remote_has(session, "rsync"):
        return "rsync"
    return "tar"


def _push_rsync(session: RemoteSession, root: Path, files: list[str], dest: str) -> None:
    cmd = [
        "rsync", "-a", "-z", "--protect-args", "--from0", "--files-from=-",
        "-e", rsync_rsh(session.settings), "./", f"{HOST_ALIAS}:{dest}/",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=root, input="\0".join(files).encode(), capture_output=True)
    if proc.returncode != 0:
        raise RemoteCommandError("rsync push", proc.returncode, proc.stderr.decode(errors="replace"))


def _push_tar(session: RemoteSession, root: Path, files: list[str], dest: str) -> None:
    with tempfile.TemporaryFile() as tmp:
        with tarfile.open(fileobj=tmp, mode="w:gz") as tar:
            for name in files:
                tar.add(root / name, arcname=name, recursive=False)
        tmp.seek(0)
        archive = posixpath.join(session.layout.root, ".sync.tar.gz")
        session.sftp().putfo(tmp, archive)
    q_archive = quote_remote_path(archive)
    unpack = f"tar -xzf {q_archive} -C {quote_remote_path(dest)} && rm -f {q_archive}"
    session.run(unpack, "unpack sync archive")


def _remove_stale(session: RemoteSession, dest: str, files: list[str]) -> int:
    sftp = session.sftp()
    manifest = posixpath.join(dest, MANIFEST)
    try:
        with sftp.open(manifest, "r") as f:
            previous = set(f.read().decode().split("\0")) - {""}
    except OSError:
        previous = set()
    stale = sorted(previous - set(files))
    for i in range(0, len(stale), 200):
        chunk = [posixpath.join(dest, n) for n in stale[i : i + 200]]
        session.run("rm -f -- " + " ".join(quote_remote_path(p) for p in chunk), "remove stale files")
    session.put_bytes("\0".join(files).encode(), manifest)
    return len(stale)


def push_tree(session: RemoteSession, method: Method = "auto", root: Path | None = None) -> str:
    """Mirror the git-visible working tree into REMOTE_ROOT/src; returns the method used."""
    root = root or repo_root()
    files = tracked_files(root)
    dest = session.layout.src
    session.run(f"mkdir -p {quote_remote_path(dest)}", "create src dir")
    used = _pick_method(session, method)
    (_push_rsync if used == "rsync" else _push_tar)(session, root, files, dest)
    removed = _remove_stale(session, dest, files)
    print(f"[remote] synced {len(files)} files to {dest} via {used} ({removed} stale removed)")
    return used


def push_dir(session: RemoteSession, local: Path, dest: str, method: Method = "auto") -> str:
    """Replace remote `dest` with a copy of the local directory `local` (a unit such as an export bundle: nothing
    of an earlier copy survives, and no sync manifest is written into it); returns the method used."""
    if not local.is_dir():
        raise SettingsError(f"{local} is not a directory")
    files = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    q_dest = quote_remote_path(dest)
    session.run(f"rm -rf {q_dest} && mkdir -p {q_dest}", f"clear {dest}")
    used = _pick_method(session, method)
    (_push_rsync if used == "rsync" else _push_tar)(session, local, files, dest)
    print(f"[remote] copied {len(files)} files of {local} to {dest} via {used}")
    return used


def _resolve_remote(session: RemoteSession, path: str) -> str:
    if path.startswith("/"):
        return posixpath.normpath(path)
    return posixpath.normpath(session.layout.path(path.removeprefix("~/")))


def _fetch_sftp(session: RemoteSession, remote: str, local: Path) -> tuple[int, int]:
    """Copy file or tree; complete files are skipped and shorter ones resumed from where they stopped."""
    sftp = session.sftp()
    copied = skipped = 0
    attrs = sftp.stat(remote)
    if stat.S_ISDIR(attrs.st_mode):
        local.mkdir(parents=True, exist_ok=True)
        for entry in sftp.listdir_attr(remote):
            c, s = _fetch_sftp(session, posixpath.join(remote, entry.filename), local / entry.filename)
            copied, skipped = copied + c, skipped + s
        return copied, skipped
    local.parent.mkdir(parents=True, exist_ok=True)
    have = local.stat().st_size if local.is_file() else 0
    if have == attrs.st_size:
        return 0, 1
    if have > attrs.st_size:
        have = 0
    with sftp.open(remote, "rb") as src, open(local, "r+b" if have else "wb") as dst:
        src.seek(have)
        dst.seek(have)
        src.prefetch(attrs.st_size - have)
        shutil.copyfileobj(src, dst, length=1 << 20)
    return 1, 0


def fetch(session: RemoteSession, path: str, dest_dir: Path, method: Method = "auto") -> Path:
    """Pull `path` (relative to REMOTE_ROOT, or absolute) into dest_dir, keeping the relative layout."""
    remote = _resolve_remote(session, path)
    exists = session.run(f"test -e {quote_remote_path(remote)}", "check path", check=False)
    if exists.exited != 0:
        raise RemoteCommandError(f"fetch {path!r}", 1, f"{remote}: no such file or directory on the host")
    rel = posixpath.relpath(remote, session.layout.root)
    local = dest_dir / (posixpath.basename(remote) if rel.startswith("..") else rel)
    used = _pick_method(session, method)
    if used == "rsync":
        local.parent.mkdir(parents=True, exist_ok=True)
        cmd = ["rsync", "-a", "--partial", "--protect-args", "-e", rsync_rsh(session.settings),
               f"{HOST_ALIAS}:{remote}", str(local.parent) + "/"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True)
        if proc.returncode != 0:
            raise RemoteCommandError("rsync fetch", proc.returncode, proc.stderr.decode(errors="replace"))
        print(f"[remote] fetched {remote} -> {local} via rsync")
    else:
        copied, skipped = _fetch_sftp(session, remote, local)
        print(f"[remote] fetched {remote} -> {local} via sftp ({copied} copied, {skipped} already complete)")
    return local
