"""Default sizes of a prompt's parts, in tokens (and items), shared by the
library and the command line without importing either's machinery."""

MEMORY_TOKENS = 4000  # the recent turns of the session
RECALL_TOKENS = 1000  # facts and older turns found for the question
RECALL_LIMIT = 8  # at most this many of those
ANSWER_TOKENS = 2048  # kept free for the answer
WINDOW_TURNS = 10  # the "window" strategy: this many recent turns
SUMMARY_TOKENS = 400  # the "summary" strategy: the rolling summary's size
