"""Where a run keeps its files: one place, so trainer, resume, sampler and eval agree.

::

    RUN/config.yaml                   the run config used (rewritten only if absent)
    RUN/plan.json, RUN/plan.png       the training plan
    RUN/encoders/<modality>.safetensors          aligned prompt encoders C_M
    RUN/models/<modality>/vae.safetensors         the trained VAE (latent scale included)
    RUN/models/<modality>/denoiser.safetensors    the single-modality LDM's denoiser
    RUN/models/<modality>/cross_guided.safetensors   V_M, f_M, theta_c from its multi-flow round
    RUN/models/<modality>/vae/, unet/             the same as plain diffusers folders, where the model can export one
    RUN/models/<a>-<b>/syndiff.safetensors        a translation edge's SynDiff (both directions, EMA included)
    RUN/models/<a>-<b>/spatial_guidance.safetensors   an imaging round's spatial guidance (both directions)
    RUN/stages/<NN>-<kind>-<modalities>/record.json   what the stage did (written when it completes)
    RUN/stages/<NN>-.../state.safetensors        resumable state while the stage runs
    RUN/stages/<NN>-.../history.jsonl            one line of losses per step
    RUN/stages/<NN>-.../curves.png               those losses, drawn
    RUN/logs/<NN>-.../                           the same steps through accelerate's trackers (TensorBoard)
    RUN/eval/retrieval.json, retrieval.md, retrieval.png    cross-modal retrieval
    RUN/cache/latents/<modality>-<hash>.safetensors  frozen VAE posteriors and C_M embeddings per sample
"""

from __future__ import annotations

from pathlib import Path

import attrs

from medm2g.core.graph.engine import Stage


@attrs.frozen
class RunLayout:
    root: Path = attrs.field(converter=Path)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def plan_json(self) -> Path:
        return self.root / "plan.json"

    @property
    def plan_picture(self) -> Path:
        return self.root / "plan.png"

    def encoder(self, modality: str) -> Path:
        return self.root / "encoders" / f"{modality}.safetensors"

    def vae(self, modality: str) -> Path:
        return self.root / "models" / modality / "vae.safetensors"

    def denoiser(self, modality: str) -> Path:
        return self.root / "models" / modality / "denoiser.safetensors"

    def cross_guided(self, modality: str) -> Path:
        """V_M, f_M and the theta_c sub-layers of M's denoiser, from the round that trained them."""
        return self.root / "models" / modality / "cross_guided.safetensors"

    def spatial_guidance(self, owner: str) -> Path:
        """A round's spatial guidance, both directions of its pair (``owner``: the pair's label, ``ct-mri``)."""
        return self.root / "models" / owner / "spatial_guidance.safetensors"

    def translation(self, a: str, b: str, backend: str = "syndiff") -> Path:
        """The weights a translation edge a-b trained with ``backend`` (SynDiff: both directions)."""
        return self.root / "models" / f"{a}-{b}" / f"{backend}.safetensors"

    def translations(self, backend: str = "syndiff") -> list[tuple[str, str]]:
        """(a, b) of every translation edge whose ``backend`` weights this run holds."""
        found = (path.parent.name.partition("-") for path in (self.root / "models").glob(f"*-*/{backend}.safetensors"))
        return sorted((a, b) for a, _, b in found)

    def exported(self, modality: str, part: str) -> Path:
        """A plain diffusers/transformers folder of a model that can export one."""
        return self.root / "models" / modality / part

    def stage_dir(self, stage: Stage) -> Path:
        return self.root / "stages" / f"{stage.index:02d}-{stage.kind.value}-{'-'.join(stage.modalities)}"

    def stage_record(self, stage: Stage) -> Path:
        return self.stage_dir(stage) / "record.json"

    def stage_state(self, stage: Stage) -> Path:
        return self.stage_dir(stage) / "state.safetensors"

    def stage_history(self, stage: Stage) -> Path:
        return self.stage_dir(stage) / "history.jsonl"

    def stage_curves(self, stage: Stage) -> Path:
        return self.stage_dir(stage) / "curves.png"

    @property
    def logs(self) -> Path:
        """Experiment logs, one tracker run per stage (``tensorboard --logdir RUN/logs``)."""
        return self.root / "logs"

    @property
    def latent_cache(self) -> Path:
        """Encodings of frozen models (see :mod:`medm2g.core.training.latent_cache`); safe to delete."""
        return self.root / "cache" / "latents"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def tuned_guidance(self) -> Path:
        """Classifier-free guidance scale per task, chosen on validation subjects (``medm2g tune-guidance``)."""
        return self.root / "guidance.json"
