"""Engines: the narrow seam (base), the llama.cpp/mtmd engine (llama) and a scripted fake (fake)."""

from __future__ import annotations

from .base import Engine, Generation, GenerationParams, PromptParts, StageTimings, TokenCallback

__all__ = ["Engine", "Generation", "GenerationParams", "PromptParts", "StageTimings", "TokenCallback"]
