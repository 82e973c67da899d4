"""Masked-diffusion objective and noise schedules."""

from diffusionlm.diffusion.mdlm import MDLMObjective, forward_mask, sample_times
from diffusionlm.diffusion.schedules import SCHEDULES, NoiseSchedule, get_schedule

__all__ = ["SCHEDULES", "MDLMObjective", "NoiseSchedule", "forward_mask", "get_schedule", "sample_times"]
