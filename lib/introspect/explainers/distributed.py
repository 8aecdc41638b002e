"""Training on R ranks: the launcher, the rank's view of the world, and the gradient all-reduce.

A training job runs R processes ("ranks"), one per GPU on CUDA, ``compute.processes.train`` on a CPU (gloo,
so that tests run several ranks on one machine). With R = 1 training runs in the job's own process, as it
always did. With R > 1, :func:`launch` pickles the training call into a temporary folder and starts
``torchrun --standalone --nproc_per_node R`` on this module: ``--standalone`` lets torchrun pick a free port
on the node, so two trainings on one node (or one SLURM allocation) never collide. Every rank initialises
the process group (NCCL on CUDA, gloo on a CPU), runs the same call, and rank 0 alone writes the checkpoint,
the logs it forwards and the result the launcher reads back.

The ranks share one seeded order of the examples per epoch; rank r takes micro-batches r, r + R, ... of
each optimiser step's group (:func:`shard`), and the gradients are summed over ranks before the step, so
R ranks with micro-batch b and gradient accumulation g take the same steps as one rank with b and g x R.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

log = logging.getLogger(__name__)

RESULT_FILE = "result.pkl"
CALL_FILE = "call.pkl"
SHUTDOWN_TIMEOUT = 540  # seconds torchrun waits for stopping ranks before SIGKILL (the SLURM warning is 600 s)


class SignalsNoted:
    """While active, SIGTERM / SIGINT are noted in `received` (and logged with `message`) instead of ending the
    process, so that the code can stop at a point of its choosing; installed in the main thread only."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "SignalsNoted":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum, frame) -> None:
        log.warning("signal %d received: %s", signum, self.message)
        self.received.append(signum)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless a process group is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_and_world()[0] == 0


def barrier() -> None:
    if rank_and_world()[1] > 1:
        torch.distributed.barrier()


def shard(group: Sequence[Any], rank: int, world: int) -> list[Any]:
    """This rank's micro-batches of one optimiser step's group: every world-th one from `rank` on."""
    return list(group[rank::world])


def all_reduce_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Sum the gradients of `params` over the ranks (a rank without a micro-batch contributes zeros)."""
    if rank_and_world()[1] == 1:
        return
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch._utils._flatten_dense_tensors(grads)
    torch.distributed.all_reduce(flat)
    for grad, reduced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        grad.copy_(reduced)


def step_totals(loss: float, stop: bool, device: str | torch.device = "cpu") -> tuple[float, bool]:
    """One all-reduce per optimiser step: the step's loss summed over the ranks, and whether any rank was told
    to stop (so that every rank stops at the same step; all ranks must call it)."""
    if rank_and_world()[1] == 1:
        return loss, stop
    t = torch.tensor([loss, 1.0 if stop else 0.0], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return float(t[0].item()), bool(t[1].item() > 0)


def rank_device(device: str) -> str:
    """The device of this rank: its own GPU (LOCAL_RANK) when the job runs on CUDA."""
    if device.startswith("cuda") and rank_and_world()[1] > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


def job_ranks(device: str, gpus: int, processes: int) -> int:
    """The ranks a training job launches: one per GPU it was given on CUDA, else `processes` CPU ranks."""
    return max(1, int(gpus)) if device.startswith("cuda") else max(1, int(processes))


def launch_job(fn: Callable, kwargs: dict[str, Any], device: str, resources: Any, threads: int) -> Any:
    """A training job's call on the ranks its Snakemake resources give (``gpu``, ``train_processes``), with
    the job's ``checkpoint_every`` and device added to `kwargs`."""
    ranks = job_ranks(device, resources.gpu, resources.train_processes)
    kwargs = {**kwargs, "device": device, "checkpoint_every": int(resources.checkpoint_every)}
    return launch(fn, kwargs, ranks=ranks, device=device, threads=threads)


def _qualified(fn: Callable) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def _resolve(name: str) -> Callable:
    module, _, attr = name.partition(":")
    return getattr(import_module(module), attr)


def launch(fn: Callable, kwargs: dict[str, Any], ranks: int, device: str = "cpu", threads: int = 1) -> Any:
    """Run ``fn(**kwargs)`` on `ranks` ranks and return rank 0's result.

    `fn` must be a module-level function and `kwargs` picklable; `threads` CPU threads are split between the
    ranks. The ranks' output goes to this process's log, line by line. A failing rank fails the call with
    the tail of the ranks' output.
    """
    if ranks < 1:
        raise ValueError(f"compute.processes.train / the job's GPUs must be >= 1, got {ranks}")
    if ranks == 1:
        torch.set_num_threads(threads)
        return fn(**kwargs)
    if device.startswith("cuda") and torch.cuda.device_count() < ranks:
        raise RuntimeError(f"the training job asks for {ranks} ranks on CUDA but torch sees "
                           f"{torch.cuda.device_count()} GPUs; set compute.gpus.train to the GPUs the job gets")
    with tempfile.TemporaryDirectory(prefix="introspect-ranks-") as folder:
        folder = Path(folder)
        with open(folder / CALL_FILE, "wb") as f:
            pickle.dump({"fn": _qualified(fn), "kwargs": kwargs, "device": device,
                         "threads": max(1, threads // ranks)}, f)
        # the ranks get SIGTERM too (SLURM signals the whole job step) and need time to write their checkpoint
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               f"--shutdown-timeout={SHUTDOWN_TIMEOUT}", "-m", __name__, str(folder)]
        log.info("world size %d: %s", ranks, " ".join(cmd[2:]))
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(max(1, threads // ranks)))
        tail: list[str] = []
        # the ranks get the signal too: let them checkpoint, then report how they ended
        waiting = SignalsNoted("waiting for the ranks to checkpoint and stop")
        with waiting, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       env=env) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail = (tail + [line])[-40:]
                log.info("[ranks] %s", line)
        if proc.returncode != 0:
            raise RuntimeError(f"training on {ranks} ranks failed (torchrun exit code {proc.returncode}); the ranks' "
                               "last output:\n" + "\n".join(tail))
        with open(folder / RESULT_FILE, "rb") as f:
            return pickle.load(f)


def _rank_main(folder: str) -> None:
    """One rank of :func:`launch` (run by torchrun)."""
    folder_path = Path(folder)
    with open(folder_path / CALL_FILE, "rb") as f:
        call = pickle.load(f)
    device = call["device"]
    backend = "nccl" if device.startswith("cuda") else "gloo"
    torch.distributed.init_process_group(backend)
    rank, world = rank_and_world()
    torch.set_num_threads(call["threads"])
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s rank {rank}/{world} %(levelname)s %(name)s: %(message)s")
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    try:
        kwargs = dict(call["kwargs"])
        if "device" in kwargs:
            kwargs["device"] = rank_device(kwargs["device"])
        result = _resolve(call["fn"])(**kwargs)
        if rank == 0:
            with open(folder_path / RESULT_FILE, "wb") as f:
                pickle.dump(result, f)
        barrier()
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    _rank_main(sys.argv[1])
