"""What `agemetric run` shows on a terminal: a header saying what runs, bars that leave nothing
behind, notes above them, the total time and a closing line naming everything written."""

import re

import pytest
from typer.testing import CliRunner

from agemetric.cli import _common, app
from agemetric.cli.run import closing_line

runner = CliRunner()
TINY = (
    "--set dataset_options.n=90 --epochs 2 --image-size 32 --batch-size 16 --k 5 --set backbone_options.width=8"
).split()
CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def screen(output: str) -> list[str]:
    """The lines a terminal shows after ``output``: carriage returns, line feeds, cursor up
    (``ESC [ n A``), erase line (``ESC [ 2 K``); colours and cursor visibility ignored."""
    rows, row, col = [""], 0, 0
    pos = 0
    for match in [*CSI.finditer(output), None]:
        text = output[pos : match.start() if match else len(output)]
        for ch in text:
            if ch == "\r":
                col = 0
            elif ch == "\n":
                row, col = row + 1, 0
                if row == len(rows):
                    rows.append("")
            else:
                line = rows[row].ljust(col)
                rows[row] = line[:col] + ch + line[col + 1 :]
                col += 1
        if match is None:
            break
        pos = match.end()
        arg, code = match.groups()
        if code == "A":
            row = max(0, row - int(arg or 1))
        elif code == "K":
            rows[row] = ""
    return [line.rstrip() for line in rows]


@pytest.fixture(scope="module")
def terminal_run(tmp_path_factory):
    """One tiny run, its stdout and stderr both on a (pretend) 100-column terminal."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    patch = pytest.MonkeyPatch()
    for console in (_common.console, _common.err_console):
        patch.setattr(console, "_force_terminal", True)
    try:
        result = runner.invoke(app, ["run", *TINY, "--out", str(out)], env={"COLUMNS": "100"})
    finally:
        patch.undo()
    assert result.exit_code == 0, result.output
    return out, result.output


def test_the_bars_were_drawn_and_leave_nothing_behind(terminal_run):
    _, output = terminal_run
    assert "━" in output and "epoch 1/2" in output  # bars were drawn while it ran
    shown = screen(output)
    bars = [line for line in shown if re.search(r"━+\s+\d+/\d+", line) or " eta " in line]
    assert not bars, "\n".join(shown)


def test_the_screen_reads_in_order(terminal_run):
    out, output = terminal_run
    shown = [line for line in screen(output) if line.strip()]

    def where(pattern):
        found = [i for i, line in enumerate(shown) if re.search(pattern, line)]
        assert found, f"{pattern!r} not on screen:\n" + "\n".join(shown)
        return found[0]

    header = where(r"^run: backbone small_cnn \(weights none\), loss revised-contrastive \(margin 4\)")
    assert re.search(r"optimiser adam \(lr 0.001\), batch 16, 2 epochs; device cpu, bf16 (on|off)", shown[header + 1])
    data = where(r"^synthetic \(n=90, seed=0\): 65 train / 7 calibration / 18 test images \(random split\), 32 px")
    epochs = where(r"^epoch 1/2: loss "), where(r"^epoch 2/2: loss ")
    table = where(r"MAE \(years\)")
    done = where(r"^Done in \d+\.\d s \(data .* s, training .* s, evaluation .* s\)\. Run folder: ")
    assert header < data < epochs[0] < epochs[1] < table < done
    closing = "".join(shown[done:])  # the closing line may wrap at 100 columns
    for name in ("metrics.json", "predictions.csv", "model.pt", "config.toml", "figures/", "report.md"):
        assert name in closing
    assert (out / "figures").is_dir() and (out / "report.md").is_file()


def test_the_closing_line_lists_what_was_written(tmp_path):
    metrics = {"seconds": {"load": 1.0, "train": 75.0, "evaluate": 2.0}}
    line = closing_line(tmp_path, metrics, 80.4)
    assert line.startswith("Done in 1 min 20 s (data 1.0 s, training 1 min 15 s, evaluation 2.0 s). Run folder: ")
    assert "figures/" not in line and "report.md" not in line  # not written (--set figures=false)
    (tmp_path / "figures").mkdir()
    (tmp_path / "report.md").write_text("")
    assert closing_line(tmp_path, metrics, 80.4).endswith(
        "(metrics.json, predictions.csv, model.pt, config.toml, figures/, report.md)"
    )


def test_duration():
    assert [_common.duration(s) for s in (8.44, 59.9, 61, 3599, 7450)] == [
        "8.4 s",
        "59.9 s",
        "1 min 01 s",
        "59 min 59 s",
        "2 h 04 min",
    ]
