"""Analysis of session history: statistics, personalisation and recommendations.

- `analyze_history` / `analyze_session` / `analyze_user` / `analyze_store` → `HistoryStats`
  (entries by type, tool usage and durations, activity by hour, session length, error rate), with
  `Table` views that print in a terminal and render in notebooks;
- `suggest_preferences` / `Personalizer` — preferences inferred from behaviour, with evidence,
  applied only when asked;
- `RecommendationService` — collaborative, content-based and popularity recommendations over the
  ``interaction`` entries recorded in session history (`record_interaction`);
- `hit_rate_at_k` / `ndcg_at_k` / `evaluate_rankings` — offline evaluation.
"""

from __future__ import annotations

from .history import (
    ERROR_TYPE,
    TOOL_ENTRY_TYPE,
    HistoryStats,
    ToolStats,
    analyze_history,
    analyze_session,
    analyze_store,
    analyze_user,
    is_error_entry,
    iter_full_history,
)
from .interactions import (
    ACTION_WEIGHTS,
    INTERACTION_TYPE,
    Interaction,
    InteractionIndex,
    interaction_weight,
    interactions_from_history,
    record_interaction,
    user_key,
)
from .language import SUPPORTED_LANGUAGES, detect_language
from .metrics import (
    EvaluationResult,
    evaluate_rankings,
    hit_rate_at_k,
    ndcg_at_k,
    recall_at_k,
    reciprocal_rank,
    results_table,
)
from .personalization import Personalizer, PreferenceSuggestion, suggest_preferences, suggestions_table, time_of_day
from .recommendations import ALGORITHMS, Catalogue, Recommendation, RecommendationService, item_vector
from .table import Table

__all__ = [
    "ACTION_WEIGHTS",
    "ALGORITHMS",
    "ERROR_TYPE",
    "INTERACTION_TYPE",
    "SUPPORTED_LANGUAGES",
    "TOOL_ENTRY_TYPE",
    "Catalogue",
    "EvaluationResult",
    "HistoryStats",
    "Interaction",
    "InteractionIndex",
    "Personalizer",
    "PreferenceSuggestion",
    "Recommendation",
    "RecommendationService",
    "Table",
    "ToolStats",
    "analyze_history",
    "analyze_session",
    "analyze_store",
    "analyze_user",
    "detect_language",
    "evaluate_rankings",
    "hit_rate_at_k",
    "interaction_weight",
    "interactions_from_history",
    "is_error_entry",
    "item_vector",
    "iter_full_history",
    "ndcg_at_k",
    "recall_at_k",
    "reciprocal_rank",
    "record_interaction",
    "results_table",
    "suggest_preferences",
    "suggestions_table",
    "time_of_day",
    "user_key",
]
