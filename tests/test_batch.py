"""`poseanimate batch`: the jobs file checked like the command line, and a batch on a local Ray
(CPU actors, tiny models): two workers, a missing file, a failing job, a worker killed mid-job, a
rerun that skips what is done. The tests on Ray share one local Ray (conftest.local_ray)."""

import json
import os
import signal
import time

import pytest

import cli_fixtures as fx
from poseanimate.cli import main, parser
from poseanimate.cli.batch import MANIFEST, BatchError, plan, read_rows, run_batch

FAST = ["--steps", "2", "--frames", "6", "--context-length", "4", "--context-overlap", "1",
        "--width", "64", "--height", "128", "--device", "cpu"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    fx.write_models(root / "models")
    fx.write_character(root / "anna.png")
    fx.write_character(root / "ben.png", width=80, height=160)
    fx.write_video(root / "dance.mp4", fx.driving_frames(8), 12)
    fx.write_video(root / "nobody.mp4", fx.driving_frames(4, person=False), 12)
    return root


def batch_args(jobs, outdir, *extra):
    return parser().parse_args(["batch", str(jobs), "-o", str(outdir), *extra])


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------------------------------- checks


def test_rows_are_checked_like_the_command_line_and_all_bad_rows_listed(work, tmp_path, capsys):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("character,driving,steps,context_length,colour,output\n"
                    f"{work}/anna.png,{work}/dance.mp4,3,,,\n"
                    f"{work}/anna.png,{work}/dance.mp4,0,,,b.mp4\n"
                    f"{work}/anna.png,{work}/missing.mp4,,,,c.mp4\n"
                    f"{work}/anna.png,{work}/dance.mp4,,8,red,d.mp4\n"
                    f"{work}/anna.png,{work}/dance.mp4,,,,e.gif\n"
                    f"{work}/dance.mp4,{work}/dance.mp4,,,,f.mp4\n")
    with pytest.raises(BatchError) as e:
        plan(batch_args(jobs, tmp_path / "out", "--models", str(work / "models")))
    message = str(e.value)
    assert message.startswith("5 of 6 rows are bad; nothing was run")
    assert "line 3: argument --steps: must be at least 1, got 0" in message
    assert "line 4: --driving" in message and "missing.mp4: no such file or folder" in message
    assert "line 5: unknown option 'colour'" in message
    assert "line 6: output" in message and ".gif" in message
    assert "line 7: --character" in message and "could not be read as an image" in message
    assert "line 2" not in message
    assert not (tmp_path / "out").exists()
    # the command line says the same in one go and exits 1 without starting anything
    assert main(["batch", str(jobs), "-o", str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "jobs.csv line 5: unknown option 'colour'" in err and err.count("\n") == 6
    assert err.endswith("poseanimate batch: error: 5 of 6 rows are bad; nothing was run (--skip-bad runs the others)\n")


def test_rows_override_common_options_and_paths_are_relative_to_the_jobs_file(work, tmp_path):
    jobs = write_jsonl(work / "override.jsonl", [
        {"character": "anna.png", "driving": "dance.mp4"},
        {"character": "anna.png", "driving": "dance.mp4", "output": "sub/x.mkv", "steps": 5, "context-fuse": "flat",
         "download": True, "comfyui": str(tmp_path)},
    ])
    (tmp_path / "out" / "sub").mkdir(parents=True)
    jobs_, _, _ = plan(batch_args(jobs, tmp_path / "out", "--steps", "3", "--seed", "9",
                                  "--models", str(work / "models")))
    a, b = (j.args for j in jobs_)
    assert (a.character, a.output) == (str(work / "anna.png"), str(tmp_path / "out" / "anna_dance.mp4"))
    assert (a.steps, a.seed, a.context_fuse, a.download, a.models) == (3, 9, None, False, str(work / "models"))
    assert (b.steps, b.seed, b.context_fuse, b.download) == (5, 9, "flat", True)
    assert (b.models, b.comfyui, b.output) == (None, str(tmp_path), str(tmp_path / "out" / "sub" / "x.mkv"))


def test_jobs_file_errors(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(BatchError, match="must end in .csv or .jsonl"):
        read_rows(str(tmp_path / "a.txt"))
    (tmp_path / "b.jsonl").write_text('{"character": "x"}\n[1, 2]\n')
    with pytest.raises(BatchError, match="line 2 is not a JSON object"):
        read_rows(str(tmp_path / "b.jsonl"))
    (tmp_path / "c.csv").write_text("character,driving\na.png,b.mp4,extra\n")
    with pytest.raises(BatchError, match="line 2 has more values than the header"):
        read_rows(str(tmp_path / "c.csv"))


# ---------------------------------------------------------------------------------------------- on Ray


def test_batch_on_two_workers_survives_bad_rows_failures_and_a_killed_worker_then_resumes(work, local_ray,
                                                                                          tmp_path, capsys):
    rows = [
        {"character": "anna.png", "driving": "dance.mp4"},
        {"character": "anna.png", "driving": "dance.mp4", "seed": 7, "output": "anna_seed7.mp4"},
        {"character": "ben.png", "driving": "dance.mp4"},
        {"character": "ben.png", "driving": "gone.mp4"},  # missing file: a bad row, recorded
        {"character": "anna.png", "driving": "nobody.mp4"},  # fails while running: recorded
        {"character": "ben.png", "driving": "dance.mp4", "steps": 1, "output": "ben_1step.mp4"},
    ]
    jobs = write_jsonl(work / "jobs.jsonl", rows)
    out = tmp_path / "out"
    args = batch_args(jobs, out, "--models", str(work / "models"), "--skip-bad", *FAST)
    killed, ended = [], []

    def kill_mid_job_then_interrupt(event):
        if event["event"] == "start" and event["job"].key == "ben_dance.mp4" and not killed:
            pid = event["pool"].worker_info(event["worker"])["pid"]
            time.sleep(0.1)  # into the job (a tiny job can end within a second on an idle machine)
            os.kill(pid, signal.SIGKILL)
            killed.append((event["worker"], pid))
        if event["event"] == "end":
            ended.append(event["job"].key)
            if event["job"].key == "ben_dance.mp4":
                raise KeyboardInterrupt  # as Ctrl-C in the middle of the batch

    planned, manifest, outdir = plan(args)
    with pytest.raises(KeyboardInterrupt):
        run_batch(planned, manifest, outdir, workers=2, device="cpu", on_event=kill_mid_job_then_interrupt)
    assert killed
    record = json.loads((out / MANIFEST).read_text())["jobs"]
    assert {k for k, r in record.items() if r["status"] != "bad"} == set(ended)
    assert record["ben_gone.mp4"]["status"] == "bad"
    assert "gone.mp4: no such file or folder" in record["ben_gone.mp4"]["error"]
    assert record["ben_dance.mp4"]["status"] == "done", record["ben_dance.mp4"]  # retried on another worker
    assert record["ben_dance.mp4"]["attempts"] == 2 and record["ben_dance.mp4"]["worker"] != killed[0][0]
    assert not [n for n in os.listdir(out) if n.endswith(".mp4") and n not in record]
    done_before = sum(r["status"] == "done" for r in record.values())

    # the same command resumes: what is done is skipped, the rest runs
    code = main(["batch", str(jobs), "-o", str(out), "--models", str(work / "models"), "--skip-bad",
                 "--workers", "2", *FAST])
    assert code == 1  # a bad row and a failed job
    assert f"{4 - done_before} done, {done_before} skipped, 1 failed, 1 bad" in capsys.readouterr().err
    record = json.loads((out / MANIFEST).read_text())["jobs"]
    status = {k: r["status"] for k, r in record.items()}
    assert status == {"anna_dance.mp4": "done", "anna_seed7.mp4": "done", "ben_dance.mp4": "done",
                      "ben_gone.mp4": "bad", "anna_nobody.mp4": "failed", "ben_1step.mp4": "done"}
    assert record["ben_dance.mp4"]["attempts"] == 2 and record["ben_dance.mp4"]["worker"] != killed[0][0]
    assert "DWPose found no person" in record["anna_nobody.mp4"]["error"]
    videos = {}
    for name in ("anna_dance.mp4", "anna_seed7.mp4", "ben_dance.mp4", "ben_1step.mp4"):
        video, _, _ = fx.read_video(out / name)
        assert video.shape == (6, 128, 64, 3)
        videos[name] = video
        assert record[name]["sha256"] and record[name]["frames"] == 6
    assert (videos["anna_dance.mp4"] != videos["anna_seed7.mp4"]).any()
    assert sorted(os.listdir(out)) == ["anna_dance.mp4", "anna_seed7.mp4", "ben_1step.mp4", "ben_dance.mp4",
                                       MANIFEST]

    # a rerun of the command (without the failing row) skips every finished job (same options, same
    # checksum): no worker is started
    mtimes = {n: os.stat(out / n).st_mtime_ns for n in videos}
    write_jsonl(jobs, rows[:4] + rows[5:])
    capsys.readouterr()
    code = main(["batch", str(jobs), "-o", str(out), "--models", str(work / "models"), "--skip-bad",
                 "--workers", "2", *FAST])
    assert code == 1  # the bad row is still there
    err = capsys.readouterr().err
    assert "0 done, 4 skipped, 0 failed, 1 bad" in err
    assert {n: os.stat(out / n).st_mtime_ns for n in videos} == mtimes
    again = json.loads((out / MANIFEST).read_text())["jobs"]
    assert {k: again[k] for k in videos} == {k: record[k] for k in videos}

    # a changed option runs that job again, and so does a video changed on disk
    rows[1]["seed"] = 8
    write_jsonl(jobs, rows[:3])
    with open(out / "anna_dance.mp4", "ab") as f:
        f.write(b"\0")
    code = main(["batch", str(jobs), "-o", str(out), "--models", str(work / "models"), "--workers", "2", "-v",
                 *FAST])
    assert code == 0
    err = capsys.readouterr().err
    assert "start anna_seed7.mp4 on worker" in err and "done anna_dance.mp4" in err
    assert "2 done, 1 skipped, 0 failed, 0 bad" in err
    final = json.loads((out / MANIFEST).read_text())["jobs"]
    assert final["anna_seed7.mp4"]["options"]["seed"] == 8 and final["ben_dance.mp4"] == record["ben_dance.mp4"]


def test_only_the_ray_modules_import_ray():
    import ast

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    importers = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("tests", "benchmarks", "tools")]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                             else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                    if any(n == "ray" or n.startswith("ray.") for n in names):
                        importers.add(os.path.relpath(path, root))
    assert importers == {os.path.join("cli", "ray_workers.py"), os.path.join("sampling", "parallel.py")}
