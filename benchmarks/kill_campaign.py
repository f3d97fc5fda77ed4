"""Kill -9 campaign: a short fbl-train run killed again and again, each time restarted.

    python benchmarks/kill_campaign.py --kills 20 --out results/kill_campaign.json

Kills land at random moments and, on purpose, while orbax writes the epoch checkpoint or the
best/ checkpoint (its temporary folder exists) and while a checkpoint is being finalised. Every
restart is the same command. The campaign passes when every restart resumed (or started afresh
when nothing was saved yet), no restart crashed, and the final record and parameter checksum
equal those of one uninterrupted run. The run is the demo config made tiny (see TINY below).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time
from typing import Any

from fbl_jax.cli.cpu_flags import with_host_devices

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.py"
TINY = {
    "num_epochs": 4,
    "eval_every_epochs": 1,
    "checkpoint_every_epochs": 1,
    "log_every_steps": 5,
    "model.name": "resnet8",
    "optimizer.warmup_epochs": 0.5,
    "optimizer.decay_epochs": "(2,)",
    "optimizer.decay_multipliers": "(0.1,)",
    "loss.curriculum_offset": 0.5,
    "loss.drw_start_epoch": 2,
}
TARGETS = ("random", "latest_tmp", "best_tmp", "random", "after_checkpoint")
TMP_MARKER = ".orbax-checkpoint-tmp"
CHECKSUM_RE = re.compile(r"parameter checksum (\S+)")


def command(workdir: pathlib.Path, **overrides: Any) -> list[str]:
    args = [sys.executable, "-m", "fbl_jax.cli.train", f"--config={DEMO}", f"--workdir={workdir}"]
    for key, value in {**TINY, **overrides}.items():
        args.append(f"--config.{key}={value}")
    return args


def environment(devices: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    # the caller's XLA flags: the reference and the killed runs must compile alike
    env["XLA_FLAGS"] = with_host_devices(env.get("XLA_FLAGS", ""), devices)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def final_record(workdir: pathlib.Path) -> dict[str, Any] | None:
    path = workdir / "metrics.jsonl"
    finals = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("type") == "final":
            finals.append(record)
    return finals[-1] if finals else None


def _tmp_present(workdir: pathlib.Path, folder: str) -> bool:
    path = workdir / folder
    try:
        return any(TMP_MARKER in p.name for p in path.iterdir())
    except FileNotFoundError:
        return False


def _checkpoint_steps(workdir: pathlib.Path) -> set[str]:
    try:
        return {p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()}
    except FileNotFoundError:
        return set()


def reference_run(
    workdir: pathlib.Path, env: dict[str, str], overrides: dict[str, Any]
) -> dict[str, Any]:
    t0 = time.time()
    out = subprocess.run(
        command(workdir, **overrides), env=env, capture_output=True, text=True, timeout=900
    )
    if out.returncode != 0:
        raise RuntimeError(f"the reference run failed:\n{out.stderr[-3000:]}")
    checksum = CHECKSUM_RE.findall(out.stderr + out.stdout)
    return {"final": final_record(workdir), "checksum": checksum[-1], "seconds": time.time() - t0}


def one_attempt(
    workdir: pathlib.Path,
    env: dict[str, str],
    target: str,
    rng: random.Random,
    budget_s: float,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """Start the command, kill -9 it at the target moment; returns what happened."""
    log_path = workdir.parent / f"{workdir.name}.attempt.log"
    before = _checkpoint_steps(workdir)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            command(workdir, **overrides), env=env, stdout=log, stderr=subprocess.STDOUT
        )
        t0 = time.time()
        deadline = t0 + (rng.uniform(0.3, 1.0) * budget_s if target == "random" else budget_s)
        killed_at, hit_target = None, False
        while proc.poll() is None:
            now = time.time()
            on_target = (
                (target == "random" and now >= deadline)
                or (target == "latest_tmp" and _tmp_present(workdir, "checkpoints"))
                or (target == "best_tmp" and _tmp_present(workdir, "best"))
                or (target == "after_checkpoint" and bool(_checkpoint_steps(workdir) - before))
            )
            if on_target or now >= t0 + budget_s:  # a missed target still ends in a kill
                hit_target = bool(on_target)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_at = time.time() - t0
                break
            time.sleep(0.002)
    text = log_path.read_text(errors="replace")
    resumed = re.findall(r"resumed from step (\d+)", text)
    # past the restore (the runner logs its steps per call), a saved run must have resumed
    restored_phase = "per compiled call" in text or "already finished" in text
    must_resume = bool(before) and restored_phase
    return {
        "target": target,
        "killed": killed_at is not None,
        "on_target": hit_target,
        "killed_after_s": killed_at,
        "exit_code": proc.returncode,
        "resumed_from": int(resumed[0]) if resumed else None,
        "resume_ok": (not must_resume) or bool(resumed) or "already finished" in text,
        "cleaned": len(re.findall(r"checkpoint whose save was interrupted", text)),
        "unreadable": len(re.findall(r"is unreadable", text)),
        "dropped_best": len(re.findall(r"after the resumed step", text)),
        "traceback": "Traceback" in text,
        "finished": final_record(workdir) is not None,
    }


def campaign(
    root: pathlib.Path,
    kills: int,
    seed: int = 0,
    devices: int = 1,
    targets: tuple[str, ...] = TARGETS,
    reference: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Run the reference, then attempts until `kills` kills have landed, then a last restart.

    `reference` ({"final", "checksum", "seconds"}) stands in for the reference run when the
    caller already has one of the same settings."""
    root.mkdir(parents=True, exist_ok=True)
    env = environment(devices)
    ref = reference or reference_run(root / "reference", env, overrides)
    workdir = root / "killed"
    rng = random.Random(seed)
    attempts = []
    while sum(a["killed"] for a in attempts) < kills and len(attempts) < 4 * kills:
        target = targets[len(attempts) % len(targets)]
        attempt = one_attempt(workdir, env, target, rng, ref["seconds"] * 1.5, overrides)
        attempts.append(attempt)
        if attempt["finished"]:  # reached the end before the kill: start the run afresh
            final = final_record(workdir)
            attempt["final_equal"] = final == ref["final"]
            os.rename(workdir, root / f"finished_{len(attempts)}")
    out = subprocess.run(
        command(workdir, **overrides), env=env, capture_output=True, text=True, timeout=900
    )
    checksum = CHECKSUM_RE.findall(out.stderr + out.stdout)
    final = final_record(workdir)
    crashed = [a for a in attempts if not a["killed"] and a["exit_code"] != 0]
    return {
        "kills": sum(a["killed"] for a in attempts),
        "by_target": {t: sum(a["killed"] and a["target"] == t for a in attempts) for t in TARGETS},
        "on_target_by_target": {
            t: sum(a["on_target"] and a["target"] == t for a in attempts) for t in TARGETS
        },
        "restarts_that_resumed": sum(a["resumed_from"] is not None for a in attempts),
        "restarts_that_failed_to_resume": sum(not a["resume_ok"] for a in attempts),
        "partial_checkpoints_cleaned": sum(a["cleaned"] for a in attempts),
        "stale_best_dropped": sum(a["dropped_best"] for a in attempts),
        "unreadable_moved_aside": sum(a["unreadable"] for a in attempts),
        "attempts_with_traceback": sum(a["traceback"] for a in attempts),
        "crashed_attempts": len(crashed),
        "last_restart_exit_code": out.returncode,
        "final_equal": final == ref["final"],
        "checksum_equal": bool(checksum) and checksum[-1] == ref["checksum"],
        "finished_early_equal": all(a.get("final_equal", True) for a in attempts),
        "reference_seconds": ref["seconds"],
        "attempts": attempts,
    }


def passed(result: dict[str, Any]) -> bool:
    return (
        result["final_equal"]
        and result["checksum_equal"]
        and result["finished_early_equal"]
        and result["crashed_attempts"] == 0
        and result["restarts_that_failed_to_resume"] == 0
        and result["attempts_with_traceback"] == 0
        and result["last_restart_exit_code"] == 0
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default="runs/kill_campaign", help="scratch folder (emptied first)")
    p.add_argument("--out", default=None, help="write the result JSON here")
    args = p.parse_args()
    root = pathlib.Path(args.root)
    if root.exists():
        import shutil

        shutil.rmtree(root)
    t0 = time.time()
    result = campaign(root, args.kills, args.seed)
    result["wall_seconds"] = time.time() - t0
    result["passed"] = passed(result)
    text = json.dumps(result, indent=1)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    summary = {k: v for k, v in result.items() if k != "attempts"}
    print(json.dumps(summary, indent=1))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
