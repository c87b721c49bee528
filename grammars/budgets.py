"""Token budgets and length limits: the one place the planner's numbers live.

Owns how many tokens each kind of hole may ask the model for and the rough
characters-per-token ratio used to turn those budgets into character limits.
Must not know tokenizers: the ratio is a planning estimate, not a measurement.
"""

# Rest of a line or statement: most single-line completions fit in ~20 tokens of code;
# 32 leaves room for a long call without letting a line fill run on.
LINE_BUDGET = 32
# A block after an opener or in an empty line of a body: a few statements.
BLOCK_BUDGET = 96
# An empty function body or a placeholder body (`pass`, `todo!()`): a whole body.
BODY_BUDGET = 128
# A selection the user asked to regenerate gets its own length in tokens (estimated)
# plus this slack, clamped to [LINE_BUDGET, MAX_PLAN_BUDGET].
REGENERATE_SLACK = 16
# The most a plan asks for (a regenerated selection); the wire's cap on a hole is
# protocol.MAX_HOLE_TOKENS, which this stays under.
MAX_PLAN_BUDGET = 256

# Average characters per token of source code for BPE tokenizers (roughly 3-4); used
# only to estimate a selection's budget and to cap training-span lengths.
CHARS_PER_TOKEN = 4
# Training spans longer than the largest budget can never be produced at inference.
MAX_SPAN_CHARS = MAX_PLAN_BUDGET * CHARS_PER_TOKEN

# Indentation unit guessed when a document gives no evidence.
DEFAULT_INDENT = "    "

# Characters of the cursor's line looked at on each side for lexical checks (bracket
# balance, overlap): enough for any real statement, and it keeps a 1 MB minified line
# from costing a full scan per keystroke.
LINE_CONTEXT_CHARS = 2000
