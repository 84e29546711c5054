"""``poseanimate``: the command line (animate, batch, download, convert).

Nothing heavy is imported here so ``poseanimate --help`` answers at once; each subcommand imports
what it needs when it runs.
"""

import argparse
import logging
import signal
import sys
import threading

from .download import VARIANTS, DownloadError

PROG = "poseanimate"
# Listed here rather than imported so --help needs no torch; tests check them against the registries.
SAMPLERS = ("ddim", "euler", "euler_ancestral", "dpmpp_2m", "unipc", "lcm")
BETA_SCHEDULES = ("linear", "scaled_linear")
SCHEDULES = ("static", "uniform", "looped", "moore")
FUSES = ("flat", "pyramid", "overlap-linear")
SMOOTHERS = ("none", "one_euro", "savgol")
USER_ERRORS = (ValueError, OSError, DownloadError)  # the user's to fix: one line, no traceback
MODELS_HELP = ("models folder (default: $POSEANIMATE_MODELS, else ~/.cache/poseanimate/models; "
               "see the README for its layout)")


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _models_arguments(p):
    where = p.add_mutually_exclusive_group()
    where.add_argument("--models", metavar="DIR", help=MODELS_HELP)
    where.add_argument("--comfyui", metavar="PATH", help="use the models folder of this ComfyUI install (PATH/models)")


def _common():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars")
    return p


def _animate_parser(sub):
    p = sub.add_parser("animate", parents=[_common()], help="animate a character image with a driving video or poses",
                       description="Animate a character image with the motion of a driving video (or poses) "
                                   "and write an mp4 at the driving video's frame rate.")
    p.add_argument("--character", metavar="IMG", help="the character image (default: a figure drawn by the project)")
    p.add_argument("--driving", metavar="VIDEO",
                   help="a video, a POSE_KEYPOINT .json file, or a folder of pose images (used as they are); "
                        "default: a 2-second dance loop made by the project")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mp4", help="the video to write (.mp4, .mov or .mkv)")
    p.add_argument("-y", "--overwrite", action="store_true", help="replace OUT.mp4 if it exists (never an input)")
    _models_arguments(p)
    p.add_argument("--networks", metavar="DIR",
                   help="folder with the variant's network files (default: MODELS/animate_anyone/<variant>)")
    p.add_argument("--variant", choices=VARIANTS,
                   help="which networks: moore (Animate Anyone), musepose, magicanimate (driven by DensePose, "
                        "conditioned on SD1.5's empty-prompt text embedding) or unianimate (one video UNet, "
                        "OpenCLIP and SD2.1's VAE) (default: the first one present, moore first); the poses are "
                        "drawn in the style of the networks loaded")
    p.add_argument("--download", action="store_true", help="download missing model files first (network)")
    g = p.add_argument_group("video")
    g.add_argument("--width", type=int, help="video width, a multiple of 8 (default: from the character's "
                                             "aspect with a 512-pixel short side)")
    g.add_argument("--height", type=int, help="video height, a multiple of 8 (default: as --width)")
    g.add_argument("--frames", type=_positive_int, help="at most this many frames (default: all)")
    g.add_argument("--fps", type=float, help="frame rate (default: the driving video's; 24 for pose input)")
    g = p.add_argument_group("poses")
    g.add_argument("--retarget", choices=("neck", "driving", "unianimate", "off"), default="neck",
                   help="fit the driving skeleton to the character's proportions, anchored on the character's "
                        "neck (neck, default) or where the driving person stands (driving); unianimate: "
                        "UniAnimate's own alignment (scales measured on the first driving frame); off: poses as "
                        "they are")
    g.add_argument("--smooth", choices=SMOOTHERS, default="none", help="smooth keypoints over time (default: none)")
    g = p.add_argument_group("sampling")
    g.add_argument("--steps", type=_positive_int,
                   help="denoising steps (default: the family's: 20 for moore and musepose, 25 for magicanimate, "
                        "30 for unianimate, whose 30 runs 31 timesteps as its reference does)")
    g.add_argument("--cfg", type=float, help="guidance scale; 1 or less skips guidance (default: the family's: "
                                             "3.5 for moore and musepose, 7.5 for magicanimate, 2.5 for unianimate)")
    g.add_argument("--seed", type=int, default=42, help="noise seed (default: 42)")
    g.add_argument("--sampler", choices=SAMPLERS, help="sampler (default: ddim)")
    g.add_argument("--beta-schedule", choices=BETA_SCHEDULES, help="beta schedule (default: scaled_linear)")
    g.add_argument("--first-frame", action="store_true",
                   help="unianimate: the video starts from the character image (its local_image mode) instead "
                        "of taking the character as a separate reference frame")
    g.add_argument("--pose-temperature", type=float, default=0.0, metavar="S",
                   help="TCAN's pose temperature map: the background (far from the skeleton) averages over time "
                        "for a steadier video; 0 = off (default), 3 = TCAN's value")
    g = p.add_argument_group("context windows (videos longer than one window)")
    g.add_argument("--context-length", type=_positive_int, help="frames per window (default: 24)")
    g.add_argument("--context-overlap", type=int, help="frames shared by neighbouring windows (default: 4)")
    g.add_argument("--context-stride", type=_positive_int, help="dilated windows for uniform/looped (default: 1)")
    g.add_argument("--context-schedule", choices=SCHEDULES, help="window placement (default: static)")
    g.add_argument("--context-fuse", choices=FUSES, help="how overlapping windows are blended (default: pyramid)")
    g.add_argument("--window-batch", type=_positive_int, help="windows per UNet call (default: 1)")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default="auto", help="torch device: auto (CUDA when available), cpu, cuda, cuda:1, ...")
    g.add_argument("--dtype", choices=("auto", "fp16", "bf16", "fp32"), default="auto",
                   help="auto: fp16 on GPUs, fp32 on the CPU")
    g.add_argument("--decode-chunk", type=_positive_int, default=8, help="frames per VAE decode call (default: 8)")
    g = p.add_argument_group("window-parallel sampling (needs the ray extra)")
    g.add_argument("--workers", type=_positive_int,
                   help="spread each step's context windows over N Ray workers that each hold the networks")
    g.add_argument("--ray", metavar="ADDRESS", help="the Ray cluster for --workers (default: a local Ray)")
    p.set_defaults(run=_run_animate)


def _download_parser(sub):
    p = sub.add_parser("download", parents=[_common()], help="download the model files of a variant",
                       description="Download everything a variant needs (its networks, DWPose, the VAE and the "
                                   "CLIP image encoder; for magicanimate its networks with SD1.5's UNet, DensePose, "
                                   "the VAE and SD1.5's text encoder; for unianimate its UNet, the SD2.1 checkpoint "
                                   "(VAE, text encoder), OpenCLIP ViT-H-14 and DWPose) from the Hugging Face Hub; "
                                   "files already there are skipped.")
    p.add_argument("--variant", choices=VARIANTS, default="moore", help="default: moore")
    dest = p.add_mutually_exclusive_group()
    dest.add_argument("--dest", "--models", dest="models", metavar="DIR", help=MODELS_HELP)
    dest.add_argument("--comfyui", metavar="PATH", help="download into this ComfyUI install's models folder")
    p.set_defaults(run=_run_download)


def _convert_parser(sub):
    p = sub.add_parser("convert", parents=[_common()], help="convert released fp32 .pth files to fp16 safetensors",
                       description="Convert an Animate Anyone (or UniAnimate) model file, or every network file "
                                   "of a folder, "
                                   "to half-precision safetensors (half the size); every tensor is checked after "
                                   "writing. The loader reads the converted folder like the original.")
    p.add_argument("src", help="a model file or folder")
    p.add_argument("dst", nargs="?", help="output file or folder (default: SRC-fp16 for a folder; "
                                          "NAME.safetensors next to a file)")
    p.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16", help="default: fp16")
    p.add_argument("--replace", action="store_true",
                   help="write next to the sources and delete each source once its conversion is checked")
    p.set_defaults(run=_run_convert)


def _batch_parser(sub):
    from .batch import add_arguments

    p = sub.add_parser("batch", parents=[_common()], help="animate many clips from a jobs file (on Ray)",
                       description="Animate every row of a CSV or JSONL jobs file (character, driving, optional "
                                   "output and any animate option) on Ray workers that load the models once; "
                                   "resumable. Needs the ray extra: pip install 'poseanimate[ray]'.")
    add_arguments(p)
    p.set_defaults(run=_run_batch)


def parser():
    p = argparse.ArgumentParser(prog=PROG, description="Animate a character image with a pose sequence "
                                                       "(Animate Anyone, MusePose, MagicAnimate, UniAnimate).")
    sub = p.add_subparsers(dest="command", required=True, metavar="{animate,batch,download,convert}")
    _animate_parser(sub)
    _batch_parser(sub)
    _download_parser(sub)
    _convert_parser(sub)
    return p


def _say(args):
    return (lambda line: None) if args.quiet else print


def animate_options(args):
    """``animate_video``'s keyword arguments (all but the three paths) from parsed ``animate`` options;
    the batch builds each row's the same way."""
    names = ("length", "overlap", "stride", "schedule", "fuse")
    context = {n: getattr(args, f"context_{n}") for n in names if getattr(args, f"context_{n}") is not None}
    if args.window_batch is not None:
        context["window_batch"] = args.window_batch
    return dict(
        models=args.models, comfyui=args.comfyui, networks=args.networks,
        variant=args.variant, width=args.width, height=args.height, frames=args.frames, fps=args.fps,
        steps=args.steps, cfg=args.cfg, seed=args.seed, sampler=args.sampler, beta_schedule=args.beta_schedule,
        pose_temperature=args.pose_temperature, context=context or None, retarget=args.retarget, smooth=args.smooth,
        device=args.device, dtype=args.dtype, decode_chunk=args.decode_chunk, download=args.download,
        overwrite=args.overwrite, progress=not args.quiet, workers=args.workers, ray=args.ray,
        first_frame=args.first_frame)


def _run_animate(args):
    from .pipeline import animate_video

    result = animate_video(args.character, args.driving, args.output, **animate_options(args))
    print(result["path"])


def _run_batch(args):
    from .batch import run_from_args

    return run_from_args(args)


def _run_download(args):
    from . import download as dl

    root = dl.models_dir(args.models, args.comfyui)
    files = [f for group in dl.remotes(args.variant).values() for f in group]
    if args.quiet:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    written = dl.download(root, files, log=_say(args))
    print(f"{args.variant}: all {len(files)} files are in {root} ({len(written)} downloaded now)")


def _run_convert(args):
    from .convert import convert

    convert(args.src, args.dst, dtype=args.dtype, replace=args.replace, report=_say(args))


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so every temporary file is removed on the way out."""


def _terminate(signum, frame):
    raise Terminated(signum)


def _handle_termination():
    """Turn SIGTERM/SIGHUP into Terminated; returns the previous handlers (main thread only)."""
    previous = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None:
            previous[number] = signal.signal(number, _terminate)
    return previous


def main(argv=None):
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("poseanimate").setLevel(logging.WARNING if args.quiet else logging.INFO)
    previous = _handle_termination()
    try:
        code = args.run(args)
    except Terminated as e:
        print(f"{PROG} {args.command}: stopped by {signal.Signals(e.args[0]).name}", file=sys.stderr)
        return 128 + e.args[0]
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        message = str(e) if isinstance(e, RuntimeError) else " ".join(str(e).split())
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return 1
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return code or 0
