"""Noise schedules, samplers and (later) cross-guidance: the diffusion machinery shared by every modality."""
