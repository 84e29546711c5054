"""``poseanimate batch``: many clips from a jobs file, on Ray workers that load the models once.

A jobs file is CSV (a header row) or JSONL (one object a line): ``character``, ``driving``, an
optional ``output`` and any ``animate`` option (``steps``, ``context-length`` or
``context_length``, ...). The batch command's own animate options apply to every row; a row's
values override them. Every row is parsed by the ``animate`` command's own parser and its files
are checked before any job runs.

OUTDIR holds the videos and ``manifest.json``: per output, its options, status, checksum, time
and error. A rerun skips every output the manifest records as done with the same options whose
file still has the recorded checksum. Videos are written under ``OUTDIR/.batch-tmp`` and renamed
into place when complete.

Nothing here imports ray or torch at import time (``--help`` stays fast; only the run needs the
``ray`` extra).
"""

import argparse
import csv
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

from . import _positive_int

MANIFEST = "manifest.json"
TMP_DIR = ".batch-tmp"
PATH_FIELDS = ("character", "driving", "output")
# animate options a row may not set: the batch decides these itself
NOT_IN_ROWS = {"help", "quiet", "ray", "workers"}
RETRIES = 2
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class BatchError(ValueError):
    """A problem with the jobs file or the batch options; the message says which and what to do."""


class BadRows(BatchError):
    """Some rows are bad: ``str()`` is the headline and one line per bad row; ``headline`` alone."""

    def __init__(self, headline, lines):
        super().__init__("\n".join([headline, *lines]))
        self.headline, self.lines = headline, lines


class _RowError(Exception):
    pass


class _RowParser(argparse.ArgumentParser):
    """The ``animate`` parser for one row: an error is raised (and collected), not printed with exit."""

    def error(self, message):
        raise _RowError(message)


def animate_parser(parser_class=argparse.ArgumentParser):
    """A fresh parser of the ``animate`` subcommand, exactly as the command line builds it."""
    from . import _animate_parser

    sub = parser_class(add_help=False).add_subparsers(parser_class=parser_class)
    _animate_parser(sub)
    return sub.choices["animate"]


def add_arguments(p):
    p.add_argument("jobs", metavar="JOBS", help="a .csv (with a header row) or .jsonl jobs file: character, "
                                                "driving, optional output, any animate option")
    p.add_argument("-o", "--outdir", required=True, metavar="OUTDIR",
                   help="folder for the videos and manifest.json (created if missing)")
    p.add_argument("-v", "--verbose", action="store_true", help="a line per job as it starts and ends")
    g = p.add_argument_group("ray")
    g.add_argument("--ray", metavar="ADDRESS", help="a Ray cluster's address (its files must be on storage "
                                                    "every node sees); default: a local Ray on this machine")
    g.add_argument("--workers", type=_positive_int, help="how many workers (default: one per GPU / "
                                                         "--gpus-per-job, or per CPU with --device cpu)")
    g.add_argument("--gpus-per-job", type=float, default=1.0, help="GPUs each worker holds (default: 1)")
    g.add_argument("--retries", type=int, default=RETRIES,
                   help=f"times a job whose worker died is tried again on another (default: {RETRIES})")
    g.add_argument("--skip-bad", action="store_true",
                   help="run the valid rows when some are bad (default: run none and list the bad ones)")
    # Every animate option except the three paths, shared with the animate parser (the same actions),
    # as common options for all rows.
    animate = animate_parser()
    own = {a.dest for a in p._actions} | set(PATH_FIELDS) | NOT_IN_ROWS
    for group in animate._mutually_exclusive_groups:
        mutex = p.add_mutually_exclusive_group()
        for action in group._group_actions:
            mutex._add_action(action)
            own.add(action.dest)
    for group in animate._action_groups:
        actions = [a for a in group._group_actions if a.dest not in own]
        if actions:
            target = p.add_argument_group(f"animate options for every row ({group.title})")
            for action in actions:
                target._add_action(action)


# ---------------------------------------------------------------------------------------------- jobs file


def read_rows(path):
    """``[(where, {key: value})]`` from a CSV or JSONL file; ``where`` names the line for messages."""
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if path.lower().endswith(".jsonl"):
                rows = []
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise BatchError(f"{name} line {number} is not JSON ({e}); a JSONL jobs file has one "
                                         "object a line") from e
                    if not isinstance(row, dict):
                        raise BatchError(f"{name} line {number} is not a JSON object; write "
                                         '{"character": ..., "driving": ...}')
                    rows.append((f"line {number}", {k: v for k, v in row.items() if v is not None}))
                return rows
            if not path.lower().endswith(".csv"):
                raise BatchError(f"jobs file {path}: the name must end in .csv or .jsonl")
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise BatchError(f"jobs file {path} is empty; its first line names the columns "
                                 "(character,driving,...)")
            rows = []
            for row in reader:
                if None in row:
                    raise BatchError(f"{name} line {reader.line_num} has more values than the header has columns")
                values = {k.strip(): v.strip() for k, v in row.items() if v is not None and v.strip() != ""}
                if values:
                    rows.append((f"line {reader.line_num}", values))
            return rows
    except (OSError, UnicodeDecodeError) as e:
        raise BatchError(f"jobs file {path} could not be read ({e})") from e


@dataclass
class Job:
    where: str
    args: argparse.Namespace | None = None
    output: str = ""
    error: str = ""
    options: dict = field(default_factory=dict)
    attempts: int = 0
    status: str = "pending"
    record: dict = field(default_factory=dict)

    @property
    def key(self):
        return os.path.basename(self.output) if self.output else self.where


def _option_table(animate):
    table = {}
    for action in animate._actions:
        if action.dest in NOT_IN_ROWS or not action.option_strings:
            continue
        names = {action.dest} | {s.lstrip("-") for s in action.option_strings if s.startswith("--")}
        for name in names:
            table[name] = action
            table[name.replace("-", "_")] = action
    return table


def _row_argv(row, table, base):
    argv = []
    for key, value in row.items():
        if key in PATH_FIELDS:
            continue
        action = table.get(key.strip().lstrip("-"))
        if action is None:
            valid = sorted({a.dest for a in table.values()})
            raise _RowError(f"unknown option {key!r}; valid: {', '.join(PATH_FIELDS + tuple(valid))}")
        option = action.option_strings[-1]
        if action.nargs == 0:
            text = str(value).strip().lower()
            if text not in TRUE + FALSE:
                raise _RowError(f"{option} takes true or false, got {value!r}")
            setattr(base, action.dest, text in TRUE)
        else:
            if isinstance(value, (list, dict)):
                raise _RowError(f"{option} takes one value, got {value!r}")
            argv += [option, str(value)]
            if action.dest in ("models", "comfyui"):  # a row's models folder replaces the common one
                base.models = base.comfyui = None
    return argv


def _resolve(path, folder):
    return os.path.abspath(os.path.join(folder, os.path.expanduser(str(path))))


def _identity(path):
    """What changes when an input file changes (size and time), for the manifest's options."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, int(st.st_mtime)] if os.path.isfile(path) else "folder"


def check_inputs(args):
    """The checks ``animate`` makes on its files before any slow work, for one row."""
    from .pipeline import VIDEO_EXTENSIONS, JobError, driving_kind, load_image, video_size

    image = load_image(args.character)
    video_size(args.width, args.height, *image.size)
    driving_kind(args.driving)
    if os.path.splitext(args.output)[1].lower() not in VIDEO_EXTENSIONS:
        raise JobError(f"output {args.output}: the file name must end in {', '.join(VIDEO_EXTENSIONS)}")


def build_jobs(rows, common, outdir, jobs_dir):
    """One :class:`Job` per row: parsed with the ``animate`` parser over the common options and checked;
    a bad row gets its ``error`` instead."""
    animate = animate_parser(_RowParser)
    table = _option_table(animate)
    jobs, outputs = [], {}
    for where, row in rows:
        job = Job(where)
        jobs.append(job)
        try:
            missing = [k for k in ("character", "driving") if not str(row.get(k, "")).strip()]
            if missing:
                raise _RowError(f"no {' and no '.join(missing)} (every row needs character and driving)")
            character, driving = (_resolve(row[k], jobs_dir) for k in ("character", "driving"))
            if row.get("output"):
                output = _resolve(row["output"], outdir)
            else:
                stem = lambda p: os.path.splitext(os.path.basename(p.rstrip(os.sep)))[0]  # noqa: E731
                output = os.path.join(outdir, f"{stem(character)}_{stem(driving)}.mp4")
            job.output = output
            base = argparse.Namespace(**vars(common))
            argv = _row_argv(row, table, base)
            args = animate.parse_args(["--character", character, "--driving", driving, "-o", output, *argv], base)
            check_inputs(args)
            if output in outputs:
                raise _RowError(f"output {output} is also {outputs[output]}'s; give the rows different outputs")
            outputs[output] = where
            job.args = args
            job.options = {k: v for k, v in sorted(vars(args).items())
                           if k not in ("quiet", "run", "command", "verbose") and not callable(v)}
            job.options["inputs"] = [_identity(character), _identity(driving)]
        except _RowError as e:
            job.error = str(e)
        except ValueError as e:
            job.error = " ".join(str(e).split())
    return jobs


# ---------------------------------------------------------------------------------------------- manifest


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(outdir):
    path = os.path.join(outdir, MANIFEST)
    if not os.path.exists(path):
        return {"version": 1, "jobs": {}}
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        if not isinstance(manifest.get("jobs"), dict):
            raise ValueError("no 'jobs' object")
    except (OSError, ValueError) as e:
        raise BatchError(f"{path} is not a batch manifest ({e}); move it away or choose another -o") from e
    return manifest


def write_manifest(outdir, manifest):
    path = os.path.join(outdir, MANIFEST)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True, default=str)
    os.replace(tmp, path)


def manifest_key(outdir, output):
    rel = os.path.relpath(output, outdir)
    return output if rel.startswith("..") else rel


def is_complete(entry, job):
    """The manifest says ``job`` is done with the same options and its file still has the checksum."""
    return (entry.get("status") == "done" and entry.get("options") == _jsonable(job.options)
            and os.path.isfile(job.output) and sha256(job.output) == entry.get("sha256"))


def _jsonable(options):
    return json.loads(json.dumps(options, sort_keys=True, default=str))


# ---------------------------------------------------------------------------------------------- the run


def plan(args):
    """Read and check the jobs file; returns ``(jobs, manifest, outdir)``; raises BatchError listing
    every bad row unless ``--skip-bad``."""
    outdir = os.path.abspath(args.outdir)
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise BatchError(f"-o {outdir} is a file; give a folder for the videos and the manifest")
    rows = read_rows(args.jobs)
    if not rows:
        raise BatchError(f"jobs file {args.jobs} has no rows")
    common = argparse.Namespace(**{k: v for k, v in vars(args).items()
                                   if k not in ("jobs", "outdir", "gpus_per_job", "retries", "skip_bad", "ray",
                                                "workers", "verbose")})
    jobs = build_jobs(rows, common, outdir, os.path.dirname(os.path.abspath(args.jobs)))
    manifest = read_manifest(outdir)
    for job in jobs:
        if job.error:
            continue
        entry = manifest["jobs"].get(manifest_key(outdir, job.output))
        if os.path.exists(job.output) and entry is None:
            job.error = (f"output {job.output} exists and is not in {MANIFEST}; move it away or give the row "
                         "another output (the batch replaces only videos it made)")
    bad = [j for j in jobs if j.error]
    if bad and not args.skip_bad:
        raise BadRows(f"{len(bad)} of {len(jobs)} rows are bad; nothing was run (--skip-bad runs the others)",
                      [f"  {os.path.basename(args.jobs)} {j.where}: {j.error}" for j in bad])
    return jobs, manifest, outdir


def run_from_args(args):
    from tqdm import tqdm

    try:
        jobs, manifest, outdir = plan(args)
    except BadRows as e:
        print("\n".join(e.lines), file=sys.stderr)
        raise BatchError(e.headline) from None
    say = (lambda line: None) if args.quiet else (lambda line: tqdm.write(line, file=sys.stderr))
    for job in jobs:
        if job.error:
            say(f"bad row {job.where}: {job.error}")
    bar = tqdm(total=len(jobs), desc="jobs", unit="job", disable=args.quiet, dynamic_ncols=True)

    def on_event(event):
        job = event["job"]
        if event["event"] == "start":
            if args.verbose:
                say(f"start {job.key} on worker {event['worker']} ({job.where})")
        else:
            bar.update(1)
            if args.verbose or job.status == "failed":
                tail = f": {job.error}" if job.error else ""
                say(f"{job.status} {job.key} ({job.where}){tail}")
        counts = event["counts"]
        bar.set_postfix_str(" ".join(f"{k} {v}" for k, v in counts.items() if v), refresh=True)

    try:
        run_batch(jobs, manifest, outdir, address=args.ray, workers=args.workers, device=args.device,
                  gpus_per_job=args.gpus_per_job, retries=args.retries, on_event=on_event)
    except KeyboardInterrupt:
        print(f"stopped; the finished jobs are in {os.path.join(outdir, MANIFEST)}: the same command resumes",
              file=sys.stderr)
        raise
    finally:
        bar.close()
        if not args.quiet:
            print(summary(jobs, outdir), file=sys.stderr)
    print(os.path.join(outdir, MANIFEST))
    failed = sum(j.status in ("failed", "bad") for j in jobs)
    if failed:
        print(f"poseanimate batch: {failed} of {len(jobs)} jobs failed; their errors are in the manifest",
              file=sys.stderr)
        return 1
    return 0


def run_batch(jobs, manifest, outdir, *, address=None, workers=None, device="auto", gpus_per_job=1.0,
              retries=RETRIES, on_event=None):
    """Run the checked ``jobs`` on Ray workers, recording each in ``manifest`` (written to OUTDIR after
    every job). Jobs the manifest records as complete are skipped; bad rows are recorded as ``bad``.
    Uses the Ray already initialised in this process, else ``ray.init(address)``."""
    from .ray_workers import JobPool

    os.makedirs(outdir, exist_ok=True)
    tmp = os.path.join(outdir, TMP_DIR)
    shutil.rmtree(tmp, ignore_errors=True)  # a previous run's unfinished videos: only ever ours
    os.makedirs(tmp)
    todo = []
    for job in jobs:
        key = manifest_key(outdir, job.output)
        if job.error:
            job.status = "bad"
            if job.output:
                manifest["jobs"][key] = {"status": "bad", "row": job.where, "error": job.error}
        elif is_complete(manifest["jobs"].get(key, {}), job):
            job.status, job.record = "skipped", manifest["jobs"][key]
        else:
            todo.append(job)
    write_manifest(outdir, manifest)
    counts = {"done": 0, "skipped": sum(j.status == "skipped" for j in jobs), "failed": 0, "bad": 0, "running": 0}
    counts["bad"] = sum(j.status == "bad" for j in jobs)

    def finished(job, record):
        job.status, job.record = record["status"], record
        job.error = record.get("error", "")
        manifest["jobs"][manifest_key(outdir, job.output)] = record
        write_manifest(outdir, manifest)
        counts[job.status] += 1

    if todo:
        with JobPool(address, workers, device, gpus_per_job, retries) as pool:
            pool.run(todo, tmp, finished, on_event, counts)
    shutil.rmtree(tmp, ignore_errors=True)
    return jobs


def summary(jobs, outdir):
    rows = [("output", "status", "seconds", "tries", "row / error")]
    for job in jobs:
        rec = job.record
        seconds = f"{rec['seconds']:.1f}" if "seconds" in rec else ""
        note = job.error or job.where
        rows.append((manifest_key(outdir, job.output) if job.output else "-", job.status, seconds,
                     str(rec.get("attempts", job.attempts) or ""), note))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    totals = {s: sum(j.status == s for j in jobs) for s in ("done", "skipped", "failed", "bad")}
    lines.append(", ".join(f"{v} {k}" for k, v in totals.items()))
    return "\n".join(lines)
