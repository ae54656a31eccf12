"""The trainer's weight average (``train.average_states``, ``--average-with``): the committed
model ``lite0-sg2c6g-20261130`` (five checkpoints) and its predecessors ``lite0-sg2c6q-20261130``
(four) and ``lite0-sg2c6s-20261130`` (two) are such averages, so its arithmetic is pinned here.

Needs torch (the ``train`` extra): skipped in the runtime environment, run with
``.venv-train/bin/python -m pytest tests/unit/test_detector_soup.py``.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
train = pytest.importorskip("pipeline.avatars.train")


def _state(seed: int) -> dict[str, object]:
    torch.manual_seed(seed)
    model = train.LiteDetector()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor))
            else:
                tensor.fill_(seed)
    return model.state_dict()


def test_float_tensors_are_averaged_and_counters_come_from_the_first() -> None:
    a, b = _state(1), _state(2)
    soup = train.average_states([a, b])
    assert soup.keys() == a.keys()
    floats = [k for k in a if a[k].is_floating_point()]
    counters = [k for k in a if not a[k].is_floating_point()]
    assert floats and counters
    for key in floats:
        assert torch.equal(soup[key], (a[key] + b[key]) / 2)
        assert not torch.equal(soup[key], a[key])
    for key in counters:
        assert torch.equal(soup[key], a[key])
    model = train.LiteDetector()
    model.load_state_dict(soup)


def test_checkpoints_of_different_networks_are_refused() -> None:
    a, b = _state(1), _state(2)
    del b[next(iter(b))]
    with pytest.raises(ValueError, match="keys differ"):
        train.average_states([a, b])
    b = _state(2)
    key = next(k for k in b if b[k].ndim == 4)
    b[key] = b[key][:1]
    with pytest.raises(ValueError, match="shape differs"):
        train.average_states([a, b])


def test_average_with_needs_an_initial_checkpoint() -> None:
    with pytest.raises(SystemExit):
        train.parse_args(["--average-with", "b.pt"])
    args = train.parse_args(
        ["--init-checkpoint", "a.pt", "--average-with", "b.pt", "--average-with", "c.pt"]
    )
    assert [str(p) for p in args.average_with] == ["b.pt", "c.pt"]
    recorded = train.manifest_args(args)
    assert recorded["average_with"] == ["b.pt", "c.pt"]
    assert recorded["init_checkpoint"] == "a.pt"
    assert json.loads(json.dumps(recorded)) == recorded
