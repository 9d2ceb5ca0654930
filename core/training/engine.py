"""Every training stage runs on Hugging Face accelerate: this is the one place that talks to it.

``accelerate launch --multi_gpu -m medm2g.core.apps.cli train GRAPH --out RUN`` starts the processes
(data parallel: NCCL over GPUs, gloo over CPUs); a plain ``medm2g train`` is the one-process
case of the same code. Sharded training (FSDP, DeepSpeed) is refused with an explanation: the
resumable state would need its sharded optimizer state gathered, which is not written yet. The
engine

- wraps a stage's trained modules and its loss into one module that accelerate prepares
  (DDP), so gradients are reduced by the engine that launched the processes;
- shares each step's batch out over processes and micro-batches (:mod:`shards`), runs the
  micro-batches under autocast, accumulates without gradient sync until the last one, clips
  and steps the optimizer once;
- keeps frozen models in the mixed precision (they are the bulk of a round's memory) and the
  trained ones in float32, and turns on gradient checkpointing where the models support it;
- says which process is the main one: only it writes files and shows progress.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from medm2g.core.config.run_config import AccelerationConfig
from medm2g.core.errors import ConfigError
from medm2g.core.training.shards import Batching, Shard, shards, step_batch_size

logger = logging.getLogger("medm2g.train")

PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class StageStep(nn.Module):
    """A stage's trained modules and its loss as one module: what accelerate wraps, so that DDP
    sees every forward and reduces exactly the trained parameters' gradients."""

    def __init__(self, trained: Mapping[str, nn.Module], loss: Callable[[Shard], tuple[torch.Tensor, dict]]):
        super().__init__()
        self.trained = nn.ModuleDict(dict(trained))
        self._loss = loss

    def forward(self, shard: Shard) -> tuple[torch.Tensor, dict]:
        return self._loss(shard)


def _gather_with_gradients(tensor: torch.Tensor) -> torch.Tensor:
    """All processes' rows of ``tensor``, concatenated in process order; gradients flow back to
    each process's own rows (summed over the processes that used them)."""
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()))


class Engine:
    """One process's view of a training run: its device, its place among the processes, and
    the step (micro-batches, backward, clip, optimizer) every stage shares."""

    def __init__(self, settings: AccelerationConfig, device: torch.device):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

        if settings.mixed_precision == "fp16" and device.type != "cuda":
            raise ConfigError(f"acceleration.mixed_precision: fp16 needs CUDA (the device is {device}); "
                              f"use bf16 on the CPU")
        state = AcceleratorState._shared_state
        if state and state.get("_mixed_precision") != settings.mixed_precision:
            # accelerate keeps one state per process; a second run in the same process (tests, a
            # notebook) with another precision starts it again, keeping the process group.
            AcceleratorState._reset_state()
        from medm2g.core.training.experiment_log import check_trackers

        check_trackers(settings.log_with)  # before any training, not at the first checkpoint
        self.settings = settings
        self.accelerator = Accelerator(
            cpu=device.type == "cpu", mixed_precision=settings.mixed_precision, step_scheduler_with_optimizer=False,
            kwargs_handlers=[
                # the others wait while the main process warms a latent cache or trains a SynDiff stage
                InitProcessGroupKwargs(timeout=datetime.timedelta(hours=12)),
                # trained modules may hold parameters a loss never reaches (BERT's pooler beside the
                # token states a prompt encoder pools itself): DDP must not wait for their gradients
                DistributedDataParallelKwargs(find_unused_parameters=True),
            ])
        sharded = str(self.accelerator.distributed_type).rsplit(".", 1)[-1]
        if sharded in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
            raise ConfigError(
                f"accelerate config: distributed_type {sharded} shards parameters and optimizer state, which "
                f"medm2g's checkpoints do not gather yet; launch data-parallel (`accelerate launch --multi_gpu`). "
                f"The paper-size UNet (860M parameters, about 14 GB with AdamW) fits one GPU per process")
        self.device = self.accelerator.device if self.processes > 1 else device
        if not self.is_main:  # one log, one progress bar: the main process's
            logging.getLogger("medm2g").setLevel(logging.WARNING)

    @property
    def processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def process(self) -> int:
        return self.accelerator.process_index

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def precision(self) -> torch.dtype | None:
        """The dtype frozen models are kept in; None without mixed precision."""
        return PRECISION_DTYPES.get(self.settings.mixed_precision)

    def wait(self) -> None:
        """Barrier: what the main process wrote is there for all after this."""
        self.accelerator.wait_for_everyone()

    def main_first(self):
        """A block the main process runs first (writing what the others then read)."""
        return self.accelerator.main_process_first()

    def autocast(self):
        return self.accelerator.autocast()

    def batching(self, records: int, requested: int, seed: int, setting: str) -> Batching:
        """A stage's batches: ``requested`` records a step (fewer for a small dataset), a multiple of
        processes x micro-batches."""
        parts = self.processes * self.settings.gradient_accumulation_steps
        batch = step_batch_size(requested, records, parts, setting)
        if batch != min(requested, records):
            logger.info("%s: a step's batch is %d, a multiple of %d processes x micro-batches", setting, batch, parts)
        return Batching(records, batch, seed)

    def shards(self, batching: Batching, step: int, step_seed: int) -> list[Shard]:
        gather = _gather_with_gradients if self.processes > 1 else (lambda tensor: tensor)
        return shards(batching, step, step_seed, self.process, self.processes,
                      self.settings.gradient_accumulation_steps, gather)

    def cast_frozen(self, *modules: nn.Module) -> None:
        """Store the layers that do not train in the mixed precision: a frozen UNet in bf16 takes half
        the memory, and autocast computes in that precision anyway. A layer is cast whole, with its
        floating-point buffers (BatchNorm's running statistics must match its weights); a layer with
        a trained parameter stays float32."""
        if self.precision is None:
            return
        for module in modules:
            for layer in module.modules():
                own = list(layer.parameters(recurse=False))
                if not own or any(p.requires_grad for p in own):
                    continue
                for parameter in own:
                    parameter.data = parameter.data.to(self.precision)
                for name, buffer in layer.named_buffers(recurse=False):
                    if buffer is not None and buffer.is_floating_point():
                        setattr(layer, name, buffer.to(self.precision))

    def checkpoint_gradients(self, *modules: nn.Module) -> list[str]:
        """Turn on gradient checkpointing where ``acceleration.gradient_checkpointing`` asks and the
        model supports it (diffusers, transformers, timm); returns the classes it was turned on in."""
        if not self.settings.gradient_checkpointing:
            return []
        enabled = []
        for module in modules:
            for part in module.modules():
                if callable(getattr(part, "enable_gradient_checkpointing", None)) and getattr(
                        part, "_supports_gradient_checkpointing", True):
                    part.enable_gradient_checkpointing()
                elif callable(getattr(part, "gradient_checkpointing_enable", None)) and getattr(
                        part, "supports_gradient_checkpointing", False):
                    part.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                elif callable(getattr(part, "set_grad_checkpointing", None)) and hasattr(part, "default_cfg"):
                    part.set_grad_checkpointing(True)
                else:
                    continue
                enabled.append(type(part).__name__)
        if not enabled:
            logger.warning("gradient checkpointing: none of %s supports it; training without",
                           ", ".join(type(m).__name__ for m in modules))
        return enabled

    def prepare(self, trained: Mapping[str, nn.Module], loss: Callable[[Shard], tuple[torch.Tensor, dict]],
                optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The stage's step module and optimizer, wrapped by accelerate for its processes and precision."""
        model, prepared = self.accelerator.prepare(StageStep(trained, loss), optimizer,
                                                   device_placement=[False, False])
        return model, prepared

    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer, parameters: Sequence[nn.Parameter],
             parts: Sequence[Shard], max_grad_norm: float | None) -> tuple[float, dict[str, float]]:
        """One optimizer step over this process's micro-batches; returns the step's loss and logs,
        averaged over micro-batches and processes."""
        optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for index, shard in enumerate(parts):
            last = index == len(parts) - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(model):
                loss, logs = model(shard)
                self.accelerator.backward(loss / len(parts))
            for key, value in {"loss": float(loss.detach()), **logs}.items():
                totals[key] = totals.get(key, 0.0) + float(value) / len(parts)
        if max_grad_norm is not None:
            self.accelerator.clip_grad_norm_(parameters, max_grad_norm)
        optimizer.step()
        if self.processes > 1:
            values = self.accelerator.reduce(torch.tensor(list(totals.values()), device=self.device), "mean")
            totals = dict(zip(totals, values.tolist()))
        loss = totals.pop("loss")
        return loss, totals

    def share_buffers(self, modules) -> None:
        """Give every process the main process's buffers (BatchNorm's running statistics): each process
        updates them from its own part of the batch, and DDP copies them only before a forward, so after
        a stage's last step the processes would disagree about the model the main process saves."""
        if self.processes < 2:
            return
        for module in modules:
            for buffer in module.buffers():
                torch.distributed.broadcast(buffer.data, src=0)

    def release(self) -> None:
        """Forget a finished stage's prepared modules and optimizer, so their memory can go."""
        self.accelerator.free_memory()
