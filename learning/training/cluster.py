"""The original's distributed-training flags, translated to ``tf.distribute``.

TidzamTrain took ``--workers h1:p,h2:p --ps h3:p --job-type worker|ps --task-index i``
(TF1 between-graph replication). Here:

- ``--workers`` alone: ``MultiWorkerMirroredStrategy`` (synchronous all-reduce, no
  parameter server). Every worker runs the same command with its own
  ``--task-index``; worker 0 is the chief: it writes the model folder and the
  TensorBoard logs, the others train the same steps on their shard of each batch.
- ``--workers`` and ``--ps``: ``ParameterServerStrategy``. Worker 0 is the
  coordinator (TF's ``chief``) that runs the training loop; the other workers
  and the parameter servers (``--job-type ps``) serve until they are stopped.
  Keras 3 has no parameter-server support, so that path trains with ``tf_keras``
  and hands the weights to the same Keras 3 architecture for export.

``TF_CONFIG`` is written from these flags (an existing ``TF_CONFIG`` with no flags is
used as it is).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Literal

from bus_schemas.errors import TidzamError

JobType = Literal["worker", "ps"]


class ClusterError(TidzamError, ValueError):
    """The distributed-training flags do not describe a usable cluster."""


def _addresses(text: str | None, what: str) -> tuple[str, ...]:
    if not text:
        return ()
    out = tuple(a.strip() for a in text.split(",") if a.strip())
    for address in out:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ClusterError(f"{what}: {address!r} is not host:port")
    if len(set(out)) != len(out):
        raise ClusterError(f"{what}: an address is listed twice")
    return out


@dataclass(frozen=True)
class Cluster:
    workers: tuple[str, ...] = ()
    ps: tuple[str, ...] = ()
    job_type: JobType = "worker"
    task_index: int = 0

    @classmethod
    def from_flags(cls, workers: str | None, ps: str | None, job_type: str = "worker",
                   task_index: int = 0) -> Cluster:
        if job_type not in ("worker", "ps"):
            raise ClusterError(f"--job-type must be worker or ps, not {job_type!r}")
        cluster = cls(_addresses(workers, "--workers"), _addresses(ps, "--ps"),
                      "ps" if job_type == "ps" else "worker", task_index)
        members = cluster.ps if job_type == "ps" else cluster.workers
        if (cluster.workers or cluster.ps) and not 0 <= task_index < len(members):
            raise ClusterError(f"--task-index {task_index} is not one of the "
                               f"{len(members)} {job_type} address(es)")
        if cluster.ps and not cluster.workers:
            raise ClusterError("--ps needs --workers (worker 0 coordinates the training)")
        if cluster.ps and len(cluster.workers) < 2:
            raise ClusterError("parameter-server training needs at least 2 workers: worker 0 "
                               "coordinates, the others compute")
        if job_type == "ps" and not cluster.ps:
            raise ClusterError("--job-type ps needs --ps addresses")
        return cluster

    @property
    def distributed(self) -> bool:
        return bool(self.workers)

    @property
    def strategy_name(self) -> str:
        if self.ps:
            return "parameter_server"
        return "multi_worker_mirrored" if len(self.workers) > 1 else "default"

    @property
    def is_chief(self) -> bool:
        """The process that writes the model folder and the TensorBoard logs."""
        return self.job_type == "worker" and self.task_index == 0

    def tf_config(self) -> dict[str, Any]:
        """TF_CONFIG for this process."""
        if self.ps:
            spec = {"chief": [self.workers[0]], "worker": list(self.workers[1:]),
                    "ps": list(self.ps)}
            if self.job_type == "ps":
                task = {"type": "ps", "index": self.task_index}
            elif self.task_index == 0:
                task = {"type": "chief", "index": 0}
            else:
                task = {"type": "worker", "index": self.task_index - 1}
        else:
            spec = {"worker": list(self.workers)}
            task = {"type": "worker", "index": self.task_index}
        return {"cluster": spec, "task": task}

    def install(self) -> None:
        """Set TF_CONFIG (before TensorFlow builds a strategy)."""
        if self.distributed:
            os.environ["TF_CONFIG"] = json.dumps(self.tf_config())


def serve(cluster: Cluster) -> None:
    """Run this process as a parameter server or a (non-chief) worker of a
    parameter-server cluster: serve until killed."""
    import tensorflow as tf

    cluster.install()
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                  task_index=resolver.task_id, protocol="grpc", start=True)
    server.join()
