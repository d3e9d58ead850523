"""Run a project's ``main(cfg)`` in this process, under torchrun, or on SLURM through submitit.

    python -m shared.launch --entry projects.ezvsl.train --config CFG.yaml [key=value ...]
    python -m shared.launch --entry projects.ezvsl.train --config CFG.yaml --cluster slurm \
        --partition gpu --nodes 1 --gpus-per-node 4 --time-min 720 [key=value ...]

Each project's ``python -m projects.<name>.train`` is this same CLI with ``--entry`` filled in.
On SLURM one task runs per GPU; the job is Checkpointable: on preemption or timeout submitit
requeues it and the fresh process resumes from the run's last checkpoint (state lives on disk,
never in the pickled callable).

A ``--cluster local`` job is stopped with ``kill <job id>`` (the id is its controller's pid) or
``job.cancel()``: the training process ends with its controller, whichever signal ended that.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib
import os
import signal
import sys
import threading
import time
import types
from pathlib import Path

import submitit

from shared.config import load_config


class Job(submitit.helpers.Checkpointable):
    """The submitted callable: only the entry module, config path and overrides are pickled."""

    def __init__(self, entry: str, config: str, overrides: list[str]):
        self.entry = entry
        self.config = config
        self.overrides = list(overrides)

    def __call__(self):
        if os.environ.get("SUBMITIT_EXECUTOR") == "local":
            end_with_local_controller()
        try:
            tasks = submitit.JobEnvironment().num_tasks
        except RuntimeError:  # not inside a submitit job (plain python or torchrun)
            tasks = 1
        if tasks > 1:  # one task per GPU: export RANK/WORLD_SIZE/MASTER_* for shared.dist.init
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        cfg = load_config(self.config, self.overrides)
        return importlib.import_module(self.entry).main(cfg)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds: finally blocks run, the run folder's lock is released at exit


def end_with_local_controller() -> None:
    """Make this task of a submitit local job end when its job is killed. submitit's controller forwards
    SIGTERM (``kill <job id>``) to the task, whose submitit handler ignores it (on SLURM, SIGTERM comes
    before a preemption and the job must checkpoint instead); and a controller killed with SIGKILL would
    leave the task training on, orphaned, into the same run folder. Here SIGTERM exits, and the task
    gets SIGTERM when its parent (the controller) dies."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError):  # not Linux: watch for being re-parented instead
        def watch():
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=watch, name="end-with-controller", daemon=True).start()
    if os.getppid() != parent or parent == 1:  # the controller died before the hook was in place
        os.kill(os.getpid(), signal.SIGTERM)


def add_cluster_args(p: argparse.ArgumentParser, cpus_per_task: int = 10, mem_gb: int = 0, time_min: float = 24 * 60,
                     max_requeue: int = 20) -> None:
    """The submitit / SLURM options, shared by every launcher (single runs and sweeps)."""
    g = p.add_argument_group("submitit / SLURM")
    g.add_argument("--partition", default=None)
    g.add_argument("--account", default=None)
    g.add_argument("--qos", default=None)
    g.add_argument("--constraint", default=None)
    g.add_argument("--nodes", type=int, default=1)
    g.add_argument("--gpus-per-node", type=int, default=1)
    g.add_argument("--cpus-per-task", type=int, default=cpus_per_task)
    g.add_argument("--mem-gb", type=int, default=mem_gb, help="0 asks SLURM for the whole node's memory")
    g.add_argument("--time-min", type=float, default=time_min)
    g.add_argument("--signal-delay-s", type=int, default=120,
                   help="warning before the time limit at which the job checkpoints and requeues")
    g.add_argument("--max-requeue", type=int, default=max_requeue, help="how many timeouts may requeue the job")
    g.add_argument("--log-dir", default=None, help="submitit's folder (default: under the run folder)")
    g.add_argument("--wait", action="store_true", help="block until the job ends and print its result")


def make_executor(args: argparse.Namespace, folder: Path, name: str, array_parallelism: int | None = None):
    """A submitit executor for ``args.cluster`` (local | debug | slurm, or auto: submitit decides)."""
    tasks = max(1, args.gpus_per_node)
    if args.cluster == "local":  # subprocesses on this machine; LocalExecutor takes fractional limits (tests)
        executor = submitit.LocalExecutor(folder=str(folder / "%j"), max_num_timeout=args.max_requeue)
        executor.update_parameters(timeout_min=args.time_min, tasks_per_node=tasks, gpus_per_node=args.gpus_per_node,
                                   signal_delay_s=args.signal_delay_s)
        return executor
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=None if args.cluster == "auto" else args.cluster,
                                     slurm_max_num_timeout=args.max_requeue)
    params = dict(name=name, timeout_min=max(1, round(args.time_min)), nodes=args.nodes, tasks_per_node=tasks,
                  cpus_per_task=args.cpus_per_task, stderr_to_stdout=True)
    if executor.cluster == "slurm":
        params.update(gpus_per_node=args.gpus_per_node, mem_gb=args.mem_gb, slurm_signal_delay_s=args.signal_delay_s)
        extra = {k: v for k, v in (("account", args.account), ("qos", args.qos)) if v}
        if args.partition:
            params["slurm_partition"] = args.partition
        if args.constraint:
            params["slurm_constraint"] = args.constraint
        if extra:
            params["slurm_additional_parameters"] = extra
        if array_parallelism:
            params["slurm_array_parallelism"] = array_parallelism
    executor.update_parameters(**params)
    return executor


def build_parser(entry: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entry", default=entry, required=entry is None,
                   help="module with main(cfg), e.g. projects.ezvsl.train")
    p.add_argument("--config", required=True, help="YAML config (follows base:)")
    p.add_argument("--cluster", default="none", choices=["none", "local", "debug", "slurm"],
                   help="none: run here (also under torchrun); local/debug/slurm: submit with submitit")
    add_cluster_args(p)
    p.add_argument("overrides", nargs="*", help="dotted config overrides, key.sub=value")
    return p


def _cancel_local_job(job, check: bool = True) -> None:  # noqa: ARG001 (submitit's signature)
    if job._process is not None and job._process.poll() is None:
        job._process.send_signal(signal.SIGTERM)


def submit(args: argparse.Namespace) -> submitit.Job:
    cfg = load_config(args.config, args.overrides)  # fail here, not on the cluster, on a bad config
    run_dir = Path(cfg.run.root) / cfg.run.project / cfg.run.name
    folder = Path(args.log_dir) if args.log_dir else run_dir / "submitit"
    executor = make_executor(args, folder, f"{cfg.run.project}-{cfg.run.name}")
    job = executor.submit(Job(args.entry, os.path.abspath(args.config), args.overrides))
    if args.cluster == "local":
        # submitit's LocalJob.cancel sends SIGINT to the controller, which a process started in the
        # background (nohup, `&`, many CI runners) inherits as ignored: the job would go on. Cancel with
        # SIGTERM instead, the signal `kill <job id>` sends, which the controller always forwards.
        job.cancel = types.MethodType(_cancel_local_job, job)
    stop = f"kill {job.job_id}" if args.cluster == "local" else f"scancel {job.job_id}" if args.cluster == "slurm" else ""
    print(f"submitted job {job.job_id} ({args.cluster}); logs in {folder}/{job.job_id}"
          + (f"; stop it with: {stop}" if stop else ""), flush=True)
    return job


def main(argv: list[str] | None = None, entry: str | None = None):
    args = build_parser(entry).parse_args(argv)
    if args.cluster == "none":
        return Job(args.entry, args.config, args.overrides)()
    job = submit(args)
    if args.wait or args.cluster == "debug":
        result = job.result()
        print(result, flush=True)
        return result
    return job


if __name__ == "__main__":
    main(sys.argv[1:])
