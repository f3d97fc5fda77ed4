"""Two processes joined by jax.distributed on localhost (CPU backend, 2 devices each)."""

import socket
import subprocess

from train_helpers import (
    cli_args,
    read_records,
    subprocess_env,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_localhost_agree(tmp_path):
    port = _free_port()
    env = subprocess_env(devices=2)
    workdir = tmp_path / "mp"
    procs = []
    for pid in range(2):
        args = cli_args(
            workdir,
            num_epochs=1,
            # every log step is due: the hosts must agree on mid-epoch saves (orbax saves
            # only when all of them do)
            checkpoint_every_minutes=1e-9,
            keep_checkpoints=5,
            **{
                "distributed.initialize": "explicit",
                "distributed.coordinator_address": f"127.0.0.1:{port}",
                "distributed.num_processes": 2,
                "distributed.process_id": pid,
            },
        )
        procs.append(
            subprocess.Popen(
                args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    sums = [
        [
            line.split("checksum")[-1].strip()
            for line in out.splitlines()
            if "parameter checksum" in line
        ]
        for out in outs
    ]
    assert sums[0] and sums[0] == sums[1], sums
    assert "joined 2 processes" in outs[1]
    records = read_records(workdir)
    assert records[-1]["type"] == "final" and records[-1]["last"]["num_examples"] == 539
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [5, 10, 15], saved
