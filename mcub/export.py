"""`mcub export` (`python -m mcub.export`): a finished run in the formats other tools keep results in.

mcub export eee RUN_DIR OUT           Every Eval Ever aggregate + instance-level files under OUT/data/...
mcub export hub-results RUN_DIR       the model-index YAML of a Hugging Face model card (stdout, or --out FILE)"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mcub.cli import DONE, add_data_arguments, data_paths, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcub export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    eee = formats.add_parser("eee", help="Every Eval Ever files, validated against the pinned schema")
    eee.add_argument("run", type=Path, metavar="RUN_DIR")
    eee.add_argument("out", type=Path, metavar="OUT", help="the folder that holds (or will hold) data/")
    eee.add_argument("--model-id", help="DEVELOPER/MODEL, Hugging Face style (default: mcub/<the run's model>)")
    eee.add_argument("--organization", default="", help="the organization that ran the evaluation")
    eee.add_argument("--relationship", default="third_party", help="the evaluator's relationship to the model",
                     choices=["first_party", "third_party", "collaborative", "other"])  # fmt: skip
    add_data_arguments(eee)
    hub = formats.add_parser("hub-results", help="the model-index YAML of a model card")
    hub.add_argument("run", type=Path, metavar="RUN_DIR")
    hub.add_argument("--out", type=Path, help="write the YAML to FILE (default: stdout)")
    hub.add_argument(
        "--format",
        dest="layout",
        choices=["model-index", "eval-results"],
        default="model-index",
        help="the model card's model-index (default), or a file of the .eval_results/ folder",
    )
    hub.add_argument("--model-name", help="the model-index name (default: the run's model)")
    hub.add_argument("--dataset-id", action="append", default=[], metavar="TASK=ID",
                     help="the Hub dataset of a task whose definition names none")  # fmt: skip
    hub.add_argument("--source-url", help="a link to where the run's files are kept (the results' source)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _export_eee(args) if args.format == "eee" else _export_hub_results(args))


def _export_eee(args: argparse.Namespace) -> int:
    from mcub.exports.eee import EeeIdentity, export_eee

    identity = EeeIdentity(model_id=args.model_id, organization=args.organization, relationship=args.relationship)
    written = export_eee(args.run, args.out, data_paths(args), identity)
    print(f"wrote {written.aggregate}\nwrote {written.samples} ({written.rows} rows)")
    return DONE


def _export_hub_results(args: argparse.Namespace) -> int:
    from mcub.errors import McubError
    from mcub.exports.hub_results import hub_results_yaml
    from mcub.results import write_atomically

    dataset_ids = {}
    for pair in args.dataset_id:
        task, _, dataset = pair.partition("=")
        if not task.strip() or not dataset.strip():
            raise McubError(f"--dataset-id {pair!r} is not TASK=ID")
        dataset_ids[task.strip()] = dataset.strip()
    text = hub_results_yaml(args.run, args.layout, args.model_name, dataset_ids, args.source_url)
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_atomically(args.out, text)
        print(f"wrote {args.out}")
    return DONE


if __name__ == "__main__":
    from mcub.cli import exit_now

    exit_now(main())
