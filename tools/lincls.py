#!/usr/bin/env python
"""Linear evaluation (frozen encoder, linear classifier) of a pretraining checkpoint; prints test top-1/top-5.

    python tools/lincls.py CHECKPOINT [--cfg moco_v2.yaml] [--resume] [--which online|target] [KEY VALUE ...]
    torchrun --nproc_per_node 8 tools/lincls.py CHECKPOINT ...      # several GPUs (global LINCLS.BATCH_SIZE)

--cfg takes a bare name from configs/lincls/ (moco_v2.yaml, rsa_official.yaml, mean_shift.yaml, digits.yaml,
fashion_mnist.yaml) or a path. Data set, image size and backbone come from the config saved in the checkpoint;
DATA.ROOT and DATA.NUM_WORKERS overrides change where and how the data is read. Results go to OUTPUT_DIR
(default <checkpoint dir>/lincls_<cfg name>_<step>). The printed top-1 / top-5 are those of the last epoch,
the result; the best epoch's top-1 is printed too, labelled as selected on the test set.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pretrain import add_common_arguments, parse_tool_args, run_main  # noqa: E402


def main(args: argparse.Namespace) -> int:
    from pretrain import distributed as comm
    from transfer.lincls import describe_best, run_linear_eval

    with (
        comm.process_group() as info
    ):  # torchrun / SLURM environment; nothing to join for a single process
        result = run_linear_eval(args.checkpoint, args.cfg, args.opts, args.which, args.resume)
    if (
        info.rank == 0
    ):  # the last epoch's accuracy is the result; the best epoch is chosen on the test set
        print(
            f"linear evaluation top-1: {result['top1']:.2f}  top-5: {result['top5']:.2f}  (last of "
            f"{result['epochs']} epochs)  |  {describe_best(result['best_top1'], result['best_epoch'])}  "
            f"results in {result['output_dir']}"
        )
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Trailing KEY VALUE pairs override the protocol; every key is "
        "defined, with a comment, in transfer/lincls_config.py.",
    )
    parser.add_argument("checkpoint", help="a checkpoint_*.pth written by tools/pretrain.py")
    parser.add_argument(
        "--cfg",
        default="moco_v2.yaml",
        help="protocol name in configs/lincls/ or a path (default: moco_v2.yaml)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the evaluation saved in OUTPUT_DIR"
    )
    parser.add_argument(
        "--which", choices=("online", "target"), default="online", help="encoder to evaluate"
    )
    add_common_arguments(parser)
    return parse_tool_args(parser, argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(run_main(main, args))
