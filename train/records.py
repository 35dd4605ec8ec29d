"""What a training run keeps on disk: resumable state, weights, run.json and log.csv.

:class:`RunFiles` is the part of :class:`edgedet.train.trainer.Trainer` that reads and writes
the run folder (layout in :mod:`edgedet.runs`); every write is atomic. In a multi-worker run
only the chief calls the writers.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from edgedet import runs as ckpt
from edgedet.errors import ConfigError
from edgedet.files import atomic_write_bytes, atomic_write_json

CSV_FIELDS = ("epoch", "step", "loss", "cls_loss", "box_loss", "lr", "epoch_s", "val_AP", "val_AP50", "val_AP75")


def summary(m: dict) -> dict:
    """The metrics kept in run.json's ``best`` (floats; per-class AP if present)."""
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    out = {k: float(m[k]) for k in keys if k in m}
    if "per_class" in m:
        out["per_class"] = {k: float(v) for k, v in m["per_class"].items()}
    return out


class RunFiles:
    """Run-folder reads and writes of a trainer (mixin: uses its model, optimizer, EMA, cfg, options)."""

    out: Path

    def _state_arrays(self) -> dict:
        return {"model": self.model.weights, "optimizer": self.optimizer.variables, "ema": self.ema.shadow}

    def _save_state(self, epoch: int, best: dict) -> None:
        arrays = {k: [v.numpy() for v in vs] for k, vs in self._state_arrays().items()}
        meta = {"epochs_done": epoch, "epochs": self.epochs, "ema_updates": int(self.ema.num_updates.numpy()),
                "best": best, "num_weights": len(self.model.weights), "elapsed_s": round(self.elapsed_s, 1)}
        ckpt.save_state(self.out / ckpt.STATE, arrays, meta)

    def _restore_state(self, arrays: dict) -> None:
        for what, variables in self._state_arrays().items():
            values = arrays[what]
            if len(variables) != len(values):
                raise ConfigError(f"{self.out / ckpt.STATE}: {what} has {len(values)} tensors, model expects "
                                  f"{len(variables)} (was the run started with other options?)")
            for v, a in zip(variables, values):
                # No read-back: reading a replica-averaged (BatchNorm) variable is a collective
                # operation, and only the chief restores.
                v.assign(a, read_value=False)

    def _save_weights(self, metrics: dict, best: dict, epoch: int, last_too: bool = True) -> dict:
        """Write the EMA weights as ``last`` (and ``best`` when ``metrics`` improved); returns ``best``."""
        live = self.ema.swap_in()  # saved weights are the EMA weights (what was evaluated)
        try:
            if last_too:
                ckpt.save_weights(self.model, self.out / ckpt.LAST)
            improved = bool(metrics) and (not best or metrics["AP"] > best["metrics"]["AP"])
            # Every worker must make the same choice (saving reads the weights collectively).
            if self._agree(improved or (last_too and not self.val_samples)):
                ckpt.save_weights(self.model, self.out / ckpt.BEST)
                best = {"epoch": epoch, "metrics": summary(metrics)}
        finally:
            self.ema.swap_out(live)
        return best

    def _agree(self, value):
        """The chief's ``value`` on every worker (see the trainer); the value itself for one process."""
        return value

    def _run_extra(self) -> dict:
        """Fields a subclass adds to (or overrides in) run.json; written in the same atomic write."""
        return {}

    def _write_run_json(self, epochs_done: int, best: dict, status: str) -> None:
        o = self.opts
        weights = {k: name for k, name in (("best", ckpt.BEST), ("last", ckpt.LAST)) if (self.out / name).exists()}
        data = {
            "kind": "float",
            "variant": self.cfg.name,
            "image_size": self.cfg.image_size,
            "num_classes": self.cfg.num_classes,
            "class_names": list(self.dataset.class_names),
            "mean": list(self.cfg.mean),
            "std": list(self.cfg.std),
            "model_config": self.cfg.to_dict(),
            "dataset": str(Path(o.data).resolve()),
            "epochs": self.epochs,
            "epochs_done": epochs_done,
            "status": status,
            "best": best,
            "weights": weights,
            "train": o.to_dict(),  # as asked (a resume repeats it)
            # as run: --mixed-precision trains in float32 where no GPU is visible
            "precision": "mixed_float16" if getattr(self, "mixed", False) else "float32",
        }
        if weights.get("best"):
            data["weights_sha256"] = ckpt.sha256_file(self.out / ckpt.BEST)
        data.update(self._run_extra())
        atomic_write_json(self.out / ckpt.RUN_JSON, data)

    def _append_csv(self, row: dict, epochs_done: int) -> None:
        path = self.out / "log.csv"
        rows = []
        if path.exists():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epochs_done]
        rows.append({k: row.get(k, "") for k in CSV_FIELDS})
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
        atomic_write_bytes(path, buf.getvalue().encode())
