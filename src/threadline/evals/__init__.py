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
from .schema import MAX_CALLS, eval_output_schema, eval_tools, to_json_schema, validate
from .when2call import WHEN2CALL_CLASSES, classify, is_refusal, macro_f1, when2call_metrics

__all__ = [
    "BFCL_CATEGORIES",
    "DEFAULT_DATA_DIR",
    "EVAL_SYSTEM_PROMPT",
    "MAX_CALLS",
    "WHEN2CALL_CATEGORIES",
    "WHEN2CALL_CLASSES",
    "BfclCase",
    "CaseResult",
    "CategorySummary",
    "EvalDataMissing",
    "EvalReport",
    "Move",
    "When2CallCase",
    "build_context",
    "check_call",
    "classify",
    "eval_output_schema",
    "eval_tools",
    "gold_rejections",
    "is_refusal",
    "load_bfcl",
    "load_when2call",
    "macro_f1",
    "parse_move",
    "resolve_data_dir",
    "run_eval",
    "score_case",
    "standardize",
    "to_json_schema",
    "validate",
    "when2call_metrics",
]
