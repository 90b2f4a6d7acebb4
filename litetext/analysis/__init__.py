"""Prompt anatomy (`litetext analyze`): token lengths, padding and truncation per context, vocabulary use and
coverage, and, with a model, the intrinsic dimension of its text embeddings.

    from litetext.analysis import analyze
    result = analyze(["prompts/calib"], holdout=["prompts/eval"], loaded=None)
"""

__all__ = ["analyze"]


def __getattr__(name: str):
    # Loaded on first use, so that the CLI's start (which imports litetext.analysis.cli) stays light.
    if name == "analyze":
        from litetext.analysis.core import analyze

        return analyze
    raise AttributeError(f"module 'litetext.analysis' has no attribute {name!r}")
