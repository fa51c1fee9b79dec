"""Work nobody waits for stays out of the way: a unit is selected and drawn while it runs."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

from app.jobs import BACKGROUND_NICE, Job, JobContext
from tests.test_app_probe_scale import probe_folder, show_view  # noqa: F401  (fixture)
from tests.test_curation_gui import open_for_curation


def _priority_in_job(background: bool) -> int:
    """The nice value of the thread a Job ran its work in."""
    seen = []
    job = Job("priority", lambda _context: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())),
              background=background)
    thread = threading.Thread(target=job.run)
    thread.start()
    thread.join(timeout=30)
    return seen[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value per thread is Linux's")
def test_a_background_job_runs_at_the_lowest_priority_and_others_at_the_process_own():
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert _priority_in_job(background=True) == max(own, BACKGROUND_NICE)
    assert _priority_in_job(background=False) == own
    assert os.getpriority(os.PRIO_PROCESS, 0) == own, "the process itself keeps its priority"


def test_a_jobs_progress_reaches_the_gui_at_a_bounded_rate_but_every_new_message_does():
    job = Job("reading", lambda _context: None)
    sent = []
    job.progress.connect(lambda fraction, message: sent.append((fraction, message)))
    context = JobContext(job)
    for step in range(1000):
        context.progress(step / 1000, "Reading waveforms")
    assert 1 <= len(sent) < 100
    context.progress(0.5, "k-means")
    context.progress(1.0, "k-means")
    assert sent[-2:] == [(0.5, "k-means"), (1.0, "k-means")], "a new message and the end always go through"


def test_a_unit_is_selected_and_drawn_while_the_background_work_still_runs(qtbot, probe_folder, monkeypatch):
    import app.curation_controller as controller_module

    release = threading.Event()
    original = controller_module.feature_sample

    def held_feature_sample(*args):
        release.wait(timeout=60)  # the L-ratio features: held until the selection is drawn
        return original(*args)

    monkeypatch.setattr(controller_module, "feature_sample", held_feature_sample)
    window = open_for_curation(qtbot, probe_folder)
    try:
        waveforms = show_view(qtbot, window, "waveforms")
        probe = show_view(qtbot, window, "probe")
        table = window.session.unit_table
        unit = int(table.unit_ids[np.argmax(table.n_spikes)])
        window.session.select_units([unit])
        qtbot.waitUntil(lambda: set(waveforms.means) == {unit} and waveforms.complete, timeout=20_000)
        assert probe.selected_unit_spots.data["data"].tolist() == [unit]
        assert window.engine.jobs_running > 0 and not release.is_set(), "the background work was still running"
        assert np.all(np.isnan(window.session.unit_table.l_ratio)), "L-ratios wait for the features"
    finally:
        release.set()
    qtbot.waitUntil(lambda: not np.all(np.isnan(window.session.unit_table.l_ratio)), timeout=60_000)
    window.close()
