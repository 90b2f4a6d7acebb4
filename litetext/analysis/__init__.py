"""Prompt anatomy (`litetext analyze`): token lengths, padding and truncation per context, vocabulary use and
coverage, and, with a model, the intrinsic dimension of its text embeddings.

    from litetext.analysis import analyze
    result = analyze(["prompts/calib"], holdout=["prompts/eval"], loaded=None)
"""

from litetext.analysis.core import analyze

__all__ = ["analyze"]
