"""What the full-size benchmark scripts share: the model options and how they load it."""

from __future__ import annotations

import argparse


def model_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--model PRESET (random weights, seed 0) or --checkpoint PATH (the preset's trained weights)."""
    parser.add_argument("--model", default="litetext-s0")
    parser.add_argument("--checkpoint", help="a checkpoint of --model (default: random weights, seed 0)")
    parser.add_argument("--init", default="stress", choices=["stress", "transformers"],
                        help="random weights: stress (every layer matters) or transformers' own initialisation")
    return parser


def prompt_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--calib (to calibrate on) and --eval (held out, to measure on) prompt files or folders."""
    parser.add_argument("--calib", nargs="+", required=True, help="prompt files or folders to calibrate on")
    parser.add_argument("--eval", nargs="+", required=True, help="held-out prompt files or folders to measure on")
    parser.add_argument("--eval-count", type=int, default=1000, help="held-out prompts to draw (seeded)")
    return model_arguments(parser)


def load_benchmark_model(args: argparse.Namespace):
    from litetext.models.loading import load_model

    if args.checkpoint:
        return load_model(args.model, checkpoint=args.checkpoint)
    return load_model(args.model, random_init=True, seed=0, init=args.init)
