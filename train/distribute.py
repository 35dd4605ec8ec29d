"""Distribution strategies: one device, every GPU of one machine, or several machines.

* ``default``: one device (TensorFlow's default strategy).
* ``mirrored``: every visible GPU of this machine (:class:`tf.distribute.MirroredStrategy`);
  on a machine without GPUs, its one CPU.
* ``multiworker``: one process per machine (:class:`tf.distribute.MultiWorkerMirroredStrategy`),
  each mirroring over its own GPUs; gradients are all-reduced over gRPC. The cluster is the
  standard ``TF_CONFIG`` environment variable, or ``--workers host:port,... --worker-index I``,
  which writes it. The chief (the ``chief`` task, else worker 0) alone writes the run folder
  (see :class:`Role`).

Joining a cluster blocks inside TensorFlow until every worker has registered, which never
ends when an address is wrong. A watchdog thread therefore gives the cluster
``connect_timeout`` seconds to form; after that it names the addresses that do not answer
on one line and ends the process (``os._exit``: the blocked C++ call cannot be interrupted).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from edgedet.errors import ConfigError

STRATEGIES = ("default", "mirrored", "multiworker")
CONNECT_TIMEOUT_S = 30.0  # time the cluster gets to form after this worker starts its server
HEARTBEAT_TIMEOUT_S = 20  # a worker silent this long is declared dead and every collective aborts
EXIT_WAIT_S = 300  # at the end, how long a finished worker waits for the others (the chief evaluates last)


@dataclass
class Cluster:
    """The cluster of a multi-worker run, as ``TF_CONFIG`` describes it.

    Attributes:
        jobs: ``{"chief": [addr], "worker": [addr, ...]}`` (``host:port`` strings).
        task_type: this process's job ("chief" or "worker").
        index: this process's index in its job.
    """

    jobs: dict
    task_type: str
    index: int

    @property
    def is_chief(self) -> bool:
        if "chief" in self.jobs:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.index == 0

    @property
    def address(self) -> str:
        return self.jobs[self.task_type][self.index]

    @property
    def num_workers(self) -> int:
        return sum(len(v) for k, v in self.jobs.items() if k in ("chief", "worker"))

    @property
    def peers(self) -> list[str]:
        return [a for k in ("chief", "worker") for a in self.jobs.get(k, []) if a != self.address]

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.index} ({self.address})"


def parse_workers(text: str) -> list[str]:
    """``"host:port,host:port"`` -> the list, checked (the first is the chief)."""
    workers = [w.strip() for w in str(text).split(",") if w.strip()]
    for w in workers:
        host, _, port = w.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--workers {text!r}: {w!r} is not host:port")
    if len(workers) < 2:
        raise ConfigError(f"--workers {text!r}: a multi-worker cluster needs at least two host:port addresses")
    if len(set(workers)) != len(workers):
        raise ConfigError(f"--workers {text!r}: an address is listed twice")
    return workers


def tf_config(workers: list[str], index: int) -> str:
    """The ``TF_CONFIG`` JSON of worker ``index`` of ``workers`` (worker 0 is the chief)."""
    if not 0 <= index < len(workers):
        raise ConfigError(f"--worker-index {index}: expected 0..{len(workers) - 1} for {len(workers)} --workers")
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": int(index)}})


def cluster_from_env(environ=None) -> Cluster:
    """Parse ``TF_CONFIG`` (one-line :class:`ConfigError` when missing or malformed)."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not raw.strip():
        raise ConfigError("--strategy multiworker: TF_CONFIG is not set (set it, or pass --workers HOST:PORT,... "
                          "--worker-index I)")
    try:
        cfg = json.loads(raw)
        jobs = {k: list(v) for k, v in cfg["cluster"].items() if k in ("chief", "worker")}
        task_type, index = str(cfg["task"]["type"]), int(cfg["task"].get("index", 0))
        jobs[task_type][index]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ConfigError(f"TF_CONFIG: not a valid cluster description ({type(exc).__name__}: {exc}); expected "
                          '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": I}}') from None
    if sum(len(v) for v in jobs.values()) < 1:
        raise ConfigError("TF_CONFIG: the cluster lists no chief or worker")
    return Cluster(jobs, task_type, index)


def make_strategy(name: str, connect_timeout: float = CONNECT_TIMEOUT_S):
    """The ``tf.distribute`` strategy for ``--strategy name``."""
    import tensorflow as tf

    if name in (None, "", "default", "none"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()  # every visible GPU (without GPUs: the CPU devices)
    if name == "multiworker":
        return _join_cluster(cluster_from_env(), connect_timeout)
    from edgedet.errors import did_you_mean

    raise ConfigError(f"--strategy {name!r}: unknown{did_you_mean(name, STRATEGIES[1:])} "
                      "(choose default, mirrored or multiworker)")


def _reachable(address: str, timeout: float = 2.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _formation_error(cluster: Cluster, timeout: float) -> str:
    """The one line for a cluster that did not form: which addresses do not answer."""
    silent = [a for a in cluster.peers if not _reachable(a)]
    what = (f"cannot reach {', '.join(silent)}" if silent else
            f"reached {', '.join(cluster.peers)} but the cluster did not form (do all workers have the same cluster?)")
    return (f"--strategy multiworker: {cluster.name} {what} within {timeout:g} s "
            "(check the addresses and ports, and start every worker; --connect-timeout sets the wait)")


_SCRATCH: list[Path] = []  # this process's worker scratch folders, removed even on a hard exit


def _watchdog(cluster: Cluster, timeout: float, formed: threading.Event) -> None:
    """End the process with a one-line error if the cluster has not formed after ``timeout`` s."""
    if formed.wait(timeout):
        return
    from edgedet.quiet import hard_exit

    def remove_scratch():  # os._exit skips Role.close()
        for folder in _SCRATCH:
            shutil.rmtree(folder, ignore_errors=True)

    hard_exit(2, f"edgedet: error: {_formation_error(cluster, timeout)}\n", remove_scratch)


# The outside watcher's margin over the in-process watchdog's deadline.
BACKSTOP_S = 10.0


def _outside_watchdog(cluster: Cluster, timeout: float):
    """A small separate process that prints the formation error and kills this one if the cluster
    has not formed ``timeout`` s from now; returns the function that tells it the cluster formed.

    The backstop to :func:`_watchdog`: the chief waits for its workers inside TensorFlow's C++
    with the GIL held, where no Python thread, signal handler or Ctrl-C runs (it sat silent for
    minutes with nobody at a worker's address). A closed pipe is the "formed" signal, so the
    watcher also ends when this process does.
    """
    import subprocess
    import sys

    from edgedet.quiet import terminal_fd

    r, w = os.pipe()
    spec = json.dumps({"jobs": cluster.jobs, "task_type": cluster.task_type, "index": cluster.index,
                       "timeout": timeout, "pid": os.getpid(), "fd": r})
    subprocess.Popen([sys.executable, "-c", "import sys; from edgedet.train.distribute import watch_main; "
                      "watch_main(sys.argv[1])", spec], pass_fds=(r,), stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=terminal_fd(), start_new_session=True)
    os.close(r)
    return lambda: os.close(w)


def watch_main(spec: str) -> None:
    """The outside watcher's body (see :func:`_outside_watchdog`)."""
    import select
    import signal
    import sys

    d = json.loads(spec)
    ready, _, _ = select.select([d["fd"]], [], [], d["timeout"])
    if ready or os.getppid() != d["pid"]:  # formed, or the process ended (its pid may be another's now)
        return
    cluster = Cluster(d["jobs"], d["task_type"], d["index"])
    sys.stderr.write(f"edgedet: error: {_formation_error(cluster, d['timeout'] - BACKSTOP_S)}\n")
    sys.stderr.flush()
    os.kill(d["pid"], signal.SIGKILL)


def _join_cluster(cluster: Cluster, connect_timeout: float):
    import tensorflow as tf
    from tensorflow.python.eager import context

    host, _, port = cluster.address.rpartition(":")
    # Our own port first: a clear error instead of gRPC's when it is taken or not ours.
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("" if host not in ("127.0.0.1", "localhost") else host, int(port)))
    except OSError as exc:
        raise ConfigError(f"--strategy multiworker: {cluster.name}: cannot listen on port {port} ({exc.strerror}); "
                          "is another process using it?") from None
    if context.context().coordination_service is None:
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2 as pb

        jobs = [pb.CoordinatedJob(name=k, num_tasks=len(v)) for k, v in cluster.jobs.items()]
        leader = f"/job:{'chief' if 'chief' in cluster.jobs else 'worker'}/replica:0/task:0"
        context.context().configure_coordination_service(
            service_type="standalone", service_leader=leader, coordinated_jobs=jobs,
            cluster_register_timeout_in_ms=int(connect_timeout * 1000) + 5000,
            heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_S * 1000,
            shutdown_barrier_timeout_in_ms=EXIT_WAIT_S * 1000)
    formed = threading.Event()
    threading.Thread(target=_watchdog, args=(cluster, connect_timeout, formed), daemon=True).start()
    backstop = _outside_watchdog(cluster, connect_timeout + BACKSTOP_S)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        # The first collective proves every worker is there (registration alone may not).
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.function(lambda: tf.constant(1.0))), axis=None)
    except tf.errors.OpError:
        # TensorFlow's own registration deadline can fire first: the same one line as the watchdog's.
        raise ConfigError(_formation_error(cluster, connect_timeout)) from None
    finally:
        formed.set()
        backstop()
    return strategy


def cluster_error_reason(exc) -> str:
    """One line out of TensorFlow's many-line collective error: which task stopped, or the first line."""
    import re

    text = str(exc)
    dead = re.findall(r"^(/job:\S+)$", text, flags=re.M)
    if "heartbeat" in text and dead:
        return f"{', '.join(sorted(set(dead)))} stopped sending heartbeats"
    lines = [re.sub(r"\{\{[^}]*\}\}", "", line).strip() for line in text.splitlines()]
    # TensorFlow opens with "Graph execution error:" and the node's Python stack; the cause
    # (aborted collective, failed connection, missed heartbeat) comes after them.
    lines = [ln for ln in lines if ln and not ln.endswith(":") and not ln.startswith(("File ", "Detected at node"))
             and not re.match(r"^(\[\[|\S+\.py\b|line \d+)", ln)]
    cause = re.compile(r"abort|heartbeat|unavailable|connect|closed|lost|deadline|timed? ?out|reset", re.I)
    return next((ln for ln in lines if cause.search(ln)), lines[0] if lines else type(exc).__name__)[:300]


@dataclass
class Role:
    """What this process writes: the chief writes the run folder, every other worker a scratch folder.

    Attributes:
        is_chief: True in a single-process run and for the multi-worker chief.
        out: where this process writes (the run folder, or a scratch folder removed by :meth:`close`).
        worker: index among all workers (0 = chief), for messages.
        num_workers: workers in the cluster (1 for a single process).
    """

    is_chief: bool = True
    out: Path = field(default_factory=Path)
    worker: int = 0
    num_workers: int = 1
    scratch: bool = False

    @classmethod
    def for_strategy(cls, strategy_name: str, run_dir) -> "Role":
        if strategy_name != "multiworker":
            return cls(True, Path(run_dir))
        cluster = cluster_from_env()
        order = [a for k in ("chief", "worker") for a in cluster.jobs.get(k, [])]
        if cluster.is_chief:
            return cls(True, Path(run_dir), order.index(cluster.address), cluster.num_workers)
        # Other workers keep TensorBoard events etc. out of the chief's (possibly shared) run folder.
        scratch = Path(tempfile.mkdtemp(prefix=f"edgedet-worker{cluster.index}-"))
        _SCRATCH.append(scratch)
        return cls(False, scratch, order.index(cluster.address), cluster.num_workers, scratch=True)

    def close(self) -> None:
        if self.scratch:
            shutil.rmtree(self.out, ignore_errors=True)


def broadcast_from_chief(strategy, role: Role, arrays: list):
    """Every worker gets the chief's numpy arrays (the others pass arrays of the same shapes).

    One SUM all-reduce of (chief: values, others: zeros); exact, since x + 0 == x.
    """
    import numpy as np
    import tensorflow as tf

    if role.num_workers <= 1 or not arrays:
        return arrays
    local = [tf.constant(a if role.is_chief else np.zeros_like(a)) for a in arrays]
    replicas_here = strategy.num_replicas_in_sync // role.num_workers

    @tf.function
    def fn():
        ctx = tf.distribute.get_replica_context()
        # one contribution per worker: its first local replica's
        first = tf.equal(ctx.replica_id_in_sync_group % max(replicas_here, 1), 0)
        out = [None] * len(local)
        # One all-reduce per dtype (a packed one needs one dtype), in the same order on every worker.
        for dtype in sorted({x.dtype for x in local}, key=lambda d: d.name):
            idx = [i for i, x in enumerate(local) if x.dtype == dtype]
            summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [local[i] * tf.cast(first, dtype) for i in idx])
            for i, v in zip(idx, summed):
                out[i] = v
        return out

    out = strategy.experimental_local_results(strategy.run(fn))[0]
    return [o.numpy() for o in out]


def set_mixed_precision(enabled: bool, log=None) -> bool:
    """``--mixed-precision``: the ``mixed_float16`` Keras policy where a GPU is visible.

    Returns whether it is on. On a machine without GPU the policy stays float32 (float16 maths
    on CPU is emulated and slower), with a note.
    """
    import tensorflow as tf
    import tf_keras as keras

    if not enabled:
        keras.mixed_precision.set_global_policy("float32")
        return False
    if not tf.config.list_physical_devices("GPU"):
        if log:
            log("--mixed-precision: no GPU visible; training in float32")
        keras.mixed_precision.set_global_policy("float32")
        return False
    keras.mixed_precision.set_global_policy("mixed_float16")
    return True


def add_arguments(p, default_strategy: str | None = "default") -> None:
    """The strategy flags of ``edgedet train`` and ``edgedet quantize qat``."""
    p.add_argument("--strategy", default=default_strategy, choices=list(STRATEGIES),
                   help="default: one device; mirrored: every GPU of this machine; multiworker: several machines "
                        "(TF_CONFIG or --workers)" + (f" [{default_strategy}]" if default_strategy else ""))
    p.add_argument("--workers", metavar="HOST:PORT,...",
                   help="multiworker: every worker's address, the chief first (writes TF_CONFIG)")
    p.add_argument("--worker-index", type=int, default=None, metavar="I", help="multiworker: this worker's place in --workers")
    p.add_argument("--connect-timeout", type=float, default=None, metavar="S",
                   help=f"multiworker: seconds the workers get to find each other [{CONNECT_TIMEOUT_S:g}]")
    p.add_argument("--mixed-precision", action="store_true",
                   help="mixed_float16 on GPU (faster, half the activation memory); float32 without a GPU")


def apply_arguments(args) -> None:
    """``--workers`` + ``--worker-index`` -> ``TF_CONFIG`` (implies ``--strategy multiworker``)."""
    if args.workers is None:
        if args.worker_index is not None:
            raise ConfigError("--worker-index needs --workers HOST:PORT,...")
        return
    if args.worker_index is None:
        raise ConfigError("--workers needs --worker-index I (this worker's place in the list, 0 = chief)")
    if args.strategy not in (None, "default", "multiworker"):
        raise ConfigError(f"--workers is for --strategy multiworker, not {args.strategy}")
    args.strategy = "multiworker"
    os.environ["TF_CONFIG"] = tf_config(parse_workers(args.workers), args.worker_index)
