"""Static checks of docker-compose.yml, the three Dockerfiles, .dockerignore and .env.example.

No Docker engine runs here, so the stack is checked the way the engine would read it: the compose
file is parsed and interpolated with .env.example, the Dockerfiles are parsed instruction by
instruction, and each entry point is imported from a copy of exactly the files its image COPYs.
The file must also load as `docker compose config` loads it: with the docker client's compose
plugin, or else with compose-check, the same compose-go loader (built by `make test` with Go).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from pydantic import AliasChoices

from customer360.settings import PROJECT_ROOT, Settings

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
ARCHITECTURE_DOC = PROJECT_ROOT / "docs" / "ARCHITECTURE.md"
LAUNCHER = PROJECT_ROOT / "docker" / "c360"

# The eight services, and the two that start only under a profile.
DEFAULT_SERVICES = {
    "postgres",
    "kafka",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "api",
    "stream-consumer",
}
PROFILE_SERVICES = {"producer": ["producer"], "airflow-triggerer": ["triggerer"]}
ONE_SHOT_SERVICES = {"airflow-init", "producer"}
# Host port -> container port, each published on the loopback interface only.
PUBLISHED_PORTS = {
    "postgres": (5432, 5432),
    "kafka": (9092, 19092),
    "api": (8000, 8000),
    "airflow-apiserver": (8080, 8080),
}
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
DATABASE_USERS = AIRFLOW_SERVICES | {"api", "stream-consumer", "producer"}
KAFKA_USERS = {"stream-consumer", "producer"}
NETWORK = "customer360"


# --- reading the files ----------------------------------------------------------------------


def env_example() -> dict[str, str]:
    """The active KEY=value lines of .env.example."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            values[match.group(1)] = match.group(2)
    return values


INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str], used: set[str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?message} and $$ substitution."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        used.add(name)
        value = env.get(name)
        missing = value is None or (value == "" and operator and operator.startswith(":"))
        if operator and operator.endswith("?") and missing:
            raise AssertionError(f"required variable {name} is not set: {argument}")
        if operator and operator.endswith("-") and missing:
            return argument
        return value or ""

    return INTERPOLATION.sub(substitute, text)


def interpolate_tree(node, env: dict[str, str], used: set[str]):
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env, used) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env, used) for value in node]
    if isinstance(node, str):
        return interpolate(node, env, used)
    return node


@dataclass
class Compose:
    raw: dict
    resolved: dict
    interpolated_names: set[str]

    @property
    def services(self) -> dict[str, dict]:
        return self.resolved["services"]


def load_compose(env: dict[str, str] | None = None) -> Compose:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    used: set[str] = set()
    resolved = interpolate_tree(raw, env_example() if env is None else env, used)
    return Compose(raw, resolved, used)


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load_compose()


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


@dataclass
class Instruction:
    keyword: str
    arguments: str


def dockerfile(name: str) -> list[Instruction]:
    """A Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in (PROJECT_ROOT / name).read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def exec_form(arguments: str) -> list[str]:
    return yaml.safe_load(arguments)


def copies(instructions: list[Instruction]) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context."""
    result = []
    for instruction in instructions:
        if instruction.keyword != "COPY":
            continue
        words = shlex.split(instruction.arguments)
        assert not any(word.startswith("--from") for word in words), "no multi-stage COPY expected"
        paths = [word for word in words if not word.startswith("--")]
        result.append((paths[:-1], paths[-1]))
    return result


def built_services(compose: Compose) -> dict[str, str]:
    """Service name -> the Dockerfile it is built from."""
    return {
        name: service["build"]["dockerfile"]
        for name, service in compose.services.items()
        if "build" in service
    }


def settings_env_names() -> set[str]:
    """Every environment variable Settings reads: prefix + field name, plus declared aliases."""
    prefix = Settings.model_config["env_prefix"]
    names = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add((prefix + field_name).upper())
    return names


def dockerfile_env(dockerfile_name: str) -> dict[str, str]:
    """The variables a Dockerfile's ENV instructions set."""
    env = {}
    for instruction in dockerfile(dockerfile_name):
        if instruction.keyword == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(instruction.arguments))
    return env


# Built on a pinned python:3.11 slim image; the Airflow components on the official Airflow image.
PYTHON_BASE_DOCKERFILES = ["Dockerfile.api", "Dockerfile.streaming"]
AIRFLOW_DOCKERFILE = "Dockerfile.airflow"
DOCKERFILES = [*PYTHON_BASE_DOCKERFILES, AIRFLOW_DOCKERFILE]


def locked_versions() -> tuple[str, str]:
    """The apache-airflow version requirements.lock pins and the Python version it is locked for."""
    lock = (PROJECT_ROOT / "requirements.lock").read_text()
    airflow = re.search(r"^apache-airflow==(3\.\d+\.\d+)$", lock, re.MULTILINE)
    python = re.search(r"--python-version (3\.\d+)\b", lock)
    assert airflow and python, "requirements.lock must pin apache-airflow for one Python version"
    return airflow.group(1), python.group(1)


def official_entrypoint(command: list[str]) -> list[str]:
    """What the official Airflow image's entrypoint runs for a container command: `bash` and
    `python` as given, anything else as arguments of `airflow` (a leading `airflow` dropped)."""
    if command[0] in ("bash", "python"):
        return command
    if command[0] == "airflow":
        command = command[1:]
    return ["airflow", *command]


def dockerignore_includes(path: str) -> bool:
    """Whether .dockerignore lets ``path`` into the build context (last matching rule wins)."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            pattern = line.lstrip("!").strip("/")
            regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
            regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
            rules.append((re.compile(regex), negated))
    parts = Path(path).parts
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    included = True
    for regex, negated in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = negated
    return included


# --- services, ports, health, dependencies ---------------------------------------------------


def test_the_eight_services_run_by_default_and_the_others_under_profiles(compose):
    default = {name for name, service in compose.services.items() if not service.get("profiles")}
    assert default == DEFAULT_SERVICES
    profiled = {
        name: service["profiles"]
        for name, service in compose.services.items()
        if service.get("profiles")
    }
    assert profiled == PROFILE_SERVICES


def test_every_service_the_architecture_doc_names_exists(compose):
    text = ARCHITECTURE_DOC.read_text()
    table = re.search(r"^\|\s*Service\s*\|.*\n\|[-| :]+\|\n((?:\|.*\n?)+)", text, re.MULTILINE)
    assert table, "docs/ARCHITECTURE.md needs a services table with a 'Service' column"
    documented = set(re.findall(r"^\|\s*`([a-z0-9-]+)`", table.group(1), re.MULTILINE))
    assert documented == set(compose.services)


def test_ports_are_published_on_loopback_only(compose):
    published = {}
    for name, service in compose.services.items():
        for mapping in service.get("ports", []):
            host_ip, host_port, container_port = str(mapping).split(":")
            assert host_ip == "127.0.0.1", f"{name} publishes {mapping} beyond the loopback"
            published[name] = (int(host_port), int(container_port))
    assert published == PUBLISHED_PORTS


def image_healthcheck(compose: Compose, name: str) -> bool:
    """Whether the service runs its image's own command and that image has a HEALTHCHECK."""
    service = compose.services[name]
    dockerfile_name = built_services(compose).get(name)
    if dockerfile_name is None:
        return False
    instructions = dockerfile(dockerfile_name)
    cmd = [exec_form(i.arguments) for i in instructions if i.keyword == "CMD"][-1]
    has_check = any(i.keyword == "HEALTHCHECK" for i in instructions)
    return has_check and service.get("command", cmd) == cmd


def has_healthcheck(compose: Compose, name: str) -> bool:
    check = compose.services[name].get("healthcheck")
    if check is not None:
        return not check.get("disable") and bool(check.get("test"))
    return image_healthcheck(compose, name)


def test_every_long_running_service_has_a_healthcheck(compose):
    for name, service in compose.services.items():
        if name in ONE_SHOT_SERVICES:
            assert service.get("restart") == "no", f"{name} runs once"
            continue
        assert service.get("restart") == "unless-stopped", name
        assert has_healthcheck(compose, name), f"{name} has no healthcheck"


def test_dependencies_wait_for_health_and_for_the_set_up(compose):
    for name, service in compose.services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for dependency, spec in depends_on.items():
            expected = (
                "service_completed_successfully"
                if dependency in ONE_SHOT_SERVICES
                else "service_healthy"
            )
            assert spec.get("condition") == expected, f"{name} -> {dependency}"
            if expected == "service_healthy":
                assert has_healthcheck(compose, dependency), dependency
        if name in DATABASE_USERS:
            assert "postgres" in depends_on or "airflow-init" in depends_on, name
            # airflow-init applies the schema; nothing else may touch the database before it.
            if name != "airflow-init":
                assert "airflow-init" in depends_on, f"{name} must wait for the schema"
        if name in KAFKA_USERS:
            assert "kafka" in depends_on, name
    assert compose.services["airflow-init"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"}
    }


def test_the_schema_is_applied_by_the_init_service():
    script = (PROJECT_ROOT / "docker" / "airflow-init.sh").read_text()
    commands = [line.strip() for line in script.splitlines() if not line.strip().startswith("#")]
    assert "c360 migrate" in commands
    assert "airflow db migrate" in commands
    assert any("airflow connections add customer360_postgres" in line for line in commands)
    syntax = subprocess.run(["sh", "-n", str(PROJECT_ROOT / "docker" / "airflow-init.sh")])
    assert syntax.returncode == 0


def test_services_share_a_named_bridge_network_and_named_volumes(compose):
    assert compose.resolved["networks"] == {NETWORK: {"driver": "bridge"}}
    declared = set(compose.resolved["volumes"])
    used = set()
    for name, service in compose.services.items():
        assert service.get("networks") == [NETWORK], name
        for mount in service.get("volumes", []):
            source = str(mount).split(":")[0]
            if source.startswith(("./", "/")):
                assert (PROJECT_ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
                used.add(source)
            assert ":" in str(mount), f"{name} has an anonymous volume {mount}"
    assert used == declared


def test_airflow_mounts_the_dags_and_the_data(compose):
    for name in AIRFLOW_SERVICES:
        mounts = compose.services[name]["volumes"]
        assert "./dags:/app/dags:ro" in mounts, name
        assert "./data:/app/data:ro" in mounts, name
        env = environment(compose.services[name])
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/app/dags", name
        data_dir = env["C360_DATA_DIR"]
        assert any(str(m).split(":")[1] == data_dir for m in mounts), f"{name}: {data_dir}"


# --- images -----------------------------------------------------------------------------------

PINNED_TAG = re.compile(r"^[a-z0-9./-]+:(\d+\.\d+(?:\.\d+)?)(?:-[a-z0-9.-]+)?$")


def test_every_image_is_pinned(compose):
    version = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {name: service["image"] for name, service in compose.services.items()}
    for name, image in images.items():
        match = PINNED_TAG.match(image)
        assert match, f"{name} image {image} is not pinned to a version"
        if name in built_services(compose):
            assert match.group(1) == version, f"{name}: tag the built image with {version}"
    # The schema needs PostgreSQL 18; the broker is the official image.
    assert images["postgres"].startswith("postgres:18.")
    assert images["kafka"].startswith("apache/kafka:")
    airflow_version, python_version = locked_versions()
    for dockerfile_name in set(built_services(compose).values()):
        bases = [i.arguments for i in dockerfile(dockerfile_name) if i.keyword == "FROM"]
        assert len(bases) == 1, dockerfile_name
        if dockerfile_name == AIRFLOW_DOCKERFILE:
            # The official image of exactly the Airflow the lock pins, on the lock's Python.
            assert bases[0] == f"apache/airflow:{airflow_version}-python{python_version}"
        else:
            assert re.fullmatch(rf"python:{re.escape(python_version)}\.\d+-slim-bookworm", bases[0])


def test_built_images_share_their_build_and_airflow_comes_from_the_lock(compose):
    builds = {}
    for name, service in compose.services.items():
        if "build" in service:
            assert service["build"]["context"] == ".", name
            builds.setdefault(service["image"], set()).add(
                (service["build"]["context"], service["build"]["dockerfile"])
            )
    # One tag, one recipe: services naming the same image build it the same way.
    assert all(len(recipes) == 1 for recipes in builds.values()), builds
    for name in AIRFLOW_SERVICES:
        assert built_services(compose)[name] == AIRFLOW_DOCKERFILE, name
    assert built_services(compose)["api"] == "Dockerfile.api"
    airflow_version, _ = locked_versions()
    base = next(i.arguments for i in dockerfile(AIRFLOW_DOCKERFILE) if i.keyword == "FROM")
    assert base.startswith(f"apache/airflow:{airflow_version}-"), base


def test_airflow_services_keep_the_official_entrypoint(compose):
    # The entry-point check below runs each Airflow command the way the official ENTRYPOINT does:
    # bash and python as given, anything else as an `airflow` subcommand. Neither the image nor
    # the services may replace it.
    assert "ENTRYPOINT" not in [i.keyword for i in dockerfile(AIRFLOW_DOCKERFILE)]
    for name in AIRFLOW_SERVICES:
        assert "entrypoint" not in compose.services[name], name


@pytest.mark.parametrize("dockerfile_name", PYTHON_BASE_DOCKERFILES)
def test_dockerfile_layers_user_healthcheck_and_command(dockerfile_name):
    instructions = dockerfile(dockerfile_name)
    keywords = [i.keyword for i in instructions]
    runs = [i.arguments for i in instructions if i.keyword == "RUN"]
    install = next(run for run in runs if "requirements.lock" in run)
    assert re.search(r"uv pip install --system .*-r /tmp/requirements\.lock", install)
    # The lock alone is copied before the install; the source only after it, so that a source
    # change keeps the dependency layer cached.
    install_index = next(index for index, i in enumerate(instructions) if i.arguments == install)
    copied_before = [i for i in instructions[:install_index] if i.keyword == "COPY"]
    assert [shlex.split(i.arguments) for i in copied_before] == [
        ["requirements.lock", "/tmp/requirements.lock"]
    ]
    users = [i.arguments for i in instructions if i.keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert keywords.index("USER") > max(
        index for index, keyword in enumerate(keywords) if keyword in ("RUN", "COPY")
    )
    assert keywords.count("HEALTHCHECK") == 1
    assert keywords.count("CMD") == 1
    assert "ENTRYPOINT" not in keywords
    cmd = exec_form(next(i.arguments for i in instructions if i.keyword == "CMD"))
    assert isinstance(cmd, list), "CMD in exec form, so the process gets SIGTERM"


def test_airflow_dockerfile_installs_the_lock_as_the_airflow_user(compose):
    instructions = dockerfile(AIRFLOW_DOCKERFILE)
    runs = [index for index, i in enumerate(instructions) if i.keyword == "RUN"]
    install_index = next(
        index for index in runs if "requirements.lock" in instructions[index].arguments
    )
    install = instructions[install_index].arguments
    # The official image's pip refuses root and installs into the airflow user's environment;
    # naming the image's Airflow version fails the build if the lock pins another one.
    assert re.search(r"^pip install --no-cache-dir .*-r /tmp/requirements\.lock", install)
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in install
    users_before = [i.arguments for i in instructions[:install_index] if i.keyword == "USER"]
    assert users_before and users_before[-1] == "airflow"
    # Only the lock is copied before the install, so a source change keeps that layer cached.
    copied_before = [i for i in instructions[:install_index] if i.keyword == "COPY"]
    assert [sources for sources, _ in copies(copied_before)] == [["requirements.lock"]]
    keywords = [i.keyword for i in instructions]
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert instructions[last_user].arguments == "airflow"
    assert last_user > max(index for index, k in enumerate(keywords) if k in ("RUN", "COPY"))
    # The source sits where PYTHONPATH points, as in the platform image.
    workdir = next(i.arguments for i in instructions if i.keyword == "WORKDIR")
    assert dockerfile_env(AIRFLOW_DOCKERFILE)["PYTHONPATH"] == workdir
    # Named volumes start with the ownership of the image folder they mount over; the base
    # image provides only AIRFLOW_HOME/logs, so the others are created for the airflow user.
    commands = [
        shlex.split(command)
        for i in instructions
        if i.keyword == "RUN"
        for command in i.arguments.split("&&")
    ]
    created = {path for words in commands if words[:2] == ["mkdir", "-p"] for path in words[2:]}
    owned = {
        path
        for words in commands
        if words[:3] == ["chown", "-R", "airflow:0"]
        for path in words[3:]
    }
    for name in AIRFLOW_SERVICES:
        for mount in compose.services[name]["volumes"]:
            source, target = str(mount).split(":")[:2]
            if source.startswith(("./", "/")) or target == "/opt/airflow/logs":
                continue
            assert target in created, f"{AIRFLOW_DOCKERFILE} does not create {target}"
            assert any(target == path or target.startswith(path + "/") for path in owned), target


@pytest.mark.parametrize("dockerfile_name", DOCKERFILES)
def test_every_file_a_dockerfile_copies_exists_and_is_in_the_build_context(dockerfile_name):
    for sources, _ in copies(dockerfile(dockerfile_name)):
        for source in sources:
            path = PROJECT_ROOT / source
            assert path.exists(), f"{dockerfile_name} copies missing {source}"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            assert files, f"{source} is empty"
            for file in files:
                relative = file.relative_to(PROJECT_ROOT).as_posix()
                if "__pycache__" not in relative:
                    assert dockerignore_includes(relative), f".dockerignore drops {relative}"


def test_dockerignore_keeps_secrets_and_local_state_out():
    for path in (".env", ".venv/bin/python", ".c360/pg/PG_VERSION", "data/generated/x.csv"):
        assert not dockerignore_includes(path), path
    assert not dockerignore_includes("customer360/__pycache__/cli.cpython-311.pyc")


# --- entry points -------------------------------------------------------------------------------


def image_tree(dockerfile_name: str, root: Path) -> Path:
    """Copy what the image COPYs under ``root``, mapped to its absolute paths; returns /app."""
    instructions = dockerfile(dockerfile_name)
    workdir = next(i.arguments for i in instructions if i.keyword == "WORKDIR")
    for sources, destination in copies(instructions):
        if destination.startswith("/tmp/"):
            continue
        target = Path(destination if destination.startswith("/") else f"{workdir}/{destination}")
        for source in sources:
            path = PROJECT_ROOT / source
            into = root / target.relative_to("/")
            if destination.endswith("/"):
                into = into / path.name
            into.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, into, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(path, into)
    return root / workdir.lstrip("/")


def import_in_image(app_dir: Path, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` with only the image's /app and the locked packages on the path.

    ``-S`` leaves out the editable install of this checkout, which would otherwise supply any
    package the image forgot to copy.
    """
    site_packages = sysconfig.get_paths()["purelib"]
    bootstrap = f"import sys; sys.path[:0] = [{str(app_dir)!r}]; sys.path.append({site_packages!r})"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(app_dir),
        "AIRFLOW_HOME": str(app_dir.parent / "airflow-home"),
        "C360_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/nowhere",
    }
    return subprocess.run(
        [sys.executable, "-S", "-c", f"{bootstrap}\n{code}"],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def launcher_module() -> str:
    match = re.search(r"^exec python -m ([\w.]+) \"\$@\"$", LAUNCHER.read_text(), re.MULTILINE)
    assert match, "docker/c360 must exec `python -m <module>`"
    return match.group(1)


def entry_modules(command: list[str], bin_dir: Path) -> tuple[list[str], list[list[str]]]:
    """The modules a container command imports first, and the c360 argument lists it runs."""
    program = command[0]
    if program == "c360":
        return [launcher_module()], [command[1:]]
    if program == "python" and command[1] == "-m":
        return [command[2]], []
    if program == "python":
        return [], []
    if program == "airflow":
        return ["airflow.__main__"], []
    if program == "bash" and command[1] == "-c":
        return entry_modules(shlex.split(command[2]), bin_dir)
    script = bin_dir / program
    assert script.exists(), f"{program} is not in the image"
    assert script.stat().st_mode & stat.S_IXUSR, f"{program} is not executable"
    runs = [
        shlex.split(line.strip())[1:]
        for line in script.read_text().splitlines()
        if line.strip().startswith("c360 ")
    ]
    modules = [launcher_module()] if runs else []
    if re.search(r"^\s*airflow ", script.read_text(), re.MULTILINE):
        modules.append("airflow.__main__")
    return modules, runs


@pytest.mark.parametrize("dockerfile_name", DOCKERFILES)
def test_entry_points_import_from_the_files_the_image_holds(compose, dockerfile_name, tmp_path):
    app_dir = image_tree(dockerfile_name, tmp_path / "image")
    bin_dir = tmp_path / "image" / "usr" / "local" / "bin"
    instructions = dockerfile(dockerfile_name)
    commands = [exec_form(i.arguments) for i in instructions if i.keyword == "CMD"]
    commands += [
        service["command"]
        for name, service in compose.services.items()
        if built_services(compose).get(name) == dockerfile_name and "command" in service
    ]
    if dockerfile_name == AIRFLOW_DOCKERFILE:
        commands = [official_entrypoint(command) for command in commands]
    commands += [
        exec_form(i.arguments.split(" CMD ", 1)[1])
        for i in instructions
        if i.keyword == "HEALTHCHECK"
    ]
    airflow_runs = [command[1:] for command in commands if command[0] == "airflow"]
    modules: set[str] = set()
    scripts: set[str] = set()
    c360_runs: list[list[str]] = []
    for command in commands:
        found, runs = entry_modules(command, bin_dir)
        modules.update(found)
        c360_runs.extend(runs)
        if runs and runs[0][:2] == ["api", "serve"]:
            # `c360 api serve` hands uvicorn the app by name; that module must import too.
            assert '"api.main:app"' in (PROJECT_ROOT / "customer360/commands/api.py").read_text()
            modules.add("api.main")
        if command[0] == "python" and command[1] != "-m" and command[1] != "-c":
            script = app_dir / command[1]
            assert script.exists(), f"{command[1]} is not in the image"
            scripts.add(command[1])
    if dockerfile_name == AIRFLOW_DOCKERFILE:
        # The DAG as the dag-processor imports it, with the package from the image.
        scripts.add("dags/customer_data_pipeline.py")
        # airflow-init runs `c360 migrate` from this image: the schema files must be in it.
        modules.add("customer360.migrate")
    assert modules, dockerfile_name
    code = "import importlib, runpy\n" + "\n".join(
        [f"importlib.import_module({module!r})" for module in sorted(modules)]
        + [f"runpy.run_path({script!r}, run_name='entry_check')" for script in sorted(scripts)]
    )
    if c360_runs:
        # Building the parser imports every command module; argparse exits on an unknown
        # subcommand or option.
        code += "\nfrom customer360.cli import build_parser\nparser = build_parser()\n"
        code += "\n".join(f"parser.parse_args({arguments!r})" for arguments in c360_runs)
    if airflow_runs:
        # Airflow's parser exits on an unknown subcommand, such as a script name that the
        # official entrypoint handed to `airflow`.
        code += "\nfrom airflow.cli.cli_parser import get_parser\nairflow_parser = get_parser()\n"
        code += "\n".join(f"airflow_parser.parse_args({arguments!r})" for arguments in airflow_runs)
    if "customer360.migrate" in modules:
        code += "\nfrom customer360.migrate import schema_files\nassert schema_files(), 'no sql'"
    result = import_in_image(app_dir, code)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_launcher_and_the_console_script_run_the_same_function():
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["c360"] == f"{launcher_module()}:main"


# --- settings -----------------------------------------------------------------------------------


def test_every_c360_variable_in_compose_is_a_setting(compose):
    known = settings_env_names()
    for name, service in compose.services.items():
        for key in environment(service):
            if key.startswith(("C360_", "KAFKA_BOOTSTRAP")):
                assert key.upper() in known, f"{name} sets {key}, which no setting reads"
    for key in compose.interpolated_names:
        if key.startswith("C360_"):
            assert key.upper() in known, f"compose interpolates unknown setting {key}"
    for dockerfile_name in DOCKERFILES:
        for key in dockerfile_env(dockerfile_name):
            if key.startswith("C360_"):
                assert key.upper() in known, f"{dockerfile_name} sets unknown setting {key}"


def test_each_service_gets_the_settings_it_needs(compose, monkeypatch):
    postgres = environment(compose.services["postgres"])
    for name in DATABASE_USERS:
        url = urllib.parse.urlsplit(environment(compose.services[name])["C360_DATABASE_URL"])
        assert (url.hostname, url.port) == ("postgres", 5432), name
        assert (url.username, url.password) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
        ), name
        assert url.path == "/" + postgres["POSTGRES_DB"], name
    advertised = environment(compose.services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    internal = re.search(r"INTERNAL://([^,]+)", advertised).group(1)
    for name in KAFKA_USERS:
        assert environment(compose.services[name])["C360_KAFKA_BOOTSTRAP_SERVERS"] == internal
    api = environment(compose.services["api"])
    assert api["C360_API_HOST"] == "0.0.0.0"
    assert int(api["C360_API_PORT"]) == PUBLISHED_PORTS["api"][1]
    # Each service's environment, as its container sees it, is valid for Settings.
    for name, service in compose.services.items():
        env = {k: v for k, v in environment(service).items() if k.startswith("C360_")}
        for key in [k for k in os.environ if k.startswith(("C360_", "KAFKA_"))]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings(_env_file=None)
        if name in DATABASE_USERS:
            assert settings.database_url == env["C360_DATABASE_URL"], name


def test_env_example_defines_every_interpolated_variable_and_no_stale_ones(compose):
    defined = env_example()
    optional = set(re.findall(r"\$\{([A-Z0-9_]+):-\}", COMPOSE_FILE.read_text()))
    for name in compose.interpolated_names:
        assert name in defined, f".env.example does not define {name}"
        if name not in optional:
            assert defined[name], f".env.example leaves required {name} empty"
    assert set(defined) == compose.interpolated_names
    known = settings_env_names()
    assert all(name in known for name in defined if name.startswith("C360_"))


def test_env_example_documents_every_c360_variable_compose_sets(compose):
    text = ENV_EXAMPLE.read_text()
    mentioned = set(re.findall(r"^#? ?(C360_[A-Z0-9_]+)=", text, re.MULTILINE))
    in_compose = {
        key
        for service in compose.services.values()
        for key in environment(service)
        if key.startswith("C360_")
    }
    in_images = {
        key
        for dockerfile_name in DOCKERFILES
        for key in dockerfile_env(dockerfile_name)
        if key.startswith("C360_")
    }
    assert in_compose | in_images <= mentioned, sorted(in_compose | in_images - mentioned)


def test_compose_refuses_to_start_without_the_required_settings():
    with pytest.raises(AssertionError, match="POSTGRES_PASSWORD"):
        load_compose({k: v for k, v in env_example().items() if k != "POSTGRES_PASSWORD"})


def compose_config(compose_file: Path) -> subprocess.CompletedProcess | None:
    """Load ``compose_file`` with .env.example as `docker compose config` does: with the
    docker client's compose plugin, or else with compose-check, the same compose-go loader
    built by `make test` (scripts/compose-check); None when neither is at hand."""
    docker = shutil.which("docker")
    plugin = docker and subprocess.run([docker, "compose", "version"], capture_output=True)
    if plugin and plugin.returncode == 0:
        command = [docker, "compose", "--env-file", str(ENV_EXAMPLE), "-f", str(compose_file)]
        command += ["config", "--quiet"]
    elif (checker := PROJECT_ROOT / ".venv" / "bin" / "compose-check").exists():
        command = [str(checker), str(ENV_EXAMPLE), str(compose_file)]
    else:
        return None
    return subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)


def test_the_compose_specification_accepts_the_file_and_refuses_a_broken_one(tmp_path):
    accepted = compose_config(COMPOSE_FILE)
    if accepted is None:
        pytest.skip("neither a docker compose plugin nor compose-check (needs Go) is installed")
    assert accepted.returncode == 0, accepted.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE_FILE.read_text(encoding="utf-8").replace(
            "\n  api:\n", "\n  api:\n    bogus_key: 1\n", 1
        ),
        encoding="utf-8",
    )
    refused = compose_config(broken)
    assert refused.returncode != 0 and "bogus_key" in refused.stderr


# --- the consumer's health check ------------------------------------------------------------


def consumer_healthcheck():
    spec_path = PROJECT_ROOT / "docker" / "consumer_healthcheck.py"
    import importlib.util

    spec = importlib.util.spec_from_file_location("consumer_healthcheck", spec_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("group", "healthy"),
    [
        ({"group_state": "Stable", "members": [{"client_host": "/172.18.0.7"}]}, True),
        ({"group_state": "Stable", "members": [{"client_host": "/172.18.0.9"}]}, False),
        ({"group_state": "PreparingRebalance", "members": [{"client_host": "/172.18.0.7"}]}, True),
        ({"group_state": "Empty", "members": []}, False),
        ({"group_state": "Dead", "members": [], "error": "GroupIdNotFoundError"}, False),
    ],
)
def test_consumer_is_healthy_only_as_a_member_of_its_group(group, healthy):
    assert consumer_healthcheck().member_here(group, {"172.18.0.7", "127.0.0.1"}) is healthy
