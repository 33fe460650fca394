"""``submit kuberay``: a KubeRay ``RayJob`` manifest (head + one GPU worker group, entrypoint = the search).

KubeRay creates the Ray cluster, runs the entrypoint as a Ray job on it and (by default) deletes the
cluster when the job ends. The image must hold clear_tune and its dependencies, or ``working_dir_uri``
must point at a zip of the repository that Ray can download (https://, s3://, gs://). Results go to
``results``: a storage URI, or a path on the PersistentVolumeClaim ``pvc`` mounted on every pod.

Example:
    >>> import yaml
    >>> from clear_tune.submit import KubeRayOptions, render_kuberay_manifest
    >>> options = KubeRayOptions(workers=2, gpus_per_worker=4)
    >>> job = yaml.safe_load(render_kuberay_manifest("search_spaces/smoke.yaml", options))
    >>> job["kind"], job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"]
    ('RayJob', 2)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from clear_tune.errors import SpecError
from clear_tune.submit._command import run_command, shell_join

KUBERAY_API_VERSION = "ray.io/v1"


def _ray_version() -> str:
    import ray

    return ray.__version__


def default_image(gpus: int) -> str:
    """The official Ray image matching the local Ray and Python versions (CUDA variant when GPUs are asked)."""
    import sys

    import ray

    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return f"rayproject/ray:{ray.__version__}-{python}{'-gpu' if gpus else ''}"


@dataclass(frozen=True, kw_only=True)
class KubeRayOptions:
    workers: int = 1
    gpus_per_worker: int = 0
    cpus_per_worker: int = 8
    memory_per_worker: str = "32Gi"
    head_cpus: int = 2
    head_memory: str = "8Gi"
    name: str = "clear-tune"
    namespace: str | None = None
    image: str | None = None
    working_dir_uri: str | None = None
    pip: list[str] = field(default_factory=list)
    results: str | None = None
    pvc: str | None = None
    mount_path: str = "/mnt/results"
    resume: bool = False
    ttl_seconds_after_finished: int = 600

    def check(self) -> None:
        if self.workers < 0 or self.gpus_per_worker < 0 or self.cpus_per_worker < 1:
            raise SpecError("--workers and --gpus-per-worker must be >= 0, --cpus-per-worker >= 1")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?", self.name):
            raise SpecError(
                f"--name {self.name!r}: a Kubernetes name needs lowercase letters, digits and '-' "
                "(at most 42 characters)"
            )


def _container(
    name: str, image: str, *, cpus: int, memory: str, gpus: int, ports: dict[str, int], mounts: list[dict]
) -> dict:
    limits = {"cpu": str(cpus), "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    container = {
        "name": name,
        "image": image,
        "resources": {"limits": limits, "requests": dict(limits)},
        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
    }
    if ports:
        container["ports"] = [{"name": port_name, "containerPort": port} for port_name, port in ports.items()]
    if mounts:
        container["volumeMounts"] = mounts
    return container


def render_kuberay_manifest(spec: str, options: KubeRayOptions) -> str:
    """The RayJob manifest (YAML text) that runs ``spec`` on ``options.workers`` worker pods."""
    options.check()
    image = options.image or default_image(options.gpus_per_worker)
    results = options.results or (f"{options.mount_path}/results" if options.pvc else None)
    entrypoint = shell_join(run_command(spec, results=results, resume=options.resume))
    mounts = [{"name": "results", "mountPath": options.mount_path}] if options.pvc else []
    volumes = [{"name": "results", "persistentVolumeClaim": {"claimName": options.pvc}}] if options.pvc else []

    def pod(container: dict) -> dict:
        pod_spec: dict = {"containers": [container]}
        if volumes:
            pod_spec["volumes"] = volumes
        return {"spec": pod_spec}

    runtime_env: dict = {"env_vars": {"OMP_NUM_THREADS": "1"}}
    if options.working_dir_uri:
        runtime_env["working_dir"] = options.working_dir_uri
    if options.pip:
        runtime_env["pip"] = {"packages": list(options.pip), "pip_check": False}

    head = _container(
        "ray-head",
        image,
        cpus=options.head_cpus,
        memory=options.head_memory,
        gpus=0,
        ports={"gcs-server": 6379, "dashboard": 8265, "client": 10001},
        mounts=mounts,
    )
    worker = _container(
        "ray-worker",
        image,
        cpus=options.cpus_per_worker,
        memory=options.memory_per_worker,
        gpus=options.gpus_per_worker,
        ports={},
        mounts=mounts,
    )
    metadata: dict = {"name": options.name, "labels": {"app.kubernetes.io/created-by": "clear-tune"}}
    if options.namespace:
        metadata["namespace"] = options.namespace
    manifest = {
        "apiVersion": KUBERAY_API_VERSION,
        "kind": "RayJob",
        "metadata": metadata,
        "spec": {
            "entrypoint": entrypoint,
            "runtimeEnvYAML": yaml.safe_dump(runtime_env, sort_keys=False),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": options.ttl_seconds_after_finished,
            "rayClusterSpec": {
                "rayVersion": _ray_version(),
                "headGroupSpec": {
                    # Trials run on the workers only: the head keeps its CPUs for GCS, dashboard and driver.
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": pod(head),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "gpu-workers" if options.gpus_per_worker else "cpu-workers",
                        "replicas": options.workers,
                        "minReplicas": options.workers,
                        "maxReplicas": options.workers,
                        "rayStartParams": {},
                        "template": pod(worker),
                    }
                ],
            },
        },
    }
    header = (
        f"# RayJob for {spec}: {options.workers} worker(s) x {options.gpus_per_worker} GPU.\n"
        f"# Apply with: kubectl apply -f rayjob.yaml   Follow: kubectl logs -f -l job-name={options.name}\n"
    )
    return header + yaml.dump(manifest, Dumper=_NoAliasDumper, sort_keys=False)


class _NoAliasDumper(yaml.SafeDumper):
    """Write shared sub-trees (the volume mounts) out in full: kubectl users read the YAML, not anchors."""

    def ignore_aliases(self, data: object) -> bool:
        return True
