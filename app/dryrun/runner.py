"""Running one algorithm job: a local command or `docker run` with the platform's flags, under a time limit."""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from petct.errors import InputError

KIT_ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.05
# The platform's local-test flags (../shared/reference/grand-challenge.md, "Local test runs").
PIDS_LIMIT = 256


@dataclass(frozen=True)
class Limits:
    time_s: float
    memory_bytes: int


@dataclass
class RunOutcome:
    exit_code: int | None  # None: killed at the time limit
    seconds: float
    timed_out: bool
    peak_rss_bytes: int | None  # local commands only (Docker enforces --memory itself)
    log: Path


def default_command() -> list[str]:
    """The kit's own inference container, run from this checkout."""
    return [sys.executable, "-m", "algorithm", "--input", "{input}", "--output", "{output}"]


def command_argv(template: str | list[str], *, input_dir: Path, output_dir: Path) -> list[str]:
    """The words of a command template with {input} and {output} filled in (after splitting: spaces are safe)."""
    words = shlex.split(template) if isinstance(template, str) else list(template)
    joined = " ".join(words)
    if not words or "{input}" not in joined or "{output}" not in joined:
        raise InputError(f"--command must use both {{input}} and {{output}}: {template!r}")
    return [w.replace("{input}", str(input_dir)).replace("{output}", str(output_dir)) for w in words]


def docker_run_argv(*, image: str, input_dir: Path, output_dir: Path, tmp_dir: Path, memory: str, shm_size: str,
                    gpus: bool, model_dir: Path | None = None, name: str | None = None,
                    docker: str = "docker") -> list[str]:
    """`docker run` as the platform runs an algorithm job: no network, read-only input, limits, no privileges.

    The flags and their order are those of ../shared/reference/grand-challenge.md ("Local test runs"),
    plus a --name so that a job over its time limit can be killed.
    """
    mounts = [(input_dir, "/input:ro"), (output_dir, "/output"), (tmp_dir, "/tmp")]
    if model_dir is not None:
        mounts.append((model_dir, "/opt/ml/model:ro"))
    for folder, _ in mounts:
        if ":" in str(Path(folder).resolve()):  # -v splits on ':'
            raise InputError("docker -v cannot mount a folder whose path holds ':'; use another --workdir",
                             path=folder)
    argv = [docker, "run", "--rm", "--platform=linux/amd64", "--network", "none"]
    if name:
        argv += ["--name", name]
    if gpus:
        argv += ["--gpus", "all"]
    argv += [f"--memory={memory}", f"--memory-swap={memory}", f"--shm-size={shm_size}",
             f"--pids-limit={PIDS_LIMIT}", "--cap-drop=ALL", "--security-opt=no-new-privileges"]
    for folder, target in mounts:
        argv += ["-v", f"{Path(folder).resolve()}:{target}"]
    return argv + [image]


PLATFORM_OS_ARCH = "linux/amd64"


def check_docker_image(image: str, *, docker: str = "docker", env: dict[str, str] | None = None) -> None:
    """Refuse, before any job runs, an image Docker does not have locally or one built for another platform.

    Without this, `docker run` would try to pull a missing image, and every study would fail the same way with
    the reason only in its log.
    """
    try:
        found = subprocess.run([docker, "image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", image],
                               capture_output=True, text=True, timeout=120, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"--image {image}: {docker} image inspect failed: {exc}") from None
    if found.returncode != 0:
        reason = (found.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise InputError(f"--image {image}: not usable: {reason} (build it first: make images, or {docker} build "
                         f"--platform {PLATFORM_OS_ARCH} -t {image} .)")
    os_arch = found.stdout.strip()
    if os_arch != PLATFORM_OS_ARCH:
        raise InputError(f"--image {image} is built for {os_arch}; grand-challenge runs {PLATFORM_OS_ARCH} only")


def gpu_present() -> bool:
    """Whether `nvidia-smi -L` lists a GPU (then `docker run` gets --gpus all, as on the platform)."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listing.returncode == 0 and "GPU" in listing.stdout


def run_limited(argv: list[str], *, limits: Limits, log: Path, env: dict[str, str] | None = None,
                on_timeout=None) -> RunOutcome:
    """Run `argv` in its own process group, output to `log`; kill the group at the time limit.

    The child is reaped with os.wait4, whose resource usage gives its peak resident memory.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "wb") as out:
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        except OSError as exc:
            raise InputError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
        deadline = started + limits.time_s
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() >= deadline:
                timed_out = True
                if on_timeout is not None:
                    on_timeout()  # e.g. `docker kill`: killing the client leaves the container running
                _kill_group(proc.pid)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(POLL_S)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    exit_code = None if timed_out else _platform_exit_code(proc.returncode)
    return RunOutcome(exit_code=exit_code, seconds=time.monotonic() - started, timed_out=timed_out,
                      peak_rss_bytes=usage.ru_maxrss * 1024, log=log)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _platform_exit_code(code: int) -> int:
    """Death by signal N reads as 128 + N, as a container's exit status does (SIGKILL: 137)."""
    return 128 - code if code < 0 else code


def tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
