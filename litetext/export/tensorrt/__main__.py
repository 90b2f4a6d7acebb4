"""python -m litetext.export.tensorrt strip-qdq IN OUT: the Q/DQ-free graph a calibration cache applies to."""

from __future__ import annotations

from litetext.runtimes.tensorrt_engine import strip_qdq


def main(argv=None) -> int:
    import argparse

    import onnx

    parser = argparse.ArgumentParser(prog="python -m litetext.export.tensorrt")
    sub = parser.add_subparsers(dest="command", required=True)
    strip = sub.add_parser("strip-qdq", help="write the Q/DQ-free graph a calibration cache applies to")
    strip.add_argument("source")
    strip.add_argument("out")
    args = parser.parse_args(argv)
    model = strip_qdq(onnx.load(args.source))
    onnx.save(model, args.out)
    print(f"{args.out}: {len(model.graph.node)} nodes, no Q/DQ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
