"""``ops/services.sh``'s wait for "Kafka Server started" in the broker log.

A broker that loads many consumer groups writes far more than a pipe buffer after that line.
The wait once piped the log into ``grep -q``: grep exited at the match, ``tail`` died of
SIGPIPE, ``set -o pipefail`` turned the match into a failure, and ``.ci/run`` stopped with
"Kafka did not report 'Kafka Server started'" although the broker was up. The helper is run
here by sourcing the script (which then only defines its functions) under its own shell options.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "ops" / "services.sh"
STARTED = "[2026-11-30 09:19:03,391] INFO [KafkaRaftServer nodeId=1] Kafka Server started\n"
NOISE = "[2026-11-30 09:19:04,010] INFO Loaded member MemberMetadata(memberId=faust) in group g\n"


def _succeeds(log: Path, command: str) -> bool:
    """Whether COMMAND succeeds in bash after sourcing the script, with its log at LOG."""
    script = f'source "{SERVICES}"; KAFKA_LOG="{log}"; {command}'
    return subprocess.run(["bash", "-c", script], check=False).returncode == 0


def _has(log: Path, offset: int, pattern: str) -> bool:
    return _succeeds(log, f'kafka_log_has {offset} "{pattern}"')


def _pipe_into_grep_q(log: Path, offset: int) -> bool:
    return _succeeds(log, f"kafka_log_since {offset} | grep -q 'Kafka Server started'")


@pytest.fixture
def busy_log(tmp_path: Path) -> tuple[Path, int]:
    log = tmp_path / "server.log"
    before = "old run\n" * 1000
    log.write_text(before + STARTED + NOISE * 20_000)
    return log, len(before)


def test_match_followed_by_megabytes_of_log_is_found(busy_log: tuple[Path, int]) -> None:
    log, offset = busy_log
    assert log.stat().st_size > 1_000_000
    for _ in range(5):
        assert _has(log, offset, "Kafka Server started")


def test_the_old_grep_q_pipe_fails_on_the_same_log(busy_log: tuple[Path, int]) -> None:
    log, offset = busy_log
    assert not any(_pipe_into_grep_q(log, offset) for _ in range(3))


def test_only_the_log_past_the_offset_counts(busy_log: tuple[Path, int]) -> None:
    log, offset = busy_log
    assert not _has(log, log.stat().st_size, "Kafka Server started")
    assert not _has(log, offset, "no such line")
    assert _has(log, 0, "old run")


def test_a_rotated_smaller_log_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(STARTED)
    assert _has(log, 10_000_000, "Kafka Server started")


def test_sourcing_the_script_runs_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", "-c", f'source "{SERVICES}"; echo sourced'],
        check=True,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "UNMASK_SERVICES_DIR": str(tmp_path / "none")},
    )
    assert done.stdout == "sourced\n"
    assert not (tmp_path / "none").exists()
