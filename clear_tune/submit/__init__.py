"""Send a search to a cluster: Ray Jobs API, SLURM batch script, KubeRay RayJob manifest.

Command line: ``python -m clear_tune.submit {ray-job,slurm,kuberay} SPEC.yaml ...`` (``--help`` on each).
Every submitter runs the same driver, ``python -m clear_tune.run SPEC`` (:func:`run_command`), on the

Example:
    >>> from clear_tune.submit import SlurmOptions, render_slurm_script
    >>> print(render_slurm_script("search_spaces/smoke.yaml", SlurmOptions(nodes=2)).splitlines()[3])
    #SBATCH --job-name=clear-tune
"""

from clear_tune.submit._command import check_spec_file, run_command, shell_join
from clear_tune.submit._kuberay import KubeRayOptions, render_kuberay_manifest
from clear_tune.submit._ray_job import follow_ray_job, pinned_requirements, ray_job_runtime_env, submit_ray_job
from clear_tune.submit._slurm import SlurmOptions, render_slurm_script
from clear_tune.submit._wait import wait_for_nodes

__all__ = [
    "KubeRayOptions",
    "SlurmOptions",
    "check_spec_file",
    "follow_ray_job",
    "pinned_requirements",
    "ray_job_runtime_env",
    "render_kuberay_manifest",
    "render_slurm_script",
    "run_command",
    "shell_join",
    "submit_ray_job",
    "wait_for_nodes",
]
