"""Send a search to a cluster: Ray Jobs API (ray-job), SLURM batch script (slurm), KubeRay RayJob (kuberay)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from clear_tune.errors import ClearTuneError, SpecError
from clear_tune.submit._command import check_spec_file, experiment_name, run_command, shell_join
from clear_tune.submit._kuberay import KubeRayOptions, render_kuberay_manifest
from clear_tune.submit._ray_job import (
    follow_instructions,
    follow_ray_job,
    pinned_requirements,
    ray_job_runtime_env,
    submit_ray_job,
)
from clear_tune.submit._slurm import SlurmOptions, render_slurm_script
from clear_tune.submit._wait import wait_for_nodes

EPILOG = (
    "examples:\n"
    "  python -m clear_tune.submit ray-job search_spaces/smoke.yaml --address http://HEAD:8265"
    " --results /shared/results --wait\n"
    "  python -m clear_tune.submit slurm search_spaces/grid.yaml --nodes 4 --gpus-per-node 8 --time 12:00:00"
    " --dry-run\n"
    "  python -m clear_tune.submit kuberay search_spaces/grid.yaml --workers 4 --gpus-per-worker 8"
    " > rayjob.yaml\n"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clear_tune.submit",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{ray-job,slurm,kuberay,wait-nodes}")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("spec", help="search-space YAML (path inside the working dir)")
        sub.add_argument("--results", help="where the experiment writes: a path every node sees, or a storage URI")
        sub.add_argument("--resume", action="store_true", help="pass --resume to the run (continue an experiment)")

    job = commands.add_parser(
        "ray-job",
        help="submit to a running Ray cluster's job server (Ray Jobs API)",
        description="Ship the working dir to the cluster and run the search there as a Ray job. Python packages: "
        "by default the project's direct dependencies pinned to constraints.txt (Ray excluded) are "
        "pip-installed into the job's environment; --no-pip uses the cluster's environment as it is; "
        "--requirements FILE installs that file instead.",
    )
    common(job)
    job.add_argument(
        "--address",
        default=os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265"),
        help="job server, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS or %(default)s)",
    )
    job.add_argument("--working-dir", default=".", help="directory shipped with the job (default: current dir)")
    pip = job.add_mutually_exclusive_group()
    pip.add_argument(
        "--no-pip", action="store_true", help="install nothing: use the cluster's Python environment as it is"
    )
    pip.add_argument("--requirements", metavar="FILE", help="pip requirements file to install for the job")
    job.add_argument(
        "--python", default="python", help="interpreter the driver runs under on the head (default: python)"
    )
    job.add_argument("--submission-id", help="job id to use (default: Ray picks one)")
    job.add_argument("--wait", action="store_true", help="stream the job's logs until it ends; exit 1 if it failed")

    slurm = commands.add_parser("slurm", help="write an sbatch script (and submit it unless --dry-run)")
    common(slurm)
    slurm.add_argument("--nodes", type=int, default=2)
    slurm.add_argument("--gpus-per-node", type=int, default=0)
    slurm.add_argument("--cpus-per-node", type=int, help="default: what SLURM allocates to the task")
    slurm.add_argument("--time", help="wall-time limit, e.g. 12:00:00")
    slurm.add_argument("--partition")
    slurm.add_argument("--account")
    slurm.add_argument("--job-name", help="default: the spec's experiment name")
    slurm.add_argument("--workdir", help="directory the job runs in (default: the submit dir)")
    slurm.add_argument("--log-dir", default=".", help="where SLURM writes %%x-%%j.out (default: submit dir)")
    slurm.add_argument("--python", default="python")
    slurm.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="LINE",
        help="shell line run before anything else (repeatable), e.g. 'source .venv/bin/activate'",
    )
    slurm.add_argument("--port", type=int, default=6379, help="Ray head port (default: 6379)")
    slurm.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="OPTION",
        help="extra #SBATCH option (repeatable), e.g. --sbatch=--mem=0",
    )
    slurm.add_argument("--script", help="where to write the script (default: <job-name>.sbatch)")
    slurm.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
    slurm.add_argument("--wait", action="store_true", help="sbatch --wait: return when the job ends, with its status")

    kube = commands.add_parser("kuberay", help="print a KubeRay RayJob manifest (YAML)")
    common(kube)
    kube.add_argument("--workers", type=int, default=1)
    kube.add_argument("--gpus-per-worker", type=int, default=0)
    kube.add_argument("--cpus-per-worker", type=int, default=8)
    kube.add_argument("--memory-per-worker", default="32Gi")
    kube.add_argument("--name", help="RayJob name (default: from the experiment name)")
    kube.add_argument("--namespace")
    kube.add_argument("--image", help="container image holding clear_tune (default: rayproject/ray:<version>)")
    kube.add_argument("--working-dir-uri", help="zip of the repository Ray downloads (https://, s3://, gs://)")
    kube.add_argument("--pip", action="store_true", help="install the pinned dependencies in the job's runtime env")
    kube.add_argument("--pvc", help="PersistentVolumeClaim mounted on every pod for the results")

    wait = commands.add_parser(
        "wait-nodes", help="wait until a Ray cluster has N alive nodes (the SLURM script uses it)"
    )
    wait.add_argument("--address", required=True)
    wait.add_argument("--count", type=int, required=True)
    wait.add_argument("--timeout", type=float, default=300.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"ray-job": _ray_job, "slurm": _slurm, "kuberay": _kuberay, "wait-nodes": _wait}[args.command]
    return handler(args)


def _ray_job(args: argparse.Namespace) -> int:
    working_dir = Path(args.working_dir).resolve()
    if not working_dir.is_dir():
        raise SpecError(f"--working-dir {args.working_dir!r} is not a directory")
    spec = check_spec_file(args.spec, inside=working_dir, base=working_dir)
    if args.no_pip:
        pip = None
    elif args.requirements:
        requirements = Path(args.requirements)
        if not requirements.is_file():
            raise SpecError(f"--requirements {args.requirements!r} not found; pass a pip requirements file")
        pip = [
            line.strip()
            for line in requirements.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    else:
        pip = pinned_requirements(working_dir)
    if not args.results:
        print(
            "note: no --results given; records land in the job's working dir on the head node "
            "(pass --results /shared/path to keep them)",
            file=sys.stderr,
        )
    entrypoint = shell_join(
        run_command(str(spec.relative_to(working_dir)), python=args.python, results=args.results, resume=args.resume)
    )
    job_id = submit_ray_job(
        address=args.address,
        entrypoint=entrypoint,
        runtime_env=ray_job_runtime_env(working_dir=working_dir, pip=pip),
        submission_id=args.submission_id,
        metadata={"experiment": experiment_name(spec), "spec": args.spec},
    )
    print(f"submitted job {job_id} to {args.address}")
    print(f"entrypoint:   {entrypoint}")
    for line in follow_instructions(args.address, job_id):
        print(line)
    sys.stdout.flush()
    if not args.wait:
        return 0
    try:
        status = follow_ray_job(args.address, job_id)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; job {job_id} keeps running (ray job stop {job_id} --address {args.address})",
            file=sys.stderr,
        )
        return 130
    print(f"job {job_id} {status}")
    return 0 if status == "SUCCEEDED" else 1


def _slurm(args: argparse.Namespace) -> int:
    # The script runs in --workdir when given, so a relative spec path is read from there.
    spec = check_spec_file(Path(args.workdir or ".") / args.spec, base=Path(args.workdir or "."))
    name = args.job_name or _slug(experiment_name(spec))
    options = SlurmOptions(
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        cpus_per_node=args.cpus_per_node,
        time=args.time,
        partition=args.partition,
        account=args.account,
        job_name=name,
        workdir=args.workdir,
        results=args.results,
        log_dir=args.log_dir,
        python=args.python,
        setup=args.setup,
        port=args.port,
        resume=args.resume,
        extra_sbatch=args.sbatch,
    )
    script = render_slurm_script(args.spec, options)
    if args.dry_run:
        sys.stdout.write(script)
        return 0
    path = Path(args.script or f"{name}.sbatch")
    path.write_text(script)
    path.chmod(0o755)
    command = ["sbatch", *(["--wait"] if args.wait else []), str(path)]
    try:
        done = subprocess.run(command, capture_output=not args.wait, text=True)
    except FileNotFoundError:
        raise ClearTuneError(
            f"sbatch not found on PATH; the script is in {path} (submit it from a SLURM login node)"
        ) from None
    if not args.wait:
        if done.returncode != 0:
            raise ClearTuneError(
                f"sbatch failed ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}); "
                f"the script is in {path}"
            )
        job_id = done.stdout.strip().split()[-1] if done.stdout.strip() else "?"
        print(f"submitted SLURM job {job_id} (script {path})")
        print(f"follow logs:  tail -f {args.log_dir.rstrip('/')}/{name}-{job_id}.out")
        print(f"status:       squeue -j {job_id}      cancel: scancel {job_id}")
        return 0
    print(f"SLURM job finished with status {done.returncode} (script {path})")
    return done.returncode


def _kuberay(args: argparse.Namespace) -> int:
    # the image or the working_dir_uri zip holds the repository: plugins must lie in it, under the same paths
    spec = check_spec_file(args.spec, base=Path("."), plugins_inside=Path("."))
    name = args.name or _slug(experiment_name(spec))
    options = KubeRayOptions(
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        memory_per_worker=args.memory_per_worker,
        name=name,
        namespace=args.namespace,
        image=args.image,
        working_dir_uri=args.working_dir_uri,
        pip=pinned_requirements(".") if args.pip else [],
        results=args.results,
        pvc=args.pvc,
        resume=args.resume,
    )
    sys.stdout.write(render_kuberay_manifest(args.spec, options))
    return 0


def _wait(args: argparse.Namespace) -> int:
    wait_for_nodes(args.address, count=args.count, timeout_s=args.timeout)
    return 0


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:42] or "clear-tune"


if __name__ == "__main__":
    from clear_tune._cli_errors import run_cli

    sys.exit(run_cli(main))
