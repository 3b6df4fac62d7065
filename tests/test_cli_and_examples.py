"""The command line and every example script."""
import pathlib
import subprocess
import sys
import textwrap

import pytest

from convc.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs(example):
    result = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


@pytest.mark.parametrize("stage, marker", [("traced", "padding="), ("optimized", "pad_lo="),
                                           ("llvm", "define void @convc_main"), ("asm", "convc_main:")])
def test_dump_stages(stage, marker, capsys):
    assert main(["dump", str(ROOT / "examples" / "conv_stack.py"), "--stage", stage]) == 0
    assert marker in capsys.readouterr().out


def test_run_reports_outputs_and_the_reference_verdict(capsys):
    assert main(["run", str(ROOT / "examples" / "conv_stack.py")]) == 0
    out = capsys.readouterr().out
    assert "output 0: float32[2, 8, 15, 15]" in out
    assert "reference: match, 1 output(s) within |out - ref| <= atol + rtol*|ref| with atol=1e-05, rtol=0.0001" in out


def test_missing_or_empty_model_files_are_clear_errors(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty.py").write_text("x = 1\n")
    assert main(["dump", str(tmp_path / "empty.py")]) == 2
    assert "defines no callable `model`" in capsys.readouterr().err
    (tmp_path / "noinputs.py").write_text("from convc import ops\nmodel = ops.relu\n")
    assert main(["run", str(tmp_path / "noinputs.py")]) == 2
    assert "defines no `example_inputs`" in capsys.readouterr().err


def test_invalid_models_report_the_convc_error(tmp_path, capsys):
    (tmp_path / "bad.py").write_text(
        "import numpy as np\nfrom convc import ops\n"
        "model = lambda x: ops.conv2d(x, np.zeros((4, 3, 3, 3), np.float32), groups=2)\n"
        "example_inputs = (np.zeros((1, 4, 8, 8), np.float32),)\n")
    assert main(["run", str(tmp_path / "bad.py")]) == 1
    assert "ConvcError: conv2d:" in capsys.readouterr().err


def test_help_and_console_script(tmp_path):
    # run outside the checkout so that the installed package is the one imported
    result = subprocess.run([sys.executable, "-m", "convc", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "dump" in result.stdout and "example_inputs" in result.stdout


def _model_file(tmp_path, reference, name="model.py"):
    """A model file: relu and tanh of a fixed 2x3 input, with the given `reference` body."""
    path = tmp_path / name
    path.write_text("import numpy as np\nfrom convc import ops\n"
                    "model = lambda x: (ops.relu(x), ops.tanh(x))\n"
                    "example_inputs = (np.array([[-1.0, 0.0, 0.5], [2.0, -3.0, np.nan]], np.float32),)\n"
                    f"def reference(x):\n    return {reference}\n")
    return str(path)


@pytest.mark.parametrize("reference, message", [
    ("np.maximum(x, 0), np.tanh(x) + np.eye(2, 3) * 1e-3",
     "output 1: 2 of 6 values differ; worst at [0, 0]: -0.7615942 vs reference -0.7605942 (abs difference 0.001)"),
    ("np.maximum(x, 0), np.tanh(x).T", "output 1: shape [2, 3], but `reference` gives shape [3, 2]"),
    ("np.maximum(x, 0)", "the model returns 2 output(s), `reference` returns 1"),
    ("np.maximum(x, 0), np.tanh(x), x", "the model returns 2 output(s), `reference` returns 3"),
    ("np.maximum(x, 0), np.nan_to_num(np.tanh(x))",
     "output 1: 1 of 6 values differ; worst at [1, 2]: nan vs reference 0"),
])
def test_run_fails_when_the_outputs_differ_from_the_reference(tmp_path, capsys, reference, message):
    assert main(["run", _model_file(tmp_path, reference)]) == 1
    captured = capsys.readouterr()
    assert message in captured.err
    assert "convc: error:" in captured.err and "time per call" not in captured.out


def test_run_passes_a_matching_reference_with_nan_where_the_reference_has_nan(tmp_path, capsys):
    assert main(["run", _model_file(tmp_path, "[np.maximum(x, 0), np.tanh(x.astype(np.float64))]")]) == 0
    out = capsys.readouterr().out
    assert "reference: match, 2 output(s)" in out and "time per call" in out


def test_run_tolerance_options(tmp_path, capsys):
    model = _model_file(tmp_path, "np.maximum(x, 0) * (1 + 1e-3), np.tanh(x)")
    assert main(["run", model]) == 1
    assert "atol=1e-05, rtol=0.0001" in capsys.readouterr().err
    assert main(["run", model, "--rtol", "2e-3"]) == 0
    assert "atol=1e-05, rtol=0.002" in capsys.readouterr().out
    assert main(["run", model, "--atol", "0.01"]) == 0
    capsys.readouterr()
    assert main(["run", model, "--atol", "-1"]) == 2
    assert "--atol -1 must be a number >= 0" in capsys.readouterr().err


FAILING_MODEL = textwrap.dedent("""\
    import numpy as np
    from convc import ops


    def scale(x):
        return x * (1 / 0)


    def model(x):
        return ops.relu(scale(x))


    example_inputs = (np.ones((1, 2, 4, 4), np.float32),)
    """)


def _assert_user_traceback(err, file, line, function):
    assert f'File "{file}", line {line}, in {function}' in err, err
    assert "ZeroDivisionError: division by zero" in err
    assert "runpy" not in err and "cli.py" not in err and "tracing.py" not in err


def test_an_exception_in_the_model_shows_the_users_frames(tmp_path, capsys):
    (tmp_path / "failing.py").write_text(FAILING_MODEL)
    assert main(["run", str(tmp_path / "failing.py")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"convc: error: ZeroDivisionError while tracing `model` of {tmp_path / 'failing.py'}:")
    _assert_user_traceback(err, tmp_path / "failing.py", 10, "model")
    _assert_user_traceback(err, tmp_path / "failing.py", 6, "scale")


def test_the_console_script_shows_the_users_frames(tmp_path):
    (tmp_path / "failing.py").write_text(FAILING_MODEL)
    script = pathlib.Path(sys.executable).with_name("convc")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "convc"]
    result = subprocess.run(command + ["dump", "failing.py"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    _assert_user_traceback(result.stderr, "failing.py", 6, "scale")
    assert "Traceback (most recent call last):" in result.stderr and "ops.relu(scale(x))" in result.stderr


def test_frames_of_the_users_other_modules_are_kept(tmp_path, capsys, monkeypatch):
    (tmp_path / "helper.py").write_text("def weights():\n    raise RuntimeError('no weights file')\n")
    (tmp_path / "m.py").write_text("import helper\nw = helper.weights()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["dump", str(tmp_path / "m.py")]) == 1
    err = capsys.readouterr().err
    assert f'File "{tmp_path / "m.py"}", line 2, in <module>' in err
    assert f'File "{tmp_path / "helper.py"}", line 2, in weights' in err and "RuntimeError: no weights file" in err
    assert "importlib" not in err and "runpy" not in err


def test_an_unexpected_error_inside_convc_is_not_blamed_on_the_model(tmp_path, monkeypatch):
    import convc.tracing
    (tmp_path / "m.py").write_text(
        "import numpy as np\nfrom convc import ops\nmodel = ops.relu\nexample_inputs = np.ones(3, np.float32)\n")
    monkeypatch.setattr(convc.tracing, "get_op", {}.__getitem__)  # a KeyError raised in convc's own frame
    with pytest.raises(KeyError):
        main(["run", str(tmp_path / "m.py")])


@pytest.mark.parametrize("source, where, frame", [
    ("import numpy as np\nvalue = int('seven')\n", "ValueError at import", 'line 2, in <module>'),
    ("import numpy as np\nfrom convc import ops\nmodel = ops.relu\n"
     "def example_inputs():\n    return np.ones(3, np.float32).reshape(2)\n",
     "ValueError in example_inputs()", "line 5, in example_inputs"),
    ("import numpy as np\nfrom convc import ops\nmodel = ops.relu\nexample_inputs = np.ones(3, np.float32)\n"
     "def reference(x):\n    return x[5]\n", "IndexError in `reference`", "line 6, in reference"),
    ("def model(x)\n    return x\n", "SyntaxError at import", "line 1"),
])
def test_exceptions_anywhere_in_the_model_file_name_the_phase_and_the_line(tmp_path, capsys, source, where, frame):
    (tmp_path / "m.py").write_text(source)
    assert main(["run", str(tmp_path / "m.py")]) == 1
    err = capsys.readouterr().err
    assert f"convc: error: {where} of {tmp_path / 'm.py'}:\n" in err, err
    assert f'File "{tmp_path / "m.py"}", {frame}' in err and "runpy" not in err


def test_bench_help_lists_every_benchmark(capsys):
    from convc.bench import SHAPES
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(shape.name in out for shape in SHAPES)
    assert "resnet_3x3      conv2d input [1, 64, 56, 56] weight [64, 64, 3, 3] padding 1" in out


def test_bench_rejects_unknown_names_even_beside_known_ones(capsys):
    assert main(["bench", "--only", "resnet_3x3", "resnet_9x9"]) == 2
    err = capsys.readouterr().err
    assert "no benchmark named resnet_9x9; choose from resnet_3x3, resnet_1x1" in err


TORCH_MODEL = """
import torch
class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.act = torch.nn.ReLU6()
    def forward(self, x):
        return self.act(self.conv(x)) * 0.5
torch.manual_seed(0)
model = Block().eval()
example_inputs = (torch.randn(1, 3, 10, 12),)
"""


def test_dump_and_run_import_a_torch_module(tmp_path, capsys):
    """A model file whose `model` is a torch.nn.Module goes through convc.from_torch; without a
    `reference`, `convc run` judges it against torch's own output."""
    pytest.importorskip("torch")
    (tmp_path / "block.py").write_text(TORCH_MODEL)
    assert main(["dump", str(tmp_path / "block.py"), "--stage", "traced"]) == 0
    assert "conv2d(" in capsys.readouterr().out
    assert main(["run", str(tmp_path / "block.py")]) == 0
    out = capsys.readouterr().out
    assert "output 0: float32[1, 16, 10, 12]" in out and "reference: match, 1 output(s)" in out
