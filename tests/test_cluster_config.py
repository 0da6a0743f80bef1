"""cluster.yaml (the AWS GPU cluster) checked against Ray's own autoscaler code and docs/cluster.md.

Every property has a checker that returns what is wrong with a config (or with the docs). Each checker
also runs on a deliberately broken copy, so a checker that cannot fail is caught as well.

The shell-level tests run the config's commands in bash with a stub `ray` on PATH. The stub records
the arguments and the RAY_AUTH_* environment that a real `ray start` would get. The slow test then
starts a real two-node Ray cluster on this machine with exactly that environment.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import yaml
from packaging.requirements import Requirement
from ray.autoscaler._private.command_runner import SSHCommandRunner
from ray.autoscaler._private.util import prepare_config, validate_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
DOCS = REPO / "docs" / "cluster.md"
TEST_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
SWEEP_COMMAND = (
    "python sweeps/adam_vs_sgd.py --address auto --dataset cifar10 --model resnet18 "
    "--gpus-per-worker 1 --workers-per-trial 2 --storage-path s3://"
)


@pytest.fixture
def config() -> dict:
    """A fresh copy per test: tests break their copy on purpose."""
    return yaml.safe_load(CLUSTER_YAML.read_text())


def pinned_ray_version() -> str:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for dep in pyproject["project"]["dependencies"]:
        req = Requirement(dep)
        if req.name == "ray":
            (spec,) = req.specifier
            assert spec.operator == "==", f"pyproject should pin ray exactly, has {dep!r}"
            return spec.version
    raise AssertionError("pyproject.toml does not depend on ray")


def worker_types(config: dict) -> dict:
    return {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}


def segments(command: str) -> list[list[str]]:
    """A command line as its simple commands (split at ; && || | &), each as shell words."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    out: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|"):
            out.append([])
        else:
            out[-1].append(token)
    return [s for s in out if s]


def ray_starts(commands: list[str]) -> list[list[str]]:
    """The argument lists of every `ray start` in these commands."""
    return [seg[2:] for cmd in commands for seg in segments(cmd) if seg[:2] == ["ray", "start"]]


def option_values(args: list[str], option: str) -> list[str]:
    values = []
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            values.append(args[i + 1])
        elif arg.startswith(option + "="):
            values.append(arg.split("=", 1)[1])
    return values


# ------------------------------------------------------------------------------ Ray's own checks


def schema_errors(config: dict) -> list[str]:
    """What Ray's autoscaler says, validating the file as written and after `prepare_config`."""
    errors = []
    for stage in ("as written", "prepared"):
        try:
            cfg = copy.deepcopy(config)
            if stage == "prepared":
                cfg = prepare_config(cfg)
            validate_config(cfg)
        except Exception as exc:
            errors.append(f"{stage}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    return errors


def test_cluster_yaml_passes_rays_validate_config_and_prepare_config(config) -> None:
    assert schema_errors(config) == []
    prepared = prepare_config(copy.deepcopy(config))
    # prepare_config filled Ray's defaults in and merged setup_commands into both node roles.
    assert prepared["available_node_types"][config["head_node_type"]]["max_workers"] == 0
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert prepared[key][: len(config["setup_commands"])] == config["setup_commands"]


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c.__setitem__("setup_command", []),  # a typo'd key
        lambda c: c["available_node_types"]["gpu_1x"]["resources"].__setitem__("GPU", 0.5),
        lambda c: c.__setitem__("head_node_type", "no_such_type"),
        lambda c: c["available_node_types"]["gpu_4x"].__setitem__("min_workers", 99),  # > max_workers
    ],
)
def test_rays_validation_rejects_a_broken_copy(config, breakage) -> None:
    breakage(config)
    assert schema_errors(config)


# ----------------------------------------------------------------------------------- the image


def image_problems(config: dict, version: str) -> list[str]:
    docker = config.get("docker", {})
    images = [docker.get(k) for k in ("image", "head_image", "worker_image")]
    images += [t.get("docker", {}).get("worker_image") for t in config["available_node_types"].values()]
    images = [i for i in images if i]
    if not images:
        return ["no docker image"]
    wanted = re.compile(rf"rayproject/ray:{re.escape(version)}(-py3\d+)?-(gpu|cu\d+)")
    return [
        f"{i!r} is not rayproject/ray:{version}-gpu (or -py3xx-cuXXX)"
        for i in images
        if not wanted.fullmatch(i)
    ]


def test_image_is_the_ray_version_pyproject_pins(config) -> None:
    version = pinned_ray_version()
    assert image_problems(config, version) == []
    assert config["docker"]["image"].startswith(f"rayproject/ray:{version}-")


@pytest.mark.parametrize(
    "image",
    [
        "rayproject/ray-ml:{v}-gpu",  # frozen at an old Ray
        "rayproject/ray:latest-gpu",
        "rayproject/ray:2.9.0-gpu",
        "rayproject/ray:{v}",  # a CPU image on GPU workers
        "rayproject/ray:{v}-gpu-extra",
    ],
)
def test_image_check_rejects_other_images(config, image) -> None:
    version = pinned_ray_version()
    config["docker"]["image"] = image.format(v=version)
    assert image_problems(config, version)


def test_image_check_sees_per_node_type_overrides(config) -> None:
    version = pinned_ray_version()
    config["available_node_types"]["gpu_4x"]["docker"] = {"worker_image": f"rayproject/ray-ml:{version}-gpu"}
    assert image_problems(config, version)


def mentions_ray_ml(text: str) -> bool:
    return "ray-ml" in text.lower()


def test_no_ray_ml_anywhere(config) -> None:
    assert not mentions_ray_ml(CLUSTER_YAML.read_text())  # comments included
    assert not mentions_ray_ml(json.dumps(prepare_config(copy.deepcopy(config))))
    assert mentions_ray_ml("  image: rayproject/ray-ml:2.60.0-gpu\n")


# ---------------------------------------------------------------------------------- the network


def is_single_host(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr, strict=False).num_addresses == 1
    except ValueError:
        return False


def config_ingress_problems(config: dict) -> list[str]:
    """Security-group CIDRs in the config that admit more than one address (0.0.0.0/0, ::/0, ...)."""
    problems = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("CidrIp", "CidrIpv6") and not is_single_host(str(value)):
                    problems.append(f"{path}.{key} = {value}")
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(config, "config")
    return problems


def node_types_without_own_security_group(config: dict) -> list[str]:
    """Node types for which Ray's AWS provider would create its default group (SSH from 0.0.0.0/0)."""
    return [
        k for k, v in config["available_node_types"].items() if not v["node_config"].get("SecurityGroupIds")
    ]


def test_no_ingress_rule_is_open_to_the_world(config) -> None:
    assert config_ingress_problems(config) == []
    assert node_types_without_own_security_group(config) == []
    groups = {tuple(t["node_config"]["SecurityGroupIds"]) for t in config["available_node_types"].values()}
    assert len(groups) == 1, "all nodes share one group, whose self-rule lets them talk to each other"


@pytest.mark.parametrize(
    "rule",
    [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "203.0.113.7/32"}, {"CidrIp": "10.0.0.0/8"}]},
    ],
)
def test_ingress_check_catches_an_open_rule(config, rule) -> None:
    config["provider"]["security_group"] = {"GroupName": "optsweep", "IpPermissions": [rule]}
    assert config_ingress_problems(config)


def test_ingress_check_catches_a_node_type_left_to_rays_default_group(config) -> None:
    del config["available_node_types"]["gpu_4x_spot"]["node_config"]["SecurityGroupIds"]
    assert node_types_without_own_security_group(config) == ["gpu_4x_spot"]


def _function_source(path: Path, name: str) -> str:
    source = path.read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return " ".join(ast.get_source_segment(source, node).split())
    raise AssertionError(f"{name} not found in {path}")


def test_rays_default_group_is_world_open_and_skipped_for_node_types_that_name_a_group() -> None:
    """Why the config names a group on every node type. If this fails after a Ray upgrade, re-check
    both facts and docs/cluster.md, which states them."""
    import ray.autoscaler

    aws_config = Path(ray.autoscaler.__file__).parent / "_private" / "aws" / "config.py"
    assert '"0.0.0.0/0"' in _function_source(aws_config, "_create_default_ssh_inbound_rules")
    assert '"SecurityGroupIds" not in node_type["node_config"]' in _function_source(
        aws_config, "_configure_security_group"
    )


def documented_ingress(markdown: str) -> list[tuple[str | None, str]]:
    """(port, CIDR) of every CIDR rule in the docs' `aws ec2 authorize-security-group-ingress` commands,
    with shell variables assigned in the docs (MY_CIDR=...) filled in."""
    text = markdown.replace("\\\n", " ")
    assigned = {
        m.group(1): m.group(2).strip("\"'")
        for m in re.finditer(r"^\s*(?:export\s+)?([A-Z_][A-Z0-9_]*)=(\S+)", text, re.M)
    }

    def fill(value: str) -> str:
        return re.sub(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", lambda m: assigned.get(m.group(1), m.group(0)), value)

    rules = []
    for line in text.splitlines():
        if "authorize-security-group-ingress" not in line:
            continue
        port = re.search(r"--port\s+(\S+)", line)
        for m in re.finditer(r"--cidr\s+\"?([^\s\"]+)|CidrIp(?:v6)?=([^,\]}\s\"]+)", line):
            rules.append((port.group(1) if port else None, fill(m.group(1) or m.group(2))))
    return rules


def docs_ingress_problems(markdown: str) -> list[str]:
    rules = documented_ingress(markdown)
    if not rules:
        return ["no SSH rule documented"]
    problems = [
        f"{cidr} (port {port}) is not a single address" for port, cidr in rules if not is_single_host(cidr)
    ]
    problems += [f"port {port} opened to {cidr}" for port, cidr in rules if port != "22"]
    return problems


def test_documented_security_group_admits_ssh_from_one_address_only() -> None:
    markdown = DOCS.read_text()
    assert docs_ingress_problems(markdown) == []
    # The unedited placeholder is a documentation address (RFC 5737): it reaches nobody.
    for _, cidr in documented_ingress(markdown):
        assert any(ipaddress.ip_network(cidr).subnet_of(net) for net in TEST_NETS), cidr


AUTHORIZE = "aws ec2 authorize-security-group-ingress --group-id sg-1"


@pytest.mark.parametrize(
    "snippet",
    [
        f"{AUTHORIZE} --protocol tcp --port 22 --cidr 0.0.0.0/0",
        f'MY_CIDR=0.0.0.0/0\n{AUTHORIZE} \\\n  --protocol tcp --port 22 --cidr "$MY_CIDR"',
        f'{AUTHORIZE} --ip-permissions "IpProtocol=-1,Ipv6Ranges=[{{CidrIpv6=::/0}}]"',
        f"{AUTHORIZE} --protocol tcp --port 8265 --cidr 203.0.113.7/32",
        f'{AUTHORIZE} --protocol tcp --port 22 --cidr "$UNSET_CIDR"',
        "no rule at all",
    ],
)
def test_docs_ingress_check_catches_open_rules(snippet) -> None:
    assert docs_ingress_problems(snippet)


# -------------------------------------------------------------------------------- the dashboard


def dashboard_problems(config: dict) -> list[str]:
    head_starts = ray_starts(config["head_start_ray_commands"])
    problems = [] if head_starts else ["no `ray start` in head_start_ray_commands"]
    for args in head_starts:
        hosts = option_values(args, "--dashboard-host")
        if hosts != ["127.0.0.1"]:
            problems.append(f"head `ray start` has --dashboard-host {hosts}, want exactly 127.0.0.1")
    for args in ray_starts(config["worker_start_ray_commands"]):
        problems += [f"worker binds a dashboard to {h}" for h in option_values(args, "--dashboard-host")]
    return problems


def test_dashboard_is_bound_to_the_heads_loopback(config) -> None:
    assert dashboard_problems(config) == []


@pytest.mark.parametrize(
    "edit",
    [
        lambda cmd: cmd.replace("--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0"),
        lambda cmd: cmd.replace("--dashboard-host=127.0.0.1", "--dashboard-host 0.0.0.0"),
        lambda cmd: cmd.replace("--dashboard-host=127.0.0.1", ""),  # implicit: depends on Ray's default
        lambda cmd: cmd + " --dashboard-host=0.0.0.0",
    ],
)
def test_dashboard_check_catches_a_public_or_implicit_binding(config, edit) -> None:
    config["head_start_ray_commands"] = [edit(c) for c in config["head_start_ray_commands"]]
    assert dashboard_problems(config)


# ------------------------------------------------------------------------------ nodes and costs


def node_type_problems(config: dict) -> list[str]:
    problems = []
    head = config["available_node_types"][config["head_node_type"]]
    if head["resources"].get("CPU") != 0:
        problems.append("head advertises CPUs: trials and Train workers could land on it")
    if head["resources"].get("GPU", 0) != 0:
        problems.append("head advertises GPUs")
    if "InstanceMarketOptions" in head["node_config"]:
        problems.append("head is spot: a reclaimed head takes the sweep driver with it")
    workers = worker_types(config)
    if not workers:
        problems.append("no worker types")
    for name, spec in workers.items():
        if spec.get("min_workers") != 0:
            problems.append(f"{name}: min_workers is {spec.get('min_workers')!r}, want an explicit 0")
        gpus = spec["resources"].get("GPU", 0)
        if not (isinstance(gpus, int) and gpus >= 1):
            problems.append(f"{name}: advertises {gpus!r} GPUs")
        if "IamInstanceProfile" not in spec["node_config"]:
            problems.append(f"{name}: no IamInstanceProfile, so trials cannot write to S3")
        if not spec["node_config"].get("ImageId"):
            problems.append(f"{name}: no ImageId; Ray's default AMI has a CUDA 11.2-era driver")
    if not head["node_config"].get("ImageId"):
        problems.append("head: no ImageId")
    return problems


def test_cpu_head_and_gpu_workers_that_scale_from_zero(config) -> None:
    assert node_type_problems(config) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda t: t["head"]["resources"].pop("CPU"),  # Ray would advertise the head's 4 vCPUs
        lambda t: t["head"]["resources"].__setitem__("GPU", 1),
        lambda t: t["head"]["node_config"].__setitem__("InstanceMarketOptions", {"MarketType": "spot"}),
        lambda t: t["gpu_4x"].__setitem__("min_workers", 1),
        lambda t: t["gpu_1x_spot"].pop("min_workers"),
        lambda t: t["gpu_1x"]["resources"].pop("GPU"),
        lambda t: t["gpu_4x_spot"]["node_config"].pop("IamInstanceProfile"),
        lambda t: t["gpu_4x"]["node_config"].pop("ImageId"),
    ],
)
def test_node_type_check_catches_broken_copies(config, breakage) -> None:
    breakage(config["available_node_types"])
    assert node_type_problems(config)


def idle_cost_problems(config: dict) -> list[str]:
    problems = []
    if config["provider"].get("cache_stopped_nodes", True) is not False:  # Ray's default is True
        problems.append("nodes are stopped, not terminated: their disks keep billing")
    if not 0 < config.get("idle_timeout_minutes", 5) <= 15:
        problems.append("idle workers linger")
    problems += [f"{n} always runs" for n, t in worker_types(config).items() if t.get("min_workers", 0)]
    return problems


def test_an_idle_cluster_is_just_the_head(config) -> None:
    assert idle_cost_problems(config) == []
    assert prepare_config(copy.deepcopy(config))["provider"]["cache_stopped_nodes"] is False


def test_idle_cost_check_catches_rays_default_of_stopping_nodes(config) -> None:
    del config["provider"]["cache_stopped_nodes"]
    assert idle_cost_problems(config)


def spot_problems(config: dict) -> list[str]:
    workers = worker_types(config)
    spot = {
        n: t
        for n, t in workers.items()
        if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    }
    on_demand = {n: t for n, t in workers.items() if n not in spot}
    problems = [] if spot else ["no spot worker type"]
    for name, spec in spot.items():
        twins = [
            t
            for t in on_demand.values()
            if t["node_config"]["InstanceType"] == spec["node_config"]["InstanceType"]
            and t["resources"] == spec["resources"]
        ]
        if not twins:
            problems.append(f"{name} has no on-demand twin")
        elif not all(spec.get("priority", 0) > t.get("priority", 0) for t in twins):
            problems.append(f"{name}: autoscaler v2 would not prefer it over its on-demand twin")
    return problems


def test_spot_twins_exist_for_the_gpu_types(config) -> None:
    assert spot_problems(config) == []


def test_spot_check_catches_missing_spot_types(config) -> None:
    for spec in worker_types(config).values():
        spec["node_config"].pop("InstanceMarketOptions", None)
    assert spot_problems(config) == ["no spot worker type"]


# ------------------------------------------------------------------------ the project on the nodes


def project_mount(config: dict) -> str | None:
    """The remote path the repository is uploaded to (file_mounts' local paths are relative to the
    directory `ray up` runs in, the repository root)."""
    for remote, local in config.get("file_mounts", {}).items():
        if (REPO / os.path.expanduser(local)).resolve() == REPO:
            return remote
    return None


def install_problems(config: dict) -> list[str]:
    remote = project_mount(config)
    problems = [] if remote else ["file_mounts do not upload the repository"]
    prepared = prepare_config(copy.deepcopy(config))
    for key in ("head_setup_commands", "worker_setup_commands"):
        installs = [
            seg
            for cmd in prepared[key]
            for seg in segments(cmd)
            if seg[:2] == ["pip", "install"] and ("-e" in seg or "--editable" in seg)
        ]
        if not any(remote and remote in seg for seg in installs):
            problems.append(f"{key} do not pip install -e the uploaded repository")
    every_command = [c for k, v in prepared.items() if k.endswith("_commands") for c in v]
    problems += [f"installs another Ray: {c}" for c in every_command if "ray-wheels" in c or "dev0" in c]
    return problems


def test_nodes_get_the_project_from_file_mounts_and_pip_install_it(config) -> None:
    assert project_mount(config) == "~/optsweep"
    assert install_problems(config) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c.pop("setup_commands"),  # Ray's defaults would install a nightly Ray wheel instead
        lambda c: c["file_mounts"].pop("~/optsweep"),
        lambda c: c.__setitem__(
            "setup_commands", [s.replace("~/optsweep", "~/elsewhere") for s in c["setup_commands"]]
        ),
    ],
)
def test_install_check_catches_broken_copies(config, breakage) -> None:
    breakage(config)
    assert install_problems(config)


def uploaded_files(config: dict, source: Path) -> set[str]:
    """What `ray up` would rsync from `source`: rsync run (dry) with the filter arguments that Ray's
    own SSHCommandRunner builds from this config."""
    options = {"rsync_exclude": config.get("rsync_exclude"), "rsync_filter": config.get("rsync_filter")}
    filters = SSHCommandRunner._create_rsync_filter_args(None, options)
    with tempfile.TemporaryDirectory() as target:
        out = subprocess.run(
            ["rsync", "-a", "--dry-run", "--out-format=%n", *filters, f"{source}/", f"{target}/"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    return {line.rstrip("/") for line in out.splitlines() if line.strip() and line.strip() != "./"}


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed (ray up needs it too)")
def test_upload_leaves_virtualenvs_git_and_results_behind(config, tmp_path) -> None:
    shutil.copy(REPO / ".gitignore", tmp_path / ".gitignore")
    keep = ["pyproject.toml", "cluster.yaml", "optimizers/adam.py", "docs/cluster.md"]
    drop = [
        ".venv/bin/python",
        ".venv-ci/bin/python",
        ".git/HEAD",
        "results/exp/trials.csv",
        "optsweep_results/exp/x.json",
        "optimizers/__pycache__/adam.cpython-311.pyc",
        ".pytest_cache/v/cache/lastfailed",  # ignored by .gitignore only: checks the .gitignore filter
    ]
    for rel in keep + drop:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    uploaded = uploaded_files(config, tmp_path)
    assert set(keep) <= uploaded
    left_behind = {".venv", ".venv-ci", ".git", "results", "optsweep_results", "__pycache__", ".pytest_cache"}
    assert {p for p in uploaded if left_behind & set(p.split("/"))} == set()
    # The same tree without the config's filters uploads the virtualenv: the filters do the work.
    config["rsync_exclude"], config["rsync_filter"] = [], []
    assert ".venv/bin/python" in uploaded_files(config, tmp_path)


# ------------------------------------------------------------------------------- token auth


def token_mount(config: dict) -> str | None:
    """The remote path of the file mount that uploads the token `ray get-auth-token --generate` writes."""
    from ray._private.authentication.authentication_token_setup import _get_default_token_path

    for remote, local in config.get("file_mounts", {}).items():
        if Path(os.path.expanduser(local)) == _get_default_token_path():
            return remote
    return None


def run_with_stub_ray(commands: list[str], home: Path) -> list[dict]:
    """Run commands as Ray's updater does (one bash per command) with a stub `ray` first on PATH.
    Returns, per `ray` call, its arguments and the RAY_AUTH_* variables its process saw."""
    bin_dir, log = home / "stub-bin", home / "ray-calls.jsonl"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "ray"
    stub.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith('RAY_AUTH')}\n"
        "with open(os.environ['STUB_LOG'], 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv[1:], 'env': env}) + '\\n')\n"
    )
    stub.chmod(0o755)
    log.unlink(missing_ok=True)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(home),
        "RAY_HEAD_IP": "10.0.0.2",
        "STUB_LOG": str(log),
    }
    for command in commands:
        done = subprocess.run(
            [shutil.which("bash"), "-c", command],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (command, done.stderr)
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def start_auth_problems(config: dict, key: str, home: Path) -> list[str]:
    token_remote = token_mount(config)
    if token_remote is None:
        return ["file_mounts do not upload ~/.ray/auth_token"]
    expected_path = str(home / token_remote.removeprefix("~/"))
    starts = [c for c in run_with_stub_ray(config[key], home) if c["argv"][:1] == ["start"]]
    problems = [] if starts else [f"no `ray start` in {key}"]
    for call in starts:
        if call["env"].get("RAY_AUTH_MODE") != "token":
            problems.append(f"{key}: ray start runs without RAY_AUTH_MODE=token: {call['env']}")
        if call["env"].get("RAY_AUTH_TOKEN_PATH") != expected_path:
            problems.append(
                f"{key}: RAY_AUTH_TOKEN_PATH={call['env'].get('RAY_AUTH_TOKEN_PATH')}, want {expected_path}"
            )
    return problems


@pytest.mark.parametrize("key", ["head_start_ray_commands", "worker_start_ray_commands"])
def test_ray_start_runs_with_token_auth_and_the_uploaded_token(config, key, tmp_path) -> None:
    assert token_mount(config) == "~/ray_auth_token"
    assert start_auth_problems(config, key, tmp_path) == []


def test_head_ray_start_gets_the_loopback_dashboard_host_and_no_cpus(config, tmp_path) -> None:
    (start,) = [
        c for c in run_with_stub_ray(config["head_start_ray_commands"], tmp_path) if c["argv"][0] == "start"
    ]
    assert "--head" in start["argv"]
    assert option_values(start["argv"], "--dashboard-host") == ["127.0.0.1"]
    assert option_values(start["argv"], "--num-cpus") == ["0"]  # as the head's resources say


@pytest.mark.parametrize(
    "edit",
    [
        lambda cmd: cmd.replace(
            "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=",
            "RAY_AUTH_MODE=token; export RAY_AUTH_TOKEN_PATH=",
        ),
        lambda cmd: cmd.replace("RAY_AUTH_MODE=token ", ""),
        lambda cmd: cmd.replace("$HOME/ray_auth_token", "$HOME/.ray/auth_token"),  # a path nothing uploads to
    ],
)
def test_auth_check_catches_broken_start_commands(config, edit, tmp_path) -> None:
    config["worker_start_ray_commands"] = [edit(c) for c in config["worker_start_ray_commands"]]
    assert start_auth_problems(config, "worker_start_ray_commands", tmp_path)


def test_auth_check_catches_a_missing_token_mount(config, tmp_path) -> None:
    del config["file_mounts"]["~/ray_auth_token"]
    assert start_auth_problems(config, "head_start_ray_commands", tmp_path)


def _ray_cli() -> str:
    ray_cli = Path(sys.executable).with_name("ray")
    return str(ray_cli) if ray_cli.exists() else shutil.which("ray")


@pytest.mark.parametrize("token", [None, ""], ids=["missing", "empty"])
def test_a_missing_or_empty_token_stops_ray_start_instead_of_starting_an_open_head(config, token) -> None:
    """The env the head's start command exports, with the token upload gone wrong: `ray start` fails."""
    home = Path(tempfile.mkdtemp(prefix="osh", dir="/tmp"))
    try:
        (start,) = [
            c for c in run_with_stub_ray(config["head_start_ray_commands"], home) if c["argv"][0] == "start"
        ]
        if token is not None:
            Path(start["env"]["RAY_AUTH_TOKEN_PATH"]).write_text(token)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(start["env"], HOME=str(home))
        proc = subprocess.Popen(
            [_ray_cli(), "start", "--head", "--block", f"--port={_free_port()}", "--num-cpus=0",
             "--include-dashboard=false", f"--temp-dir={home / 'ray'}", "--disable-usage-stats"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # it started a head: stop it (and fail)
            proc.terminate()
            proc.communicate(timeout=60)
            pytest.fail("ray start came up without a token")
        assert proc.returncode != 0
        assert "RAY_AUTH_TOKEN_PATH is set but file cannot be opened or is empty" in out, out[-2000:]
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_shells_ray_opens_on_the_nodes_get_the_token_too(config, tmp_path) -> None:
    """`ray exec/attach/submit` source ~/.bashrc: run the setup lines that write it twice (`ray up`
    re-runs setup), then read the variables a fresh shell sees."""
    bashrc_lines = [c for c in config["setup_commands"] if ".bashrc" in c]
    assert bashrc_lines
    for _ in range(2):
        run_with_stub_ray(bashrc_lines, tmp_path)
    bashrc = (tmp_path / ".bashrc").read_text().splitlines()
    assert len(bashrc) == len(set(bashrc)) == 2, bashrc
    shell = subprocess.run(
        [shutil.which("bash"), "-c", "source ~/.bashrc; echo $RAY_AUTH_MODE $RAY_AUTH_TOKEN_PATH"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout.split() == ["token", str(tmp_path / token_mount(config).removeprefix("~/"))]


# ------------------------------------------------------------------------------------------ docs


def test_every_placeholder_in_cluster_yaml_is_explained_in_the_docs() -> None:
    docs = DOCS.read_text()
    placeholders = set(re.findall(r"[\w-]*REPLACE[\w-]*", CLUSTER_YAML.read_text()))
    assert placeholders >= {"sg-REPLACE_WITH_YOUR_SECURITY_GROUP", "ami-REPLACE_WITH_DLAMI_ID"}
    assert {p for p in placeholders if p not in docs} == set()
    assert "optsweep-ray-worker" in docs


def test_docs_walk_from_ray_up_to_ray_down() -> None:
    docs = " ".join(DOCS.read_text().replace("\\\n", " ").split())
    for step in (
        "ray up -y cluster.yaml",
        "ray dashboard cluster.yaml",
        "ray job submit",
        "python -m optsweep.analysis.report",
        "ray down -y cluster.yaml",
        "ray get-auth-token --generate",
    ):
        assert step in docs, step
    assert SWEEP_COMMAND in docs


def test_docs_sweep_command_parses() -> None:
    """The documented cluster command is accepted by the sweep's real argument parser."""
    from optsweep.sweeps import adam_vs_sgd, cli

    argv = [*SWEEP_COMMAND.split()[2:-2], "--storage-path", "s3://bucket/optsweep"]
    args = cli.parse(argv, "t", "t", adam_vs_sgd.DEFAULTS)
    assert (args.address, args.task, args.task_args) == ("auto", "cifar10", {"model": "resnet18"})
    assert (args.gpus_per_worker, args.workers_per_trial) == (1.0, 2)
    assert args.is_remote_storage


# ----------------------------------------------------------------- a real two-node cluster, locally


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_flags() -> list[str]:
    names = [
        "node-manager-port",
        "object-manager-port",
        "metrics-export-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
    ]
    return [f"--{name}={_free_port()}" for name in names]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_token_auth_env_from_the_config_runs_a_real_two_node_cluster(config) -> None:
    """Head and worker started with exactly the RAY_AUTH_* environment that cluster.yaml's start
    commands export (captured by the stub). The head advertises 0 CPUs, as in the config. A driver
    with the token runs a task, which lands on the worker; drivers without it, or with another
    token, are refused."""
    ray_cli = _ray_cli()
    home = Path(tempfile.mkdtemp(prefix="osh", dir="/tmp"))  # short paths: Ray's unix sockets live below
    temp_dir = tempfile.mkdtemp(prefix="osr", dir="/tmp")
    auth_env = {}
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in run_with_stub_ray(config[key], home) if c["argv"][0] == "start"]
        assert auth_env in ({}, start["env"])
        auth_env = start["env"]
    Path(auth_env["RAY_AUTH_TOKEN_PATH"]).write_text(secrets.token_hex(32))
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base["HOME"] = str(home)
    env = {**base, **auth_env}

    gcs_port = _free_port()
    procs: list[subprocess.Popen] = []
    started: set[int] = set()
    try:
        procs.append(
            subprocess.Popen(
                [
                    ray_cli,
                    "start",
                    "--head",
                    "--block",
                    f"--port={gcs_port}",
                    "--num-cpus=0",
                    "--include-dashboard=false",
                    f"--temp-dir={temp_dir}",
                    "--disable-usage-stats",
                    *_port_flags(),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", gcs_port), timeout=1).close()
                break
            except OSError:
                assert procs[0].poll() is None, "head `ray start` exited"
                assert time.monotonic() < deadline, "GCS did not come up"
                time.sleep(0.5)
        procs.append(
            subprocess.Popen(
                [
                    ray_cli,
                    "start",
                    "--block",
                    f"--address=127.0.0.1:{gcs_port}",
                    "--num-cpus=1",
                    *_port_flags(),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        driver = textwrap.dedent(f"""
            import time, ray
            ray.init(address="127.0.0.1:{gcs_port}")
            for _ in range(240):
                nodes = [n for n in ray.nodes() if n["Alive"]]
                if len(nodes) == 2:
                    break
                time.sleep(0.5)
            head = [n["NodeID"] for n in nodes if n["Resources"].get("CPU", 0) == 0]
            ran_on = ray.get(ray.remote(lambda: ray.get_runtime_context().get_node_id()).remote())
            print("NODES", len(nodes), "ON_HEAD", ran_on in head)
        """)
        refused = f"import ray; ray.init(address='127.0.0.1:{gcs_port}'); print('CONNECTED')"
        outsiders = [
            subprocess.Popen(
                [sys.executable, "-c", refused],
                env=base,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
            subprocess.Popen(
                [sys.executable, "-c", refused],
                env={**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        ]
        ok = subprocess.run(
            [sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=180
        )
        for proc in procs:
            started |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        assert ok.returncode == 0, ok.stderr[-3000:]
        assert "NODES 2 ON_HEAD False" in ok.stdout, ok.stdout
        for outsider in outsiders:
            out, err = outsider.communicate(timeout=180)
            assert outsider.returncode != 0 and "CONNECTED" not in out, (out, err[-2000:])
            assert "auth" in err.lower(), err[-2000:]
    finally:
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                started |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for pid in started:  # what `ray start --block` left behind, by pid: never `ray stop`
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(temp_dir, ignore_errors=True)
