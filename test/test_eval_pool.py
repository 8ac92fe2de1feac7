"""run_isolated: one item's exception, crash or hang is reported for that item and nothing else is lost."""
from __future__ import annotations

import eval_helpers
import petct.processes
from evaluation.batch import PRELOAD


def run_isolated(function, items, **options):
    """petct.processes.run_isolated as the scorer calls it."""
    return petct.processes.run_isolated(function, items, preload=PRELOAD, what="scoring", **options)


def values_and_failures(outcomes):
    return ({o.item: o.value for o in outcomes if o.failure is None},
            {o.item: o.failure for o in outcomes if o.failure is not None})


def test_results_come_back_in_item_order():
    outcomes = run_isolated(eval_helpers.raise_on_one, [5, 4, 3, 2, 0], workers=3)
    assert [o.item for o in outcomes] == [5, 4, 3, 2, 0]
    assert [o.value for o in outcomes] == [50, 40, 30, 20, 0]


def test_an_exception_is_reported_for_its_item():
    done = []
    outcomes = run_isolated(eval_helpers.raise_on_one, range(4), workers=2, on_done=done.append)
    values, failures = values_and_failures(outcomes)
    assert values == {0: 0, 2: 20, 3: 30}
    assert failures == {1: "internal error: RuntimeError: boom"}
    assert len(done) == 4


def test_a_worker_that_exits_does_not_sink_the_others():
    values, failures = values_and_failures(run_isolated(eval_helpers.crash_on_three, range(6), workers=2))
    assert values == {0: 0, 1: 10, 2: 20, 4: 40, 5: 50}
    assert failures == {3: "scoring process died (exit code 7)"}


def test_a_worker_killed_like_by_the_memory_killer_is_reported():
    values, failures = values_and_failures(run_isolated(eval_helpers.kill_on_two, range(4), workers=1))
    assert values == {0: 0, 1: 10, 3: 30}
    assert failures == {2: "scoring process died (killed by signal 9) (out of memory?)"}


def test_a_hanging_worker_is_stopped_at_the_time_limit():
    values, failures = values_and_failures(
        run_isolated(eval_helpers.hang_on_zero, range(3), workers=2, timeout_s=1.0))
    assert values == {1: 10, 2: 20}
    assert failures == {0: "scoring took longer than 1 s; stopped"}


def test_a_worker_that_answers_but_does_not_exit_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(petct.processes, "EXIT_GRACE_S", 0.2)
    marker = tmp_path / "marker"
    (outcome,) = run_isolated(eval_helpers.linger_after_answering, [str(marker)], workers=1)
    assert outcome.value == "answered" and outcome.failure is None
    assert not marker.exists()  # the lingering process was killed, not waited for
