"""One model, one thread at a time: the same thread may nest MC calls, another thread is refused clearly."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from entropy_al import EntropySamplingDropout
from entropy_al.mc import eval_mode, mc_mode


def test_the_same_thread_may_nest_and_the_state_comes_back():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    model[1].train(False)
    flags = [m.training for m in model.modules()]
    with mc_mode(model, "train"), eval_mode(model), mc_mode(model, "dropout"):
        assert model[2].training and not model[1].training
    assert [m.training for m in model.modules()] == flags


def test_another_thread_is_refused_while_the_model_is_in_use_then_admitted():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    errors: list[BaseException] = []

    def other() -> None:
        try:
            with mc_mode(model, "dropout"):
                pass
        except RuntimeError as exc:
            errors.append(exc)

    with mc_mode(model, "dropout"):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=30)
    assert len(errors) == 1 and "select()" in str(errors[0]) and "Sequential" in str(errors[0])
    thread = threading.Thread(target=other)
    thread.start()
    thread.join(timeout=30)
    assert len(errors) == 1, "the model is free again once the first call returned"


def test_a_distil_style_acquire_scores_may_run_mc_methods_inside_select():
    class Nested(EntropySamplingDropout):
        def acquire_scores(self, unlabeled_buffer):
            probs = self.predict_prob_dropout_split(unlabeled_buffer, 3).mean(0)
            return -(probs * probs.log()).sum(1)

    torch.manual_seed(0)
    pool = torch.randn(12, 4)
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 3))
    strategy = Nested(pool, pool, model, 3, {"device": "cpu", "stream_buffer_size": 5})
    with mc_mode(model, "dropout"):  # a caller already inside an MC block on this thread
        assert len(strategy.select(4)) == 4


@pytest.mark.parametrize("mode", ["dropout", "train"])
def test_a_refused_thread_leaves_the_owner_state_alone(mode):
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    model.eval()
    outcomes: list[BaseException] = []

    def other() -> None:
        try:
            with mc_mode(model, mode):
                pass
        except RuntimeError as exc:
            outcomes.append(exc)

    with mc_mode(model, mode):
        inside = [m.training for m in model.modules()]
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=30)
        assert len(outcomes) == 1
        assert [m.training for m in model.modules()] == inside
    assert not any(m.training for m in model.modules())
