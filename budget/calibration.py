"""Measured memory from a real GPU run: a record the supervisor writes, the planner reads to replace its guesses."""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from budget.estimate import Estimate, PlanInputError
from budget.units import human

# The parts a measurement may correct; weights are facts read from the checkpoint and are never replaced.
CORRECTABLE = ("activation_bytes", "context_bytes", "graph_bytes")


class Measurement(BaseModel):
    """What one model really held after warm-up, split as the plan splits it."""

    model_config = ConfigDict(extra="forbid")
    model: str
    kind: str
    parameters: int | None = Field(None, description="guards against applying a record to another checkpoint")
    activation_bytes: int | None = Field(None, ge=0)
    context_bytes: int | None = Field(None, ge=0)
    graph_bytes: int | None = Field(None, ge=0)


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = 1
    device: str
    measurements: list[Measurement]


def load_calibration(path: Path) -> Calibration:
    try:
        return Calibration.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise PlanInputError(f"calibration file {path} does not exist") from None
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if isinstance(exc, json.JSONDecodeError) else exc.errors()[0]["msg"]
        raise PlanInputError(f"calibration file {path} is not a calibration record ({first}); "
                             "it is JSON with device and measurements, as `orchestrator run` writes it") from None


def save_calibration(calibration: Calibration, path: Path) -> None:
    path.write_text(calibration.model_dump_json(indent=2) + "\n")


def apply_calibration(est: Estimate, calibration: Calibration) -> bool:
    """Replace the estimate's guessed parts with what was measured for the same model; True if any applied."""
    match = next((m for m in calibration.measurements if m.model == est.name and m.kind == est.kind), None)
    if match is None:
        return False
    if match.parameters is not None and match.parameters != est.parameters:
        est.notes.append(f"calibration for {est.name} was measured on a checkpoint with {match.parameters:,} "
                         f"parameters, not {est.parameters:,}; not applied")
        return False
    applied = False
    for part in CORRECTABLE:
        value = getattr(match, part)
        if value is not None:
            setattr(est, part, value)
            label = {"activation_bytes": "activations", "context_bytes": "context", "graph_bytes": "cuda graphs"}[part]
            est.formulas[label] = f"measured on {calibration.device}: {human(value)} (calibration record)"
            applied = True
    return applied
