"""scripts/gpu_check.py, its CPU-side parts: the step list, --only/--skip, the dry run, the refusal without a GPU,
step timeouts and failures, dependencies and the budget, the report, the packing and the pytest plugin."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import gpu_check  # noqa: E402
from gpu_check import Command, Step, StepResult  # noqa: E402

PY = sys.executable


@pytest.fixture
def no_cuda_probe(monkeypatch):
    """Fail the test if the code asks torch for a GPU (a dry run must not)."""
    def probe():
        raise AssertionError("cuda_status() was called")

    monkeypatch.setattr(gpu_check, "cuda_status", probe)


@pytest.fixture
def data(tmp_path):
    """A data folder laid out like ../shared/data (the files are empty: nothing reads them here)."""
    root = tmp_path / "data"
    (root / "video").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "audio").mkdir()
    (root / "video" / gpu_check.DEFAULT_CLIP).write_bytes(b"")
    (root / gpu_check.STREAM_AUDIO).write_bytes(b"")
    return root


def options_for(tmp_path, steps, budget_s=60.0):
    return gpu_check.Options(out=tmp_path / "out", work=tmp_path / "work", data=None, clip=None, steps=list(steps),
                             quick=False, budget_s=budget_s, train_minutes=3.0, pack=False)


def fake_step(name, code, timeout_s=10.0, **kwargs):
    return Step(name, f"fake {name}", timeout_s, timeout_s, lambda ctx: [Command([PY, "-c", code])], **kwargs)


# ------------------------------------------------------------------------------------------- steps and options

def test_the_step_list_covers_the_check_in_order():
    assert gpu_check.STEP_NAMES == ("env", "preprocess", "build", "cuda_tests", "smoke", "bench_encoding",
                                    "bench_render", "bench_train_step", "train", "evaluate", "bench_avatar",
                                    "train_gaussian", "evaluate_gaussian", "bench_gaussian")
    for group in gpu_check.GROUPS.values():
        assert set(group) <= set(gpu_check.STEP_NAMES)
    names = gpu_check.STEP_NAMES
    for step in gpu_check.STEPS:  # a step only needs steps that come before it
        assert all(names.index(need) < names.index(step.name) for need in step.needs)
        assert step.timeout_s > 0 and step.quick_timeout_s > 0
    assert gpu_check.step_by_name("preprocess").background
    assert all(gpu_check.step_by_name(n).exclusive for n in names if n.startswith("bench_") or n == "train")


def test_only_and_skip_select_steps_and_groups():
    assert gpu_check.select_steps(["cuda_tests,build"], None) == ["build", "cuda_tests"]
    assert gpu_check.select_steps(["env", "smoke"], None) == ["env", "smoke"]
    assert gpu_check.select_steps(None, ["real"]) == ["env", "build", "cuda_tests", "smoke", "bench_encoding",
                                                      "bench_render", "bench_train_step"]
    assert gpu_check.select_steps(["benches"], ["bench_avatar"]) == ["bench_encoding", "bench_render",
                                                                     "bench_train_step", "bench_gaussian"]
    assert gpu_check.select_steps(["gaussian"], None) == ["train_gaussian", "evaluate_gaussian", "bench_gaussian"]
    assert gpu_check.select_steps(None, None) == list(gpu_check.STEP_NAMES)


def test_unknown_steps_are_usage_errors_that_list_the_steps(capsys, no_cuda_probe):
    with pytest.raises(ValueError, match="unknown step 'bild'.*steps: env, preprocess, build"):
        gpu_check.select_steps(["env,bild"], None)
    for argv in (["--only", "nope"], ["--skip", "env,nope"]):
        with pytest.raises(SystemExit) as exit_info:
            gpu_check.main([*argv, "--dry-run"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "unknown step 'nope'" in err and "groups: tests, benches, real" in err
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--only", "env", "--skip", "env", "--dry-run"])
    assert exit_info.value.code == 2 and "no step to run" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--budget-minutes", "0", "--dry-run"])
    assert exit_info.value.code == 2


def test_dry_run_prints_every_step_and_its_commands_without_a_gpu(tmp_path, data, capsys, no_cuda_probe):
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path / "out"), "--data", str(data)]) == 0
    text = capsys.readouterr().out
    for name in gpu_check.STEP_NAMES:
        assert f" {name} " in text
    for expected in ("-m cuda_ext.build --ops trihash --kind all", "--cuda-only", "tests/test_device_smoke.py",
                     "bench_encoding.py --backends cpu cuda", "bench_render.py --device cuda",
                     "bench_train_step.py", "preprocess " + str(data / "video" / gpu_check.DEFAULT_CLIP),
                     "train.budget_minutes=3", "evaluate ", "--max-frames 8", "bench_avatar.py",
                     "--stream-audio", f"SYNCTALK_TEST_DATA={data}", "stops at 8 min"):
        assert expected in text, expected
    assert not (tmp_path / "out").exists()  # a dry run writes nothing

    assert gpu_check.main(["--dry-run", "--quick", "--skip", "benches", "--data", str(data),
                           "--budget-minutes", "5"]) == 0
    text = capsys.readouterr().out
    assert "train.budget_minutes=1" in text and "bench_render.py" not in text
    assert "bench_render      skipped" in text and "stops at 5 min" in text


def test_dry_run_says_when_no_clip_is_found(tmp_path, capsys, no_cuda_probe):
    assert gpu_check.main(["--dry-run", "--clip", str(tmp_path / "missing.mp4"), "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "clip NOT FOUND" in text and "no real clip: this step will fail" in text


def test_out_defaults_to_the_device_tools_OUT_and_packs_there(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path / "device_out"))
    options, _ = gpu_check.parse_options([])
    assert options.out == (tmp_path / "device_out").resolve() and options.pack
    options, _ = gpu_check.parse_options(["--out", str(tmp_path / "mine")])
    assert options.out == (tmp_path / "mine").resolve() and not options.pack
    monkeypatch.delenv("OUT")
    options, _ = gpu_check.parse_options(["--quick"])
    assert options.out.name == "gpu_check_out" and options.train_minutes == 1.0 and not options.pack


# --------------------------------------------------------------------------------------------- no GPU: refuse

def test_refuses_with_exit_2_when_no_cuda_gpu_is_visible(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "cuda_status", lambda: (False, "torch sees no CUDA GPU"))
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "refusing to run: torch sees no CUDA GPU" in err and "--dry-run" in err
    assert not (tmp_path / "out").exists()


def test_the_cuda_probe_explains_a_cpu_only_machine():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    ok, detail = gpu_check.cuda_status()
    assert not ok and torch.__version__ in detail
    assert ("CPU-only build" in detail) if torch.version.cuda is None else ("is_available() is False" in detail)


# ------------------------------------------------------------------------------------------------- running

def test_a_step_past_its_time_limit_is_recorded_as_a_timeout(tmp_path):
    ctx = gpu_check.make_context(options_for(tmp_path, []))
    step = fake_step("sleepy", "import time; print('started', flush=True); time.sleep(5)", timeout_s=1.0)
    start = time.monotonic()
    result = gpu_check.run_step(step, ctx, deadline=time.monotonic() + 1.0)
    assert result.status == "timeout" and result.bad
    assert time.monotonic() - start < 4.5 and 0.9 <= result.seconds < 4.5
    assert "started" in result.tail and "time limit" in result.tail
    assert (ctx.out / result.log).is_file()


def test_a_failing_step_keeps_its_exit_code_and_log_tail(tmp_path):
    ctx = gpu_check.make_context(options_for(tmp_path, []))
    step = fake_step("broken", "import sys; print('something broke'); sys.exit(3)")
    result = gpu_check.run_step(step, ctx, deadline=time.monotonic() + 30)
    assert result.status == "failed" and result.reason.startswith("exit 3 from")
    assert "something broke" in result.tail


def test_figures_are_read_and_a_hidden_failure_is_caught(tmp_path):
    ctx = gpu_check.make_context(options_for(tmp_path, []))

    def figures(ctx, text):
        last = text.strip().splitlines()[-1]
        if not last.startswith("rows "):
            raise gpu_check.StepCheckFailed("no rows")
        return {"rows": int(last.split()[1])}

    good = fake_step("good", "print('rows', 3)", figures=figures)
    assert gpu_check.run_step(good, ctx, time.monotonic() + 30).figures == {"rows": 3}
    empty = fake_step("empty", "print('nothing')", figures=figures)
    result = gpu_check.run_step(empty, ctx, time.monotonic() + 30)
    assert result.status == "failed" and result.reason == "no rows" and "nothing" in result.tail


def test_parallel_commands_share_one_log_and_one_limit(tmp_path):
    ctx = gpu_check.make_context(options_for(tmp_path, []))
    step = Step("both", "two at once", 10, 10, lambda ctx: [Command([PY, "-c", "import time; time.sleep(1); "
                                                                               "print('first')"]),
                                                           Command([PY, "-c", "import time; time.sleep(1); "
                                                                               "print('second')"])],
                parallel=True)
    result = gpu_check.run_step(step, ctx, time.monotonic() + 30)
    log = (ctx.out / result.log).read_text()
    assert result.status == "ok" and result.seconds < 1.9  # side by side, not one after the other
    assert "first" in log and "second" in log and not list(ctx.logs.glob("*.part"))


def test_dependencies_background_steps_and_the_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "MIN_STEP_S", 0.5)
    steps = (fake_step("slow_bg", "import time; time.sleep(0.5); print('bg done')", background=True),
             fake_step("after", "print('after')", needs=("slow_bg",)),
             fake_step("broken", "import sys; sys.exit(1)"),
             fake_step("dependent", "print('never')", needs=("broken",)),
             fake_step("left_out", "print('never')"))
    names = ["slow_bg", "after", "broken", "dependent"]
    options = options_for(tmp_path, names)
    results = {r.name: r for r in gpu_check.run_plan(options, gpu_check.make_context(options), steps,
                                                    echo=lambda line: None)}
    assert [results[n].status for n in names + ["left_out"]] == ["ok", "ok", "failed", "skipped", "skipped"]
    assert "needs broken" in results["dependent"].reason and results["dependent"].bad
    assert results["left_out"].requested_skip and not results["left_out"].bad

    steps = (fake_step("long", "import time; time.sleep(5)", timeout_s=30), fake_step("next", "print(1)"))
    options = options_for(tmp_path, ["long", "next"], budget_s=1.5)
    results = gpu_check.run_plan(options, gpu_check.make_context(options), steps, echo=lambda line: None)
    assert results[0].status == "timeout" and "budget" in results[0].reason and results[0].seconds < 4
    assert results[1].status == "skipped" and "budget" in results[1].reason and results[1].bad


def test_real_clip_steps_fail_clearly_without_data(tmp_path):
    options = options_for(tmp_path, ["clip_step"])
    steps = (fake_step("clip_step", "print(1)", needs_data=True),)
    (result,) = gpu_check.run_plan(options, gpu_check.make_context(options), steps, echo=lambda line: None)
    assert result.status == "failed" and "--data DIR" in result.reason and "--skip real" in result.reason


# ------------------------------------------------------------------------------------------------- the report

def test_the_report_has_the_table_and_the_tails_of_failures(tmp_path):
    results = [
        StepResult("env", "ok", 1.25, figures={"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.13.0"},
                   log="logs/env.log"),
        StepResult("build", "failed", 30.0, reason="CUDA kernels not built: march cuda: no nvcc",
                   log="logs/build.log", tail="error: cuda_runtime_api.h: No such file", commands=["python -m x"]),
        StepResult("train", "timeout", 300.0, reason="stopped at its time limit", log="logs/train.log",
                   tail="head step 812/20000 | a|b"),
        StepResult("smoke", "skipped", reason="not selected (--only/--skip)", requested_skip=True),
    ]
    md, js = gpu_check.write_report(results, tmp_path, {"date": "2026-01-01", "machine": "H100", "commit": "abc"})
    text = md.read_text()
    assert "| step | status | seconds | key figures | notes |" in text
    assert "| env | ok | 1.2 | gpu: NVIDIA H100 80GB HBM3; torch: 2.13.0 |  |" in text or \
        "| env | ok | 1.3 | gpu: NVIDIA H100 80GB HBM3; torch: 2.13.0 |  |" in text
    assert "| build | failed | 30.0 |  | CUDA kernels not built: march cuda: no nvcc |" in text
    assert "| train | timeout | 300.0 |" in text and "| smoke | skipped | 0.0 |" in text
    assert "## build: failed" in text and "error: cuda_runtime_api.h: No such file" in text
    assert "## train: timeout" in text and "head step 812/20000 | a|b" in text  # the tail verbatim in a block
    assert "## smoke" not in text and "## env" not in text
    assert "- machine: H100" in text and "1 ok, 1 failed, 1 skipped, 1 timeout" in text
    payload = json.loads(js.read_text())
    assert payload["ok"] is False and payload["counts"] == {"ok": 1, "failed": 1, "skipped": 1, "timeout": 1}
    steps = {s["name"]: s for s in payload["steps"]}
    assert steps["train"]["tail"] == "head step 812/20000 | a|b" and steps["env"]["figures"]["torch"] == "2.13.0"
    assert steps["smoke"]["requested_skip"] is True


def test_pack_leaves_a_few_files(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "env.log").write_text("hello")
    (logs / "bench_render.json").write_text("{}")
    (logs / "evaluate_sheet.png").write_bytes(b"png")
    archive = gpu_check.pack_logs(tmp_path)
    assert not logs.exists() and (tmp_path / "evaluate_sheet.png").is_file()
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["logs", "logs/bench_render.json", "logs/env.log"]


# ---------------------------------------------------------------------------------------- reading the outputs

def test_build_figures_fail_when_a_cuda_kernel_did_not_build(tmp_path):
    ctx = gpu_check.make_context(options_for(tmp_path, []))
    ok_log = ("op       kind  ok  status\ntrihash  cpu   ok  cached\ntrihash  cuda  ok  built in 40 s\n"
              "NERFACC_CUDA ok\n")
    assert gpu_check._build_figures(ctx, ok_log) == {"cuda": "1/1 built", "cpu": "1/1 built", "nerfacc cuda": "ok"}
    with pytest.raises(gpu_check.StepCheckFailed, match="march cuda: no nvcc"):
        gpu_check._build_figures(ctx, ok_log + "march    cuda  -   no nvcc (install the CUDA toolkit)\n")
    with pytest.raises(gpu_check.StepCheckFailed, match="no build table"):
        gpu_check._build_figures(ctx, "Traceback ...")


def test_benchmark_figures_need_cuda_rows(tmp_path):
    ctx = gpu_check.make_context(options_for(tmp_path, []))
    ctx.logs.mkdir(parents=True)
    rows = [{"encoding": "trihash", "backend": b, "points": 262144, "median_s": s, "points_per_s": 262144 / s}
            for b, s in (("cpu", 0.4), ("cuda", 0.002))]
    (ctx.logs / "bench_encoding.json").write_text(json.dumps({"rows": rows}))
    assert gpu_check._bench_encoding_figures(ctx, "") == {"trihash cuda Mpoints/s @262144": 131.1,
                                                          "trihash cuda/cpu": "200x"}
    (ctx.logs / "bench_encoding.json").write_text(json.dumps({"rows": rows[:1]}))
    with pytest.raises(gpu_check.StepCheckFailed, match="no cuda rows"):
        gpu_check._bench_encoding_figures(ctx, "")
    text = ("| render side | frames/s | ms/frame | portrait frames/s |\n|---:|---:|---:|---:|\n"
            "| 256 | 41.2 | 24 | 20.5 |\n\nstream at 256 px: 275 frames, 25.0 frames/s\n")
    assert gpu_check._bench_avatar_figures(ctx, text) == {"256 px frames/s": 41.2, "256 px portrait frames/s": 20.5,
                                                          "stream 256 px": "275 frames, 25.0 frames/s"}


def test_cuda_test_files_are_found_and_exclude_the_smoke_test():
    files = gpu_check.cuda_test_files()
    assert "tests/render/test_cuda_kernels.py" in files and "tests/cuda_ext/test_trihash.py" in files
    assert "tests/test_device_smoke.py" not in files and "tests/test_gpu_check.py" not in files


# ------------------------------------------------------------------------------------------- the pytest plugin

def test_the_plugin_fails_cuda_skips_and_keeps_other_skips(tmp_path):
    (tmp_path / "test_fake.py").write_text(
        "import pytest\n"
        "@pytest.mark.skipif(True, reason='needs a CUDA GPU (torch.cuda.is_available() is False)')\n"
        "def test_kernel_on_cuda():\n    pass\n"
        "def test_cpu_error_path():\n    pytest.skip('this machine has a GPU; the error path is for CPU-only')\n"
        "def test_plain_math():\n    assert 1 + 1 == 2\n")
    env = {"PYTHONPATH": str(REPO / "scripts"), "PATH": "/usr/bin:/bin"}
    base = [PY, "-m", "pytest", "-p", "gpu_check_plugin", "-p", "no:cacheprovider", "-q", "-rs", "test_fake.py"]
    run = subprocess.run(base, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 passed, 1 skipped, 1 error" in run.stdout and "every CUDA test must run" in run.stdout
    run = subprocess.run(base + ["--cuda-only"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "2 deselected, 1 error" in run.stdout and "skipped" not in run.stdout.splitlines()[-1], run.stdout


# -------------------------------------------------------------------------------------------- the shell wrapper

def test_the_wrapper_parses_and_prints_the_plan(tmp_path):
    script = REPO / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=30).returncode == 0
    run = subprocess.run(["bash", str(script), "--dry-run", "--out", str(tmp_path / "out"), "--skip", "real"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "GPU check plan (dry run" in run.stdout and "cuda_ext.build" in run.stdout
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ the plan's commands match their tools

def test_the_plans_overrides_and_flags_exist(tmp_path, data):
    from synctalk.config import SyncTalkConfig, load_config

    options, _ = gpu_check.parse_options(["--data", str(data), "--out", str(tmp_path / "out")])
    ctx = gpu_check.make_context(options)
    for step in gpu_check.STEPS:
        for command in step.commands(ctx):
            argv = command.argv
            if argv[1:3] == ["-m", "synctalk.cli.main"]:  # every KEY=VALUE is a real config key
                load_config(SyncTalkConfig, "default", [a for a in argv if "=" in a and not a.startswith("-")])
            script = next((Path(a) for a in argv if a.endswith(".py") and Path(a).parent == REPO / "scripts"), None)
            if script is not None:  # every --flag given to a script is one its argparse declares
                text = script.read_text()
                for flag in (a for a in argv if a.startswith("--")):
                    assert f'"{flag}"' in text, f"{script.name} has no {flag}"


def test_the_wrapper_refuses_a_cpu_wheel_index_and_a_machine_without_gpu(tmp_path):
    import torch

    script = str(REPO / "scripts" / "gpu_check.sh")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SYNCTALK_VENV": str(tmp_path / "venv"),
           "SYNCTALK_CUDA_TORCH_INDEX": "https://example.invalid/whl/cpu"}
    run = subprocess.run(["bash", script], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert run.returncode == 3 and "is a CPU wheel index" in run.stderr
    assert not (tmp_path / "venv").exists()  # refused before making anything
    if torch.cuda.is_available():
        return
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SYNCTALK_PYTHON": PY}
    run = subprocess.run(["bash", script, "--out", str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=120, env=env, cwd=tmp_path)
    assert run.returncode == 2 and "refusing to run" in run.stderr, run.stderr
    assert not (tmp_path / "out").exists()


def test_a_stopped_check_still_writes_its_report(tmp_path):
    """SIGTERM (a time limit outside the check) stops the running step's processes and leaves the report."""
    import signal

    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO / 'scripts')!r})\n"
        "import gpu_check as g\n"
        "g.cuda_status = lambda: (True, 'fake GPU')\n"
        "code = \"import time; print('sleeping', flush=True); time.sleep(60)\"\n"
        "sleepy = g.Step('env', 'sleeps', 120, 120, lambda ctx: [g.Command([sys.executable, '-c', code])])\n"
        "g.STEPS = (sleepy,) + g.STEPS[1:]\n"
        "sys.exit(g.main(sys.argv[1:]))\n")
    out = tmp_path / "out"
    process = subprocess.Popen([PY, str(driver), "--only", "env", "--out", str(out), "--work", str(tmp_path / "w")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "logs" / "env.log"
    try:
        for _ in range(200):
            if log.is_file() and "sleeping" in log.read_text():
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    text = (out / "report.md").read_text()
    assert "| env | failed |" in text and "interrupted while running" in text and "sleeping" in text


def test_a_given_subject_replaces_the_preprocess_step(tmp_path, capsys, no_cuda_probe):
    subject = tmp_path / "subject_macron"
    subject.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--dry-run", "--subject", str(subject)])
    assert exit_info.value.code == 2 and "not a subject folder" in capsys.readouterr().err
    (subject / "meta.json").write_text("{}")
    options, _ = gpu_check.parse_options(["--subject", str(subject), "--clip", str(tmp_path / "none.mp4"),
                                          "--work", str(tmp_path / "w")])
    assert "preprocess" not in options.steps and "train" in options.steps
    ctx = gpu_check.make_context(options)
    assert ctx.subject == subject.resolve() and ctx.workspace == (tmp_path / "w" / "ws_macron").resolve()
    assert gpu_check.main(["--dry-run", "--subject", str(subject), "--clip", str(tmp_path / "none.mp4")]) == 0
    text = capsys.readouterr().out
    assert f"train {subject.resolve()} -w" in text and "no real clip" not in text
    assert "preprocess        skipped" in text
