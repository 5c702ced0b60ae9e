"""Progress and TensorBoard logging (process 0 only)."""

import json
import os
import time

import jax
import numpy as np
import tensorboardX
import tqdm

from hair_jax.evaluation import evaluators
from hair_jax.train.config import CONFIG_FILE

EVALS_FILE = "evals.jsonl"  # one JSON line per evaluation during training


class Logger:
    """tqdm bar + TensorBoard scalars/images; silent on processes other than 0."""

    def __init__(self, workdir, config, start_step, num_steps):
        self.active = jax.process_index() == 0
        self.writer = self.bar = None
        self.num_steps, self.workdir = num_steps, workdir
        self._last = (start_step, time.perf_counter())
        if not self.active:
            return
        os.makedirs(workdir, exist_ok=True)
        # Written whole or not at all: the next run compares itself with it.
        path = os.path.join(workdir, CONFIG_FILE)
        with open(path + ".tmp", "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
        os.replace(path + ".tmp", path)
        self.writer = tensorboardX.SummaryWriter(os.path.join(workdir, "tb"))

    def compiling(self):
        """Says that the first step compiles; the bar starts after it (its rate and ETA exclude it)."""
        self._last = (self._last[0], time.perf_counter())
        if self.active:
            print(
                "Compiling the train step (the first step waits for it; a minute or two on a CPU)...",
                flush=True,
            )

    def step(self, step, metrics, log):
        """Advances the bar; on `log` steps writes scalars and steps/s."""
        if not self.active:
            return
        if self.bar is None:  # the first step of this run: it compiled
            seconds = time.perf_counter() - self._last[1]
            print(f"Compiled in {seconds:.0f} s; training.", flush=True)
            self.bar = tqdm.tqdm(
                total=self.num_steps, initial=step, unit="step", dynamic_ncols=True, smoothing=0.1
            )
            self._last = (step, time.perf_counter())
        else:
            self.bar.update(1)
        if not log:
            return
        now = time.perf_counter()
        last_step, last_time = self._last
        self._last = (step, now)
        scalars = dict(metrics)
        if step > last_step:  # not on the step that compiled
            scalars["steps_per_sec"] = (step - last_step) / max(now - last_time, 1e-9)
        for k, v in scalars.items():
            self.writer.add_scalar(f"train/{k}", float(v), step)
        self.bar.set_postfix(
            loss=f"{scalars['loss']:.4f}",
            psnr=f"{scalars['psnr']:.2f}",
            lr=f"{scalars['lr']:.2e}",
        )

    def images(self, step, degraded, restored, clean):
        """One grid image: a row per example, degraded | restored | clean."""
        if not self.active:
            return
        grid = np.concatenate([degraded, np.clip(restored, 0, 1), clean], axis=2)
        grid = np.concatenate(list(grid), axis=0)  # [n*H, 3*W, 3]
        self.writer.add_image("train/degraded_restored_clean", grid, step, dataformats="HWC")

    def evaluation(self, step, name, values):
        """An evaluator's result: TensorBoard `eval/<name>/...`, a line, `evals.jsonl`."""
        if not self.active or not values:  # e.g. a GIV evaluator on a model without one
            return
        numbers = evaluators.flat(values)
        for key, value in numbers.items():
            self.writer.add_scalar(f"eval/{name}/{key}", value, step)
        shown = ", ".join(f"{k} {v:.3f}" for k, v in numbers.items())
        tqdm.tqdm.write(f"Step {step}, {name}: {shown}")
        line = json.dumps({"step": step, "evaluator": name, **values}) + "\n"
        with open(os.path.join(self.workdir, EVALS_FILE), "a") as f:
            f.write(line)

    def write_text(self, tag, text, step):
        if self.active:
            self.writer.add_text(tag, f"<pre>{text}</pre>", step)

    def close_bar(self):
        if self.bar is not None:
            self.bar.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
