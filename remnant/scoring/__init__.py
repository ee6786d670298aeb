"""Behavioural scoring: prompts in each style (prompts), batched model calls (batching), greedy
generation kept per model and prompt (generation), answer matching by alias or ROUGE-L recall
(matching), statistics with bootstrap CIs (statistics), QA scores and reference answers (qa),
multiple-choice scores (mcq), answer contexts (contexts), and whole-target evaluation
(evaluate)."""

from remnant.scoring.batching import next_token_logits, pad, sequence_logprobs
from remnant.scoring.contexts import AnswerContext, answer_contexts
from remnant.scoring.evaluate import EvalResult, evaluate
from remnant.scoring.generation import EmbeddingEdit, generate, generation_file
from remnant.scoring.matching import (
    ROUGE_L_THRESHOLD,
    alias_match,
    is_correct,
    match_label,
    normalize,
    rouge_l_recall,
)
from remnant.scoring.mcq import score_mcq
from remnant.scoring.prompts import (
    MCQ_INSTRUCTION,
    PLAIN_TEMPLATE,
    STYLES,
    Style,
    adds_special_tokens,
    answer_prefix,
    encode_answers,
    encode_prompts,
    format_dialogue,
    format_prompt,
    mcq_prompt,
    resolve_style,
)
from remnant.scoring.qa import (
    accuracy_change,
    accuracy_summary,
    known_forget_generations,
    known_forget_items,
    reference_answers,
    score_qa,
    split_scores,
)
from remnant.scoring.statistics import bootstrap_ci, mean, mean_ci, rounded
from remnant.settings import PromptStyle, ScoringSettings

__all__ = [
    "EmbeddingEdit",
    "accuracy_change",
    "accuracy_summary",
    "MCQ_INSTRUCTION",
    "PLAIN_TEMPLATE",
    "AnswerContext",
    "EvalResult",
    "PromptStyle",
    "ROUGE_L_THRESHOLD",
    "STYLES",
    "ScoringSettings",
    "Style",
    "adds_special_tokens",
    "alias_match",
    "answer_contexts",
    "answer_prefix",
    "bootstrap_ci",
    "encode_answers",
    "encode_prompts",
    "evaluate",
    "format_dialogue",
    "format_prompt",
    "generate",
    "generation_file",
    "is_correct",
    "known_forget_generations",
    "known_forget_items",
    "match_label",
    "mcq_prompt",
    "mean",
    "mean_ci",
    "next_token_logits",
    "normalize",
    "pad",
    "reference_answers",
    "resolve_style",
    "rouge_l_recall",
    "rounded",
    "score_mcq",
    "score_qa",
    "sequence_logprobs",
    "split_scores",
]
