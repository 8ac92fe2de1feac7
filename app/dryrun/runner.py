"""Running one algorithm job: a local command or `docker run` with the platform's flags, under a time limit."""
from __future__ import annotations

import ctypes
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from images.container_engine import gpu_flags
from petct.errors import InputError

KIT_ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.05
KILL_WAIT_S = 5.0
# Every process of a job inherits this variable; one that left the job's group and tree is still found by it.
JOB_MARK_ENV = "PETCT_DRY_RUN_JOB"
# The platform's local-test flags (docs/grand-challenge.md, "Running a container locally").
PIDS_LIMIT = 256
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


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
    left_processes: list[str] = field(default_factory=list)  # still running when the job's main process exited


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
                    gpus: bool, gpu_devices: list[str] | None = None, model_dir: Path | None = None,
                    name: str | None = None, docker: str = "docker") -> list[str]:
    """`docker run` as the platform runs an algorithm job: no network, read-only input, limits, no privileges.

    The flags and their order are those of docs/grand-challenge.md ("Running a container locally"),
    plus a --name so that a job over its time limit can be killed. With `gpus`, the container gets
    `gpu_devices` (None: every GPU, as on the platform; see petct.gpus).
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
        argv += gpu_flags(docker, gpu_devices)
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


def run_limited(argv: list[str], *, limits: Limits, log: Path, env: dict[str, str] | None = None,
                on_timeout=None, after=None) -> RunOutcome:
    """Run `argv` in its own session and process group, output to `log`; kill its whole tree when it ends.

    At the time limit, and also after a normal exit, every process the job started is killed: its process
    group, each descendant seen while it ran, any process still carrying the job's environment mark
    (a `setsid` daemon that left both the group and the tree), and any orphan re-parented to this process
    (one that also dropped the environment: see become_subreaper). The platform stops a container with its
    main process, so output a straggler writes later must not count. `after()` runs once the job is over
    (e.g. `docker rm -f`). The child is reaped with os.wait4, whose resource usage gives its peak memory.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    mark = secrets.token_hex(16)
    env = {**(os.environ if env is None else env), JOB_MARK_ENV: mark}
    become_subreaper()
    ours = {p.pid for p in _own_descendants()}  # this process's own, not the job's
    started = time.monotonic()
    with open(log, "wb") as out:
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        except OSError as exc:
            raise InputError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
        deadline = started + limits.time_s
        timed_out = False
        seen: dict[int, psutil.Process] = {}
        while True:
            _note_descendants(proc.pid, seen)
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
    seconds = time.monotonic() - started
    orphans = [p for p in _own_descendants() if p.pid not in ours and p.pid != proc.pid]
    left_behind = kill_job_tree(proc.pid, seen=[*seen.values(), *orphans], mark=mark)
    if after is not None:
        after()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    exit_code = None if timed_out else _platform_exit_code(proc.returncode)
    return RunOutcome(exit_code=exit_code, seconds=seconds, timed_out=timed_out,
                      peak_rss_bytes=usage.ru_maxrss * 1024, log=log,
                      left_processes=[] if timed_out else left_behind)


def become_subreaper() -> bool:
    """Have orphans of this process's descendants re-parented here, not to init (Linux's PR_SET_CHILD_SUBREAPER).

    A job's daemon that left its tree, its process group and its environment (`env -i setsid sh -c '(...)&'`)
    then stays a descendant of the dry run, where it is found and killed when the job ends.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: the group, the tree and the mark still find the rest
        return False


def _own_descendants() -> list[psutil.Process]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _note_descendants(pid: int, seen: dict[int, psutil.Process]) -> None:
    try:
        for child in psutil.Process(pid).children(recursive=True):
            seen.setdefault(child.pid, child)  # psutil.Process remembers its start time: no pid-reuse mix-ups
    except psutil.Error:
        pass


def kill_job_tree(pid: int, *, seen, mark: str) -> list[str]:
    """SIGKILL every process of a finished job; 'name (pid N)' of each that was still running."""
    survivors = {p.pid: p for p in seen if _running(p)}
    for process in psutil.process_iter():
        if process.pid not in survivors and process.pid != os.getpid() and _carries_mark(process, mark):
            survivors[process.pid] = process
    # Their own children (started after the last poll) die with them: gather those first.
    for process in list(survivors.values()):
        try:
            for child in process.children(recursive=True):
                survivors.setdefault(child.pid, child)
        except psutil.Error:
            pass
    _kill_group(pid)
    for process in survivors.values():
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(survivors.values()), timeout=KILL_WAIT_S)
    return [f"{_name(p)} (pid {p.pid})" for p in sorted(survivors.values(), key=lambda p: p.pid)]


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _carries_mark(process: psutil.Process, mark: str) -> bool:
    try:
        return process.environ().get(JOB_MARK_ENV) == mark and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # gone, or another user's process: not ours to judge
        return False


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:
        return "?"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
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
