"""The cluster configs in clusters/: they parse, carry what the Ray cluster launcher and KubeRay
need, pin the Ray this project runs, scale GPUs from zero, advertise the trial drivers'
resource, keep the dashboard private and hold no secrets. Nothing here starts a cluster."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import ray
import yaml

from w2sray.sweep import DRIVER_RESOURCE

CLUSTERS = Path(__file__).resolve().parent.parent / "clusters"
LAUNCHER = ["aws.yaml", "gcp.yaml"]
KUBERAY = "kuberay-rayjob.yaml"
RAY_IMAGE = re.compile(r"^rayproject/ray:(\d+\.\d+\.\d+)-py3\d+-gpu$")

# What must never be committed in a cluster file: key ids, secret keys and tokens given a value,
# private keys, account ids, and paths to someone's real private key.
SECRETS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret key value": re.compile(r"aws_secret_access_key\s*[:=]\s*\S", re.I),
    "private key": re.compile(r"BEGIN [A-Z ]*PRIVATE KEY"),
    "service account key": re.compile(r"\"private_key(_id)?\"\s*:"),
    "12-digit account id": re.compile(r"\b\d{12}\b"),
    "Ray token value": re.compile(r"RAY_AUTH_TOKEN\s*[:=]\s*\S", re.I),
    "private key path": re.compile(r"^\s*ssh_private_key\s*:", re.M),
    "key pair name": re.compile(r"^\s*KeyName\s*:", re.M),
}


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTERS / name).read_text())


def launcher_configs() -> list:
    return [pytest.param(load(name), id=name) for name in LAUNCHER]


def rayjob() -> dict:
    docs = list(yaml.safe_load_all((CLUSTERS / KUBERAY).read_text()))
    jobs = [d for d in docs if d and d.get("kind") == "RayJob"]
    assert len(jobs) == 1, f"{KUBERAY}: expected one RayJob, found {len(jobs)}"
    return jobs[0]


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


# -- cluster launcher configs ------------------------------------------------------------------
@pytest.mark.parametrize("cfg", launcher_configs())
def test_launcher_config_has_what_ray_up_needs(cfg):
    assert re.fullmatch(r"[a-z][a-z0-9-]*", cfg["cluster_name"])
    provider = cfg["provider"]
    assert provider["type"] in {"aws", "gcp"}
    assert provider.get("region") or provider.get("availability_zone")
    if provider["type"] == "gcp":
        assert provider["project_id"]
    assert cfg["max_workers"] >= 1
    assert 0 < cfg["idle_timeout_minutes"] <= 60
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    for name, node in types.items():
        assert isinstance(node["resources"], dict), name
        assert isinstance(node["node_config"], dict) and node["node_config"], name
        if name != cfg["head_node_type"]:
            assert 0 <= node["min_workers"] <= node["max_workers"], name
    assert cfg["auth"]["ssh_user"]


@pytest.mark.parametrize("cfg", launcher_configs())
def test_launcher_config_passes_ray_validation(cfg):
    """The launcher's own schema check and default filling (offline: no cloud API is called)."""
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    # what the launcher will run with: our node types and limits, not defaults put in their place
    assert prepared["available_node_types"].keys() == cfg["available_node_types"].keys()
    assert (prepared["max_workers"], prepared["idle_timeout_minutes"]) == (
        cfg["max_workers"],
        cfg["idle_timeout_minutes"],
    )
    # and the same check does reject a config the launcher could not use
    broken = copy.deepcopy(cfg)
    broken["available_node_types"][cfg["head_node_type"]].pop("resources")
    broken["available_node_types"][cfg["head_node_type"]]["max_workers"] = "many"
    with pytest.raises(Exception, match="max_workers|resources|many"):
        validate_config(prepare_config(broken))


@pytest.mark.parametrize("cfg", launcher_configs())
def test_image_pins_the_projects_ray(cfg):
    image = cfg["docker"]["image"]
    match = RAY_IMAGE.match(image)
    assert match, f"{image!r}: expected rayproject/ray:<version>-py3XX-gpu (pinned, not latest)"
    assert "latest" not in image
    assert match.group(1) == ray.__version__, (
        f"cluster image runs Ray {match.group(1)}, this venv has {ray.__version__}: "
        "ray up / ray job submit need the same Ray on both sides"
    )
    for key in ("head_image", "worker_image"):
        assert key not in cfg["docker"] or RAY_IMAGE.match(cfg["docker"][key])


@pytest.mark.parametrize("cfg", launcher_configs())
def test_setup_commands_install_the_project(cfg):
    setup = " ".join(cfg["setup_commands"])
    assert re.search(r"pip install .*(-e ~/w2sray-repo|w2sray @ git\+\S+@\S+)", setup), setup
    if "-e ~/w2sray-repo" in setup:
        assert cfg["file_mounts"]["~/w2sray-repo"] == "."
        assert ".gitignore" in cfg.get("rsync_filter", [])  # no .venv or results in the sync


@pytest.mark.parametrize("cfg", launcher_configs())
def test_gpu_types_are_spot_and_scale_from_zero(cfg):
    types = cfg["available_node_types"]
    gpu = {n: t for n, t in types.items() if t["resources"].get("GPU", 0) > 0}
    counts = sorted(t["resources"]["GPU"] for t in gpu.values())
    assert counts[0] == 1 and counts[-1] == 8, counts  # one-GPU and 8-GPU types
    for name, node in gpu.items():
        assert node["min_workers"] == 0, name
        conf = node["node_config"]
        spot = conf.get("InstanceMarketOptions", {}).get("MarketType") == "spot" or (
            conf.get("scheduling", {}).get("provisioningModel") == "SPOT"
        )
        assert spot, f"{name}: GPU workers should be spot / preemptible"
        # Trial drivers must not sit on nodes that can be preempted under them.
        assert DRIVER_RESOURCE not in node["resources"], name
    assert types[cfg["head_node_type"]]["resources"].get("GPU", 0) == 0


@pytest.mark.parametrize("cfg", launcher_configs())
def test_driver_resource_is_on_on_demand_nodes(cfg):
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0  # the head schedules no training
    assert head["resources"].get(DRIVER_RESOURCE, 0) > 0  # present from the first trial on
    drivers = [n for n, t in types.items() if t["resources"].get(DRIVER_RESOURCE, 0) > 0]
    cpu_ondemand = [
        n
        for n in drivers
        if n != cfg["head_node_type"]
        and types[n]["resources"].get("CPU", 0) > 0
        and not types[n]["resources"].get("GPU")
    ]
    assert cpu_ondemand, "an on-demand CPU node type for trial drivers and CPU-only runs"


@pytest.mark.parametrize("cfg", launcher_configs())
def test_dashboard_stays_on_the_head(cfg):
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in json.dumps(cfg)
    # Token auth on every node; the token itself comes from a file, never the config.
    assert "--env RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


@pytest.mark.parametrize("name", [*LAUNCHER, KUBERAY, "Dockerfile"])
def test_no_secrets(name):
    text = (CLUSTERS / name).read_text()
    found = [what for what, rx in SECRETS.items() if rx.search(text)]
    assert not found, f"{name}: {found}"


# -- KubeRay -----------------------------------------------------------------------------------
def test_rayjob_runs_a_w2sray_sweep():
    job = rayjob()
    assert job["apiVersion"] == "ray.io/v1"
    assert re.match(r"w2sray run \S+\.yaml --store (s3|gs)://", job["spec"]["entrypoint"])
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    spec = job["spec"]["rayClusterSpec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"]["mode"] == "token"


def test_rayjob_head_holds_driver_resource_and_no_cpus():
    head = rayjob()["spec"]["rayClusterSpec"]["headGroupSpec"]
    params = head["rayStartParams"]
    assert params["num-cpus"] == "0"
    # KubeRay's format: a JSON object inside a quoted string.
    raw = params["resources"]
    assert raw.startswith('"') and raw.endswith('"')
    resources = json.loads(raw[1:-1].replace('\\"', '"'))
    assert resources[DRIVER_RESOURCE] > 0
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"  # dashboard not exposed
    assert not head.get("enableIngress", False)


def test_rayjob_worker_groups_scale_from_zero_with_gpus():
    groups = rayjob()["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus = []
    for group in groups:
        assert group["minReplicas"] == 0, group["groupName"]
        assert group["maxReplicas"] >= 1, group["groupName"]
        limits = containers(group["template"])[0]["resources"]["limits"]
        if "nvidia.com/gpu" in limits:
            gpus.append(int(limits["nvidia.com/gpu"]))
        assert DRIVER_RESOURCE not in group.get("rayStartParams", {}).get("resources", "")
    assert gpus and max(gpus) == 8


def test_rayjob_images_pinned_and_credentials_by_reference():
    job = rayjob()
    spec = job["spec"]["rayClusterSpec"]
    templates = [spec["headGroupSpec"]["template"]] + [
        g["template"] for g in spec["workerGroupSpecs"]
    ]
    for template in templates:
        assert template["spec"].get("serviceAccountName")
        for c in containers(template):
            image = c["image"]
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest" and "/" not in tag, image
            assert f"ray{ray.__version__}" in tag, f"{image}: tag should name Ray {ray.__version__}"
            for env in c.get("env", []):
                if re.search(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", env["name"], re.I):
                    assert "value" not in env and "valueFrom" in env, env["name"]
            for source in c.get("envFrom", []):
                assert set(source) <= {"secretRef", "configMapRef", "prefix"}
                assert source.get("secretRef", {}).get("name") or source.get("configMapRef")


def test_dockerfile_base_pins_the_projects_ray():
    text = (CLUSTERS / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert bases and all(RAY_IMAGE.match(b) for b in bases), bases
    assert all(RAY_IMAGE.match(b).group(1) == ray.__version__ for b in bases)
    ignore = (CLUSTERS / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore
