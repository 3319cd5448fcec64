"""napari first, the plugin second, each in a fresh interpreter: the order in which users meet SINE.

Issue 16: opening the widget from a running napari segfaulted. napari's OpenGL context maps Mesa's
libLLVM; importing triton (through timm → torchvision → torch._dynamo, or an optimizer's first step)
then loads triton's own LLVM beside it and the process dies. The in-process plugin tests never saw it:
the test runner imports torch and sine_model before any Qt binding. These flows start from nothing.
Against the commit before the fix (1c5b21d~1) both scripts die with SIGSEGV (exit status -11).
"""

from __future__ import annotations

import pytest
from user_flow_helpers import (
    assert_exit_ok,
    assert_loaded_from_checkout,
    flow_env,
    flow_result,
    needs_display,
    run_script,
    sample_targets,
)

MODES = ("id", "instance", "semantic")

pytestmark = needs_display


@pytest.mark.parametrize("threads", [None, "2"])
def test_widget_opens_and_runs_with_the_defaults_after_napari(tmp_path, record_property, threads):
    """Viewer → SINE dock widget → nuclei sample → Run (nothing changed) → proposals; user data untouched.

    With ``SINE_NUM_THREADS=2`` (a machine with cores to spare: the widget leaves one to the GUI, so a
    2-core machine runs one target at a time) the targets are answered two at once, in napari's worker.
    """
    env = None if threads is None else flow_env(tmp_path, SINE_NUM_THREADS=threads)
    process = run_script("napari_first_run.py", tmp_path, env=env)
    assert_exit_ok(process)  # a segfault is -11 here
    result = flow_result(process)
    record_property("seconds", result["seconds"])  # viewer, widget_open, run: reported, never judged
    print(f"\nnapari-first flow: {result['seconds']}; heavy modules loaded: {result['loaded']}")
    assert_loaded_from_checkout(result["files"])
    assert result["finished"], f"the run did not end within the ceiling: {result['status']}"
    n_targets = len(sample_targets())
    assert result["status"] == f"done: {n_targets} target(s)", result["status"]
    if threads is not None:
        assert len(result["target_threads"]) == int(threads), result["target_threads"]

    proposals = result["proposals"]
    for mode in MODES:
        names = [name for name in proposals if name.endswith(f"[SINE {mode}]")]
        assert len(names) == 1, (mode, sorted(proposals))
        layer = proposals[names[0]]
        assert layer["kind"] == "Labels" and layer["shape"][0] == n_targets, layer
        if mode == "id":  # the default model's ID answers match the reference's scene: the sample's
            continue  # targets are other fields of view, so none is right (the CLI flow checks ID)
        assert all(count > 0 for count in layer["nonzero_per_plane"]), (names[0], layer)  # every target
        assert layer["labels"] >= 1, layer
    assert len(proposals) == len(MODES), sorted(proposals)

    before, after = result["user_layers_before"], result["user_layers_after"]
    assert before, "the sample added no layers"
    assert after == before  # same names, same dtype, shape and bytes


def test_triton_is_refused_after_napari_and_an_optimizer_step(tmp_path):
    """Viewer → sine_model → AdamW step (imports torch._dynamo) → ``import triton`` is an ImportError."""
    process = run_script("napari_then_triton.py", tmp_path)
    assert_exit_ok(process)  # importing triton beside Mesa's LLVM is a segfault
    result = flow_result(process)
    if result["skip"]:
        pytest.skip(result["skip"])
    assert_loaded_from_checkout(result["files"])
    assert result["step"] == "done"
    assert result["import_error"] is not None, "triton was imported beside " + result["llvm"]
    assert "SINE_ALLOW_TRITON" in result["import_error"], result["import_error"]
    assert not result["triton_loaded"]


def test_closing_napari_while_the_model_list_loads_exits_cleanly(tmp_path):
    """Viewer → SINE dock widget → viewer closed and the script ends while torch is being imported."""
    process = run_script("napari_open_close.py", tmp_path)
    assert_exit_ok(process)  # was SIGABRT: a worker thread importing torch during finalisation
    result = flow_result(process)
    if not result["loading_at_close"]:  # the list was read before the close: nothing of this case ran
        pytest.skip(f"the model list was read before the viewer closed ({result})")
