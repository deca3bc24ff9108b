"""Function-calling evals on public data: BFCL v4 and When2Call.

    from threadline.evals import load_bfcl, resolve_data_dir, run_eval

Run them from the command line with `threadline eval` (see docs/evals.md).
"""

from .bfcl import check_call, score_case, standardize
from .data import (
    BFCL_CATEGORIES,
    DEFAULT_DATA_DIR,
    WHEN2CALL_CATEGORIES,
    BfclCase,
    EvalDataMissing,
    When2CallCase,
    load_bfcl,
    load_when2call,
    resolve_data_dir,
)
from .runner import (
    EVAL_SYSTEM_PROMPT,
    CaseResult,
    CategorySummary,
    EvalReport,
    Move,
    build_context,
    gold_rejections,
    parse_move,
    run_eval,
)
from .schema import eval_output_schema, eval_tools, to_json_schema, validate

__all__ = [
    "BFCL_CATEGORIES",
    "DEFAULT_DATA_DIR",
    "EVAL_SYSTEM_PROMPT",
    "WHEN2CALL_CATEGORIES",
    "BfclCase",
    "CaseResult",
    "CategorySummary",
    "EvalDataMissing",
    "EvalReport",
    "Move",
    "When2CallCase",
    "build_context",
    "check_call",
    "eval_output_schema",
    "eval_tools",
    "gold_rejections",
    "load_bfcl",
    "load_when2call",
    "parse_move",
    "resolve_data_dir",
    "run_eval",
    "score_case",
    "standardize",
    "to_json_schema",
    "validate",
]
