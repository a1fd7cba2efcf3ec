"""Training logs on rank 0: the progress bar (loss, lr, samples/s), metrics.jsonl (rewritten
past the checkpoint on resume), TensorBoard when installed, and loss.png drawn from metrics.jsonl."""

from __future__ import annotations

import time
from pathlib import Path

from musilingo_cli.core.console import progress, stderr
from musilingo_cli.core.errors import install_hint
from musilingo_cli.core.journal import Journal, atomic_path, read_jsonl, rewrite_jsonl
from musilingo_cli.pipelines.train.config import TrainConfig


class _Logger:
    """Rank 0: rich progress (loss, lr, samples/s), metrics.jsonl, TensorBoard when installed."""

    def __init__(self, out: Path, config: TrainConfig, active: bool, start_step: int):
        self.active = active
        self.path = out / "metrics.jsonl"
        if not active:
            return
        # a resumed run rewrites the steps after its checkpoint: keep only what came before
        rewrite_jsonl(self.path, [r for r in read_jsonl(self.path) if r["step"] <= start_step])
        self.journal = Journal(self.path, key=lambda r: str(r["step"]))
        self.start = time.time()
        self.tb = None
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                stderr.print(
                    f"TensorBoard not installed ({install_hint('train')}): logging to metrics.jsonl only", markup=False
                )
        self.bar = progress()
        self.bar.start()
        self.task = self.bar.add_task("training", total=config.max_steps, completed=start_step, status="")

    def log(self, step: int, loss: float, lr: float, samples_per_s: float) -> None:
        if not self.active:
            return
        record = {
            "step": step,
            "loss": loss,
            "lr": lr,
            "samples_per_s": samples_per_s,
            "time": round(time.time() - self.start, 3),
        }
        self.journal.append(record)
        if self.tb is not None:
            for name in ("loss", "lr", "samples_per_s"):
                self.tb.add_scalar(f"train/{name}", record[name], step)
        self.bar.update(
            self.task, completed=step, status=f"loss {loss:.4f}  lr {lr:.2e}  {samples_per_s:.1f} samples/s"
        )

    def close(self) -> None:
        if not self.active:
            return
        self.bar.stop()
        self.journal.close()
        if self.tb is not None:
            self.tb.close()

    def plot(self) -> Path | None:
        """loss.png from metrics.jsonl (matplotlib, no display needed); None, with one line saying
        so, when matplotlib is not installed (it comes with the `train` extra)."""
        records = read_jsonl(self.path)
        if not records:
            return None
        try:
            import matplotlib
        except ImportError:
            stderr.print(
                f"loss.png not drawn: matplotlib is not installed ({install_hint('train')}); the losses are in "
                f"{self.path}",
                markup=False,
            )
            return None

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([r["step"] for r in records], [r["loss"] for r in records], lw=1)
        ax.set(xlabel="optimizer step", ylabel="loss", title="musilingo train")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(self.path.with_name("loss.png")) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)
        return self.path.with_name("loss.png")
