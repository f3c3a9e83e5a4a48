"""The JSON Schema of a `pulse bench --json` document, for anyone who reads it by machine."""

from __future__ import annotations

from typing import Any

SCHEMA = "pulse.bench/1"  # the id every bench document carries (bump it when the layout changes)

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_SPREAD = {
    "type": "object",
    "required": ["median", "min", "max"],
    "properties": {"median": {"type": "number"}, "min": {"type": "number"}, "max": {"type": "number"}},
}
_FIT = {
    "type": ["object", "null"],
    "required": ["exponent", "log_coefficient", "r2", "points", "seq_lens"],
    "properties": {
        "exponent": {"type": "number"},
        "log_coefficient": {"type": "number"},
        "r2": {"type": "number"},
        "points": {"type": "integer", "minimum": 2},
        "seq_lens": {"type": "array", "items": {"type": "integer"}},
    },
}
_STATUS = {"enum": ["ok", "skipped", "failed"]}

_RESULT = {
    "type": "object",
    "required": ["seq_len", "status", "pids"],
    "properties": {
        "seq_len": {"type": "integer", "minimum": 1},
        "status": _STATUS,
        "reason": {"type": "string"},
        "pids": {"type": "array", "items": {"type": "integer"}},
    },
    "if": {"properties": {"status": {"const": "ok"}}},
    "then": {
        "required": ["unit", "time_s", "times_s", "tokens_per_s", "memory_bytes", "memory_kind", "flops",
                     "achieved_gflops", "matmul_fraction", "rounds_ok", "ratio"],
        "properties": {
            "unit": {"enum": ["batch", "token"]},
            "time_s": _SPREAD,
            "times_s": {"type": "array", "items": {"type": "number"}, "minItems": 1},
            "tokens_per_s": {"type": "number", "exclusiveMinimum": 0},
            "memory_bytes": {"type": "integer", "minimum": 0},
            "memory_kind": {"type": "string"},
            "flops": {"type": "number", "minimum": 0},
            "achieved_gflops": {"type": "number", "minimum": 0},
            "matmul_fraction": _NUMBER_OR_NULL,
            "rounds_ok": {"type": "integer", "minimum": 1},
            "prefill_s": {"type": "number"},
            "ratio": {
                "type": ["object", "null"],
                "required": ["speedup", "memory", "pairs"],
                "properties": {"speedup": _SPREAD, "memory": {"oneOf": [_SPREAD, {"type": "null"}]},
                               "pairs": {"type": "integer", "minimum": 1}},
            },
        },
    },
    "else": {"required": ["reason"]},
}

_RUN = {
    "type": "object",
    "required": ["system", "seq_len", "round", "status"],
    "properties": {
        "system": {"type": "string"},
        "seq_len": {"type": "integer"},
        "round": {"type": "integer", "minimum": 0},
        "status": _STATUS,
        "pid": {"type": "integer"},
        "reason": {"type": "string"},
        "times_s": {"type": "array", "items": {"type": "number"}},
        "wall_s": {"type": "number"},
        "scaling_s": {"type": "number", "minimum": 0},
        "memory_fixed_bytes": {"type": "integer", "minimum": 0},
    },
}

DOCUMENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "pulse bench result",
    "type": "object",
    "required": ["schema", "created", "command", "elapsed_s", "settings", "machine", "baseline", "systems", "runs"],
    "properties": {
        "schema": {"const": SCHEMA},
        "created": {"type": "string"},
        "command": {"type": ["string", "null"]},
        "elapsed_s": {"type": "number"},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "settings": {
            "type": "object",
            "required": ["seq_lens", "batch", "mode", "repeats", "warmup", "rounds", "dtype", "device", "threads"],
            "properties": {
                "seq_lens": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
                "mode": {"enum": ["forward", "train", "generate"]},
            },
        },
        "machine": {
            "type": "object",
            "required": ["status", "cpu", "logical_cpus", "threads", "torch", "device", "matmul"],
            "properties": {
                "status": _STATUS,
                "matmul": {
                    "type": ["object", "null"],
                    "required": ["size", "dtype", "gflops", "gflops_min", "gflops_max"],
                },
            },
        },
        "baseline": {"type": "string"},
        "systems": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "system", "params", "results", "scaling", "local_exponents", "memory_scaling"],
                "properties": {
                    "name": {"type": "string"},
                    "path": {
                        "type": "string",
                        "description": (
                            "how its ops ran: eager, compiled, fla, mamba-ssm, or a fallback with its reason"
                        ),
                    },
                    "system": {
                        "type": "object", "required": ["type"], "properties": {"type": {"enum": ["recipe", "mixer"]}}
                    },
                    "params": {"type": ["integer", "null"]},
                    "results": {"type": "array", "items": _RESULT},
                    "scaling": _FIT,
                    "local_exponents": {"type": "array", "items": {"type": "number"}},
                    "memory_scaling": _FIT,
                },
            },
        },
        "runs": {"type": "array", "items": _RUN},
    },
}
