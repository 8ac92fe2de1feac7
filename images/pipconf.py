"""The host's pip configuration (`pip config list`: files and PIP_* variables) made usable inside an image build.

A build's `pip install` sees none of the host's settings, so behind a proxy, a private index or a local wheel
folder it cannot reach the packages the host can. The settings are merged into one pip.conf that the build
mounts read-only at /etc/pip.conf, and every local file or folder they name (CA bundle, constraints, wheel
folders, file:// indexes) is mounted read-only at the same path.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Keys whose values name local files or folders (possibly several, space-separated, possibly file:// URLs).
PATH_KEYS = ("cert", "client-cert", "find-links", "constraint", "index-url", "extra-index-url")
CONTAINER_PIP_CONF = "/etc/pip.conf"


@dataclass
class PipSettings:
    """pip settings by section, and the local paths they point at."""

    sections: dict[str, dict[str, str]] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)

    def conf_text(self) -> str:
        lines = ["# The build host's pip settings (from `pip config list`), for pip inside image builds."]
        for section, values in self.sections.items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {value}" for key, value in values.items())
        return "\n".join(lines) + "\n"


def parse_config_list(text: str) -> PipSettings:
    """`pip config list` output (`section.key='value'` lines; `:env:` for PIP_* variables, which win)."""
    settings = PipSettings()
    from_env: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot:
            continue
        value = value.strip().strip("'\"")
        if section == ":env:":
            from_env[key] = value
        else:
            settings.sections.setdefault(section, {})[key] = value
    settings.sections.setdefault("global", {}).update(from_env)
    if not settings.sections["global"]:
        del settings.sections["global"]
    seen: set[Path] = set()
    for values in settings.sections.values():
        for key in PATH_KEYS:
            for word in values.get(key, "").split():
                path = _local_path(word)
                if path is not None and path.exists() and path not in seen:
                    seen.add(path)
                    settings.paths.append(path)
    return settings


def _local_path(word: str) -> Path | None:
    if word.startswith("file://"):
        path = Path(word.removeprefix("file://"))
        # A file:// "simple" index links its wheels as ../../files/...: mount the folder that holds both.
        return path.parent if path.name == "simple" else path
    if word.startswith("/"):
        return Path(word)
    return None


def host_pip_settings() -> PipSettings:
    """What the host's pip would use, read with the same pip (files and environment)."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60)
    return parse_config_list(listing.stdout if listing.returncode == 0 else "")


def build_mounts(settings: PipSettings, conf_file: Path) -> list[str]:
    """`--volume` options for a podman build: the merged pip.conf and each local path, all read-only."""
    conf_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = conf_file.with_name(conf_file.name + ".tmp")
    temporary.unlink(missing_ok=True)
    # An index URL may carry a token: readable by the owner only (the build mounts it as root).
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(settings.conf_text())
    temporary.replace(conf_file)
    mounts = [f"--volume={conf_file}:{CONTAINER_PIP_CONF}:ro"]
    mounts += [f"--volume={path}:{path}:ro" for path in settings.paths]
    return mounts
