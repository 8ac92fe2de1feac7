"""The Dockerfile, read as data (no Docker engine here): targets, users, entry points, environment."""
from __future__ import annotations

import ast
import fnmatch
import json
import re
import shlex
import sys
from dataclasses import dataclass, field

import pytest

from app_helpers import REPO

TARGETS = {"algorithm": "algorithm", "evaluation": "evaluation", "app": "app"}  # target -> python -m module
KIT_PACKAGES = ("petct", "algorithm", "evaluation", "app", "images")


@dataclass
class Stage:
    name: str
    base: str
    platform: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Build args and stages: comments dropped, continuation lines joined, instructions upper-cased."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            logical.append(current)
            current = ""
    args, stages = {}, []
    for line in logical:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif word == "FROM":
            match = re.match(r"(?:--platform=(\S+)\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            platform, base, name = match.groups()
            stages.append(Stage(name=name or str(len(stages)), base=base, platform=platform))
        else:
            stages[-1].instructions.append((word, rest))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile((REPO / "Dockerfile").read_text())


def chain(stages: list[Stage], name: str) -> list[Stage]:
    """The stage and the stages it builds on, base first."""
    by_name = {s.name: s for s in stages}
    out = [by_name[name]]
    while out[0].base in by_name:
        out.insert(0, by_name[out[0].base])
    return out


def instructions(stages: list[Stage], name: str) -> list[tuple[str, str]]:
    return [i for stage in chain(stages, name) for i in stage.instructions]


def resolve(base: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), base)


def test_targets_exist_on_amd64(dockerfile):
    args, stages = dockerfile
    names = {s.name for s in stages}
    assert set(TARGETS) <= names
    for target in TARGETS:
        root = chain(stages, target)[0]
        assert root.platform == "linux/amd64", target


def test_algorithm_runs_on_a_cuda_pytorch_runtime_and_evaluation_without_torch(dockerfile):
    args, stages = dockerfile
    algorithm_base = resolve(chain(stages, "algorithm")[0].base, args)
    assert algorithm_base.startswith("pytorch/pytorch:") and "cuda" in algorithm_base and "runtime" in algorithm_base
    evaluation_base = resolve(chain(stages, "evaluation")[0].base, args)
    assert "torch" not in evaluation_base and "slim" in evaluation_base
    installs = " ".join(rest for word, rest in instructions(stages, "evaluation") if word == "RUN")
    assert "torch" not in installs
    for requirement in re.findall(r"-r\s+(\S+)", installs):
        text = (REPO / requirement.removeprefix("/opt/app/")).read_text()
        assert not re.search(r"^\s*torch", text, re.MULTILINE), requirement


@pytest.mark.parametrize("target,module", TARGETS.items())
def test_each_target_runs_its_module_as_an_existing_non_root_user(dockerfile, target, module):
    _, stages = dockerfile
    steps = instructions(stages, target)
    users = [rest.strip() for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    final_user = users[-1].split(":")[0]
    first_user_at = next(i for i, (word, rest) in enumerate(steps) if word == "USER" and rest.strip() == final_user)
    created = [rest for word, rest in steps[:first_user_at] if word == "RUN" and re.search(r"\buseradd\b", rest)]
    assert any(re.search(rf"\buseradd\b.*\s{re.escape(final_user)}(\s|$)", run) for run in created), \
        "the USER must be created with useradd before it is used"

    entrypoints = [rest for word, rest in steps if word == "ENTRYPOINT"]
    assert entrypoints, target
    argv = json.loads(entrypoints[-1])  # exec form: a JSON array, so signals reach python
    assert argv == ["python", "-m", module]
    workdirs = [rest.strip() for word, rest in steps if word == "WORKDIR"]
    assert workdirs[-1] == "/opt/app"
    env = " ".join(rest for word, rest in steps if word == "ENV")
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    copies = [rest for word, rest in steps if word == "COPY"]
    assert any(re.search(r"(^|\s)petct/?\s+/opt/app/petct/?$", c) for c in copies), "shared code in every image"
    assert any(re.search(rf"(^|\s){module}/?\s+/opt/app/{module}/?$", c) for c in copies)
    cmds = [rest for word, rest in steps if word == "CMD"]
    assert all(c.startswith("[") for c in cmds), "exec-form CMD"


@pytest.mark.parametrize("target", TARGETS)
def test_installs_run_as_root_and_code_is_root_owned_and_readable(dockerfile, target):
    """pip and useradd need root (the app stage inherits the algorithm's USER, so it must switch back); the
    code stays root's (the user must not change it) and a chmod after the last COPY makes it readable whatever
    the build machine's umask. `make image-test` checks the result in the built image."""
    _, stages = dockerfile
    steps = instructions(stages, target)
    user = "root"
    last_copy = max(i for i, (word, rest) in enumerate(steps) if word == "COPY" and "/opt/app/" in rest)
    for i, (word, rest) in enumerate(steps):
        if word == "USER":
            user = rest.strip()
        elif word == "RUN" and re.search(r"pip install|useradd|groupadd|chown|chmod|mkdir", rest):
            assert user in ("root", "0"), f"{target}: '{rest[:60]}' runs as {user}"
        elif word == "COPY" and "/opt/app/" in rest:
            assert "--chown" not in rest, f"{target}: COPY {rest} gives the code to its user"
    assert any(word == "RUN" and re.search(r"chmod -R \S*go=rX\S* /opt/app", rest) for word, rest in steps[last_copy:])


@pytest.mark.parametrize("target", TARGETS)
def test_entry_points_do_not_depend_on_the_working_directory(dockerfile, target):
    _, stages = dockerfile
    env = " ".join(rest for word, rest in instructions(stages, target) if word == "ENV")
    assert re.search(r"\bPYTHONPATH=/opt/app\b", env)


@pytest.mark.parametrize("target", TARGETS)
def test_each_package_is_copied_once(dockerfile, target):
    _, stages = dockerfile
    targets = [rest.split()[-1].rstrip("/") for word, rest in instructions(stages, target) if word == "COPY"]
    assert len(targets) == len(set(targets)), targets


def test_no_frontend_image_is_fetched_and_the_algorithm_engine_is_a_build_arg():
    text = (REPO / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)  # BuildKit would pull it from Docker Hub
    _, stages = parse_dockerfile(text)
    algorithm_env = " ".join(rest for word, rest in instructions(stages, "algorithm") if word == "ENV")
    assert "PETCT_KIT_ENGINE=${ALGORITHM_ENGINE}" in algorithm_env
    assert any(word == "ARG" and rest.strip() == "ALGORITHM_ENGINE=nnunet"
               for word, rest in instructions(stages, "algorithm"))
    app_env = [rest for stage in stages if stage.name == "app" for word, rest in stage.instructions if word == "ENV"]
    assert any("PETCT_KIT_ENGINE=auto" in rest for rest in app_env)


def test_algorithm_prepares_the_model_location(dockerfile):
    _, stages = dockerfile
    runs = " ".join(rest for word, rest in instructions(stages, "algorithm") if word == "RUN")
    assert "/opt/ml/model" in runs


# Import name -> the distribution that provides it, where they differ (starlette comes with fastapi).
DISTRIBUTION_OF = {"SimpleITK": "simpleitk", "cc3d": "connected-components-3d", "python_multipart": "python-multipart",
                   "starlette": "fastapi", "yaml": "pyyaml", "markupsafe": "jinja2", "fastapi_offline": "fastapi-offline",
                   "skimage": "scikit-image", "distributed": "dask"}
# Optional libraries the images leave out, per package: the report and mip commands' (the scoring path must never
# import them at module level; test_eval_report_html checks it never loads them at all), and Dask for
# predict-folder on a cluster. Only the modules named beside them, themselves imported lazily, may import
# them at module level.
OPTIONAL = {"evaluation": ("evaluation/report-requirements.txt", ()),
            "algorithm": ("algorithm/requirements-distributed.txt", ("algorithm/batch_cluster.py",)),
            "app": ("algorithm/requirements-distributed.txt", ())}  # campaigns on a cluster


def _third_party_imports(package: str, *, lazy: bool = True, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Top-level module -> a file of `package` importing it, for every import outside the stdlib and the kit
    (with lazy=False, module-level imports only; files in `skip`, relative to the repository, left out)."""
    found = {}
    for path in sorted((REPO / package).rglob("*.py")):
        if str(path.relative_to(REPO)) in skip:
            continue
        tree = ast.parse(path.read_text())
        for node in (ast.walk(tree) if lazy else tree.body):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in KIT_PACKAGES:
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def _requirement_names(path: str) -> set[str]:
    lines = (REPO / path.removeprefix("/opt/app/")).read_text().splitlines()
    names = {re.match(r"[A-Za-z0-9_.-]+", line.strip()).group(0) for line in lines
             if line.strip() and not line.strip().startswith(("#", "-"))}
    return {re.sub(r"[-_.]+", "-", n).lower() for n in names}


@pytest.mark.parametrize("target", TARGETS)
def test_every_import_of_an_image_is_installed_in_it(dockerfile, target):
    """A module imported by code the image copies but installed by none of its requirements breaks the image at
    run time, where no test here would see it: the venv has everything."""
    args, stages = dockerfile
    steps = instructions(stages, target)
    installs = " ".join(rest for word, rest in steps if word == "RUN" and "pip install" in rest)
    installed = set().union(*(_requirement_names(r) for r in re.findall(r"-r\s+(\S+)", installs)))
    if resolve(chain(stages, target)[0].base, args).startswith("pytorch/"):
        installed.add("torch")
    copied = {m.group(1) for word, rest in steps if word == "COPY"
              for m in [re.search(r"(\w+)/?\s+/opt/app/\1/?$", rest)] if m and m.group(1) in KIT_PACKAGES}
    assert copied, target
    for package in sorted(copied):
        requirements, lazy_modules = OPTIONAL.get(package, (None, ()))
        eager = _third_party_imports(package, lazy=False, skip=lazy_modules)
        optional = _requirement_names(requirements) if requirements else set()
        for module, where in _third_party_imports(package).items():
            distribution = DISTRIBUTION_OF.get(module, module).lower()
            if distribution in optional and distribution not in installed:
                assert module not in eager, f"{target}: {eager[module]} imports {module} at module level"
                continue
            assert distribution in installed, \
                f"{target}: {where} imports {module}, which no requirement of the image installs"


def test_modules_that_import_optional_libraries_are_imported_lazily():
    """A module allowed to import an optional library at module level must itself never be imported so."""
    for _, lazy_modules in OPTIONAL.values():
        for module in lazy_modules:
            dotted = module.removesuffix(".py").replace("/", ".")
            for path in sorted(REPO.glob("*/**/*.py")):
                if ".venv" in path.parts or path.parts[len(REPO.parts)] not in KIT_PACKAGES:
                    continue
                for node in ast.parse(path.read_text()).body:
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                        [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
                    assert dotted not in names, f"{path.relative_to(REPO)} imports {dotted} at module level"


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns used here: later lines win, `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        hit = any(fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))
        if pattern.startswith("**/"):
            hit = hit or any(fnmatch.fnmatch(p, pattern[3:]) for p in parts)
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_images_copy_and_nothing_else(dockerfile):
    _, stages = dockerfile
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = {src for stage in stages for word, rest in stage.instructions if word == "COPY" and "--from" not in rest
               for src in rest.split()[:-1] if not src.startswith("--")}
    for source in sources:
        for path in ([source] if not (REPO / source).is_dir() else
                     [str(p.relative_to(REPO)) for p in (REPO / source).rglob("*.py")]):
            assert not _ignored(path, patterns), path
    for excluded in (".venv/bin/python", ".git/config", "test/test_petct.py", "out/dry-run/metrics.json"):
        assert _ignored(excluded, patterns), excluded


def test_ci_example_dry_runs_an_image():
    yaml = pytest.importorskip("yaml", reason="PyYAML (installed with schemathesis) reads the workflow")
    workflow = yaml.safe_load((REPO / "examples" / "github-dry-run.yml").read_text())
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    commands = "\n".join(step.get("run", "") for step in steps)
    assert "docker build" in commands and "--platform linux/amd64" in commands
    assert re.search(r"python -m app dry-run --image", commands)
    assert "--junit" in commands


def _app_commands(code: str) -> list[list[str]]:
    """The arguments after `-m app` of every shell line in `code` that runs the app."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        if "-m app " not in line:
            continue
        words = shlex.split(line, comments=True)
        commands.append(words[words.index("app", words.index("-m")) + 1:])
    return commands


def test_documented_app_commands_parse():
    """Every `python -m app ...` line in README.md and the CI example uses options the app has."""
    from app.__main__ import _parser

    yaml = pytest.importorskip("yaml", reason="PyYAML (installed with schemathesis) reads the workflow")
    workflow = yaml.safe_load((REPO / "examples" / "github-dry-run.yml").read_text())
    runs = "\n".join(step.get("run", "").replace("\n", " ") for job in workflow["jobs"].values()
                      for step in job["steps"])
    readme_code = "\n".join(re.findall(r"^```[a-z]*\n(.*?)^```", (REPO / "README.md").read_text(), re.S | re.M))
    commands = _app_commands(readme_code) + _app_commands(runs)
    assert len(commands) >= 4
    for argv in commands:
        _parser().parse_args(argv)  # SystemExit(2) on an unknown or malformed option
