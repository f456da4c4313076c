"""``tidzam_ctl train``: TidzamTrain's options over ``learning.training.trainer``.

    tidzam_ctl train --dataset-train birds.npz --dataset-test birds-test.npz --out models/birds
    tidzam_ctl train --dataset-train recordings/ --out models/mine     # on the fly
    # two workers on two machines (run each with its own --task-index):
    tidzam_ctl train -d D.npz -o out --workers a:2222,b:2222 --task-index 0

``--dataset-train`` is a compiled dataset (``tidzam_ctl dataset``) or an audio
folder with one sub-folder per class: on the fly, its files are windowed with the
same energy gate as the datasets and ``--split`` of their recordings (by group,
never by window) are held out. Exit codes: 0 trained; 1 training failed; 2 bad
arguments or unusable data.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tidzam_ctl.errors import CliError
from tidzam_ctl.settings import CtlSettings

log = logging.getLogger(__name__)
out = Console()
err = Console(stderr=True, soft_wrap=True)

DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else ""


def add_train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model from datasets or audio folders "
                       "(TidzamTrain's options, TensorBoard, distributed workers)",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset-train", type=Path, required=True, metavar="D",
                   help="compiled dataset (.npz) or audio folder (one sub-folder per class)")
    p.add_argument("-t", "--dataset-test", type=Path, metavar="T",
                   help="held-out dataset (default: the test side of --dataset-train)")
    p.add_argument("-o", "--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--model", "--dnn", default="selector", help="architecture (default selector)")
    p.add_argument("--model-id", help="model id in model.json (default: the --out folder name)")
    p.add_argument("--version", default="1.0.0", help="semantic version (default 1.0.0)")
    p.add_argument("--training-iterations", type=int, metavar="N",
                   help="training iterations (batches); default: --epochs balanced epochs")
    p.add_argument("--epochs", type=int, default=40, help="balanced epochs (default 40)")
    p.add_argument("--per-class", type=int, default=600,
                   help="windows of each class per epoch (default 600)")
    p.add_argument("--testing-step", type=int, default=50, metavar="N",
                   help="iterations between held-out batch tests (default 50)")
    p.add_argument("--batchsize", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--learning-rate", type=float, default=3e-3, help="default 0.003")
    p.add_argument("--stats-step", type=int, default=500, metavar="N",
                   help="iterations between TensorBoard statistics, embeddings and feature "
                   "maps (default 500)")
    p.add_argument("--nb-embeddings", type=int, default=50,
                   help="embeddings written for the projector (default 50)")
    p.add_argument("--logdir", type=Path, help="TensorBoard logs (default OUT/tensorboard)")
    p.add_argument("--split", type=float, default=0.2,
                   help="audio folders: share of recordings held out (default 0.2)")
    p.add_argument("--width", type=int, default=24, help="CNN width (default 24)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0: its default)")
    p.add_argument("--workers", help="distributed: worker addresses host:port,host:port "
                   "(worker 0 is the chief)")
    p.add_argument("--ps", help="distributed: parameter server addresses host:port,...")
    p.add_argument("--job-type", choices=("worker", "ps"), default="worker",
                   help="this process's job (default worker)")
    p.add_argument("--task-index", type=int, default=0, help="this process's index in its job")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")


def _options(args: argparse.Namespace, train_path: Path) -> Any:
    from learning.training.cluster import Cluster, ClusterError
    from learning.training.trainer import TrainOptions

    try:
        cluster = Cluster.from_flags(args.workers, args.ps, args.job_type, args.task_index)
    except ClusterError as exc:
        raise CliError(str(exc), 2) from None
    for name in ("training_iterations", "epochs", "per_class", "testing_step", "batchsize",
                 "stats_step", "nb_embeddings"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CliError(f"--{name.replace('_', '-')} must be at least 1", 2)
    if not 0.0 < args.split < 1.0:
        raise CliError("--split must be between 0 and 1", 2)
    return TrainOptions(
        dataset_train=train_path, dataset_test=args.dataset_test, out=args.out,
        model=args.model, model_id=args.model_id, version=args.version,
        iterations=args.training_iterations, epochs=args.epochs, per_class=args.per_class,
        testing_step=args.testing_step, batch_size=args.batchsize,
        learning_rate=args.learning_rate, stats_step=args.stats_step,
        nb_embeddings=args.nb_embeddings, width=args.width, seed=args.seed,
        logdir=args.logdir, progress=not args.no_progress, cluster=cluster)


def _folder_dataset(folder: Path, split: float, seed: int, scratch: Path) -> Path:
    """On the fly: window an audio folder (class = sub-folder) and hold out recordings."""
    from learning.datasets import operations as datasets
    from learning.datasets.add import add_audio
    from learning.datasets.errors import DatasetError
    from learning.datasets.samples import folder_items

    try:
        items, skipped = folder_items(folder)
        ds, report = add_audio(datasets.create(), items, seed=seed)
        for item in [*skipped, *report.skipped]:
            err.print(f"[yellow]skipped[/yellow] {item.path}: {item.reason}")
        ds, single = datasets.split_in_place(ds, split, seed)
    except DatasetError as exc:
        raise CliError(str(exc), 2) from None
    if single:
        err.print(f"[yellow]one recording only, nothing held out for:[/yellow] "
                  f"{', '.join(single)}")
    path = scratch / "on-the-fly.npz"
    datasets.save(ds, path, new=True)
    return path


def train(settings: CtlSettings, args: argparse.Namespace) -> int:
    from learning.training.cluster import ClusterError
    from learning.training.trainer import TrainError
    from learning.training.trainer import train as run_training

    logging.getLogger("absl").setLevel(logging.ERROR)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="tidzam-train-") as scratch:
        train_path = args.dataset_train
        if train_path.is_dir():  # every worker windows the folder the same way (seeded)
            train_path = _folder_dataset(train_path, args.split, args.seed, Path(scratch))
        opts = _options(args, train_path)
        if opts.cluster.job_type == "ps" or (opts.cluster.ps and not opts.cluster.is_chief):
            from learning.training.cluster import serve

            err.print(f"serving as {opts.cluster.job_type} {opts.cluster.task_index}; "
                      "stop it once the chief is done")
            serve(opts.cluster)
            return 0
        try:
            outcome = _run(run_training, opts)
        except (TrainError, ClusterError) as exc:
            raise CliError(str(exc), 2) from None
    if args.json:
        print(json.dumps({
            "folder": str(outcome.folder.path) if outcome.folder else None,
            "chief": opts.cluster.is_chief, "strategy": outcome.strategy,
            "replicas": outcome.replicas,
            "metrics": outcome.metrics.model_dump() if outcome.metrics else None,
            "timings": outcome.timings}))
        return 0
    if not opts.cluster.is_chief:
        out.print(f"worker {opts.cluster.task_index} done ({outcome.replicas} replicas in "
                  "sync): the chief writes the model")
        return 0
    assert outcome.folder is not None
    if outcome.metrics is not None:
        from learning.training.metrics import metrics_table

        out.print(metrics_table(outcome.metrics))
    out.print("timings: " + ", ".join(f"{k} {v}" for k, v in outcome.timings.items()))
    out.print(f"model folder: {outcome.folder.path} (TensorBoard: tensorboard --logdir "
              f"{opts.tensorboard_dir})")
    return 0


def _run(run_training: Any, opts: Any) -> Any:
    if not opts.progress:
        return run_training(opts)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=False) as bar:
        task = bar.add_task("training", total=None)

        def show(state: Any) -> None:
            test = state.test.get("test_accuracy")
            tested = f" test acc {test:.3f}" if test is not None else ""
            bar.update(task, total=state.total, completed=state.done,
                       description=f"loss {state.loss:.3f} acc {state.accuracy:.3f}{tested}")

        return run_training(opts, on_progress=show)
