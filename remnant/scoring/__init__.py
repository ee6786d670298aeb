"""Behavioural scoring: prompts in each style, batched model calls, answer matching (alias match,
ROUGE-L recall), statistics (bootstrap CIs), QA and multiple-choice scores, answer contexts, and
whole-target evaluation."""

from remnant.scoring.batching import generate, next_token_logits, pad, sequence_logprobs
from remnant.scoring.contexts import AnswerContext, answer_contexts
from remnant.scoring.evaluate import EvalResult, evaluate
from remnant.scoring.matching import alias_match, normalize, rouge_l_recall
from remnant.scoring.mcq import score_mcq
from remnant.scoring.prompts import (
    MCQ_INSTRUCTION,
    PLAIN_TEMPLATE,
    answer_prefix,
    encode_answers,
    encode_prompts,
    format_prompt,
    mcq_prompt,
    resolve_style,
)
from remnant.scoring.qa import known_forget_generations, known_forget_items, score_qa, split_scores
from remnant.scoring.statistics import bootstrap_ci, mean, mean_ci, rounded
from remnant.settings import PromptStyle, ScoringSettings

__all__ = [
    "MCQ_INSTRUCTION",
    "PLAIN_TEMPLATE",
    "AnswerContext",
    "EvalResult",
    "PromptStyle",
    "ScoringSettings",
    "alias_match",
    "answer_contexts",
    "answer_prefix",
    "bootstrap_ci",
    "encode_answers",
    "encode_prompts",
    "evaluate",
    "format_prompt",
    "generate",
    "known_forget_generations",
    "known_forget_items",
    "mcq_prompt",
    "mean",
    "mean_ci",
    "next_token_logits",
    "normalize",
    "pad",
    "resolve_style",
    "rouge_l_recall",
    "rounded",
    "score_mcq",
    "score_qa",
    "sequence_logprobs",
    "split_scores",
]
