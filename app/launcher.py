"""`sparsort`: the desktop app, or the engine's command line for its subcommands.

    sparsort                                  the demo recording, ready to train
    sparsort RECORDING [--fs … --n-channels … --dtype …] [--stream NAME] [--probe FILE]
    sparsort SORT_DIR                         a phy folder from `sparsort sort`, or a saved session
    sparsort --screenshot FILE.png [--train-steps N] [RECORDING]
    sparsort sort|simulate|evaluate …         engine.cli, without loading Qt

The model flags of `sparsort sort` (--n-filters, --n-iterations, ...) are
accepted too: they fill in the Training panel.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_SCREENSHOT_STEPS = 30


def whitening(word: str) -> bool | None:
    """`--whiten auto|on|off` as TrainingConfig.whiten (None: automatic)."""
    from engine.pipeline.training import WHITEN_WORDS

    if word not in WHITEN_WORDS:
        raise argparse.ArgumentTypeError(f"--whiten takes auto, on or off, got {word!r}")
    return WHITEN_WORDS[word]


# (flag, TrainingConfig field, type): the same names as `sparsort sort` uses.
MODEL_FLAGS = (
    ("--n-filters", "n_filters", int),
    ("--n-taps", "n_taps", int),
    ("--n-iterations", "n_iterations", int),
    ("--lambda-scale", "lambda_scale", float),
    ("--init", "init", str),
    ("--learning-rate", "learning_rate", float),
    ("--batch-size", "batch_size", int),
    ("--window-ms", "window_ms", float),
    ("--epochs", "n_epochs", float),
    ("--settle-tolerance", "settle_tolerance", float),
    ("--seed", "seed", int),
    ("--device", "device", str),
    ("--solver", "solver", str),
    ("--radius-um", "radius_um", float),
    ("--whiten", "whiten", whitening),
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from engine.cpu import one_blas_thread_for_the_process

    one_blas_thread_for_the_process()  # before numpy loads OpenBLAS (engine/cpu.py says why)
    from engine.cli import SUBCOMMANDS

    if argv and argv[0] in SUBCOMMANDS:
        from engine.cli import main as cli_main

        return cli_main(argv)
    arguments = parse_arguments(argv)
    try:
        config = training_config(arguments)
    except ValueError as error:  # ConfigError: a message for the person, as the CLI prints it
        print(f"sparsort: error: {error}", file=sys.stderr)
        return 2
    return run_gui(arguments, config)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    from engine.cli import SUBCOMMANDS

    parser = argparse.ArgumentParser(
        prog="sparsort",
        description="Spike sorting by convolutional dictionary learning. "
        f"Without a subcommand ({', '.join(sorted(SUBCOMMANDS))}) the desktop app opens.",
    )
    parser.add_argument("path", nargs="?", help="recording file, phy folder or session folder (default: the demo)")
    parser.add_argument("--fs", "--sampling-rate", dest="sampling_rate", type=float, help="sampling rate in Hz")
    parser.add_argument("--n-channels", type=int, help="channel count of a raw binary")
    parser.add_argument("--dtype", help="sample type of a raw binary (int16, uint16, float32, float64)")
    parser.add_argument("--stream", help="which stream of a SpikeGLX / Open Ephys folder or NWB file")
    parser.add_argument("--probe", help="probeinterface JSON or .prb file with the channel positions")
    parser.add_argument("--screenshot", metavar="FILE.png", help="train, save a picture of the window, exit")
    parser.add_argument(
        "--train-steps", type=int, default=DEFAULT_SCREENSHOT_STEPS, help="training steps before the screenshot"
    )
    model = parser.add_argument_group("model (fills in the Training panel)")
    for flag, field, kind in MODEL_FLAGS:
        model.add_argument(flag, dest=field, type=kind)
    return parser.parse_args(argv)


def training_config(arguments: argparse.Namespace):
    """The TrainingConfig the model flags describe (defaults for the rest); raises ConfigError."""
    from engine.pipeline.training import TrainingConfig

    given = {field: getattr(arguments, field) for _flag, field, _kind in MODEL_FLAGS if getattr(arguments, field) is not None}
    config = TrainingConfig.from_dict({**TrainingConfig().to_dict(), **given})
    config.validate()
    return config


def run_gui(arguments: argparse.Namespace, config) -> int:
    from PyQt6.QtCore import QEvent, QEventLoop
    from PyQt6.QtWidgets import QApplication

    from app.platform_check import display_problem

    if QApplication.instance() is None:
        problem = display_problem()
        if problem is not None:
            print(problem, file=sys.stderr)
            return 1

    from app.main_window import MainWindow
    from app.theme import apply_theme

    # Inside an application that is already running (a test, a notebook), its look and
    # its lifetime are not ours: no theme, and no quitting it when the window closes.
    owns_app = QApplication.instance() is None
    app = QApplication.instance() or QApplication(sys.argv[:1])
    if owns_app:
        app.setApplicationName("Sparsort")
        app.setOrganizationName("Sparsort")
        apply_theme(app)
    if owns_app:
        # The same policy as `sparsort sort`: torch gets the cores other programs leave free.
        from engine.cpu import configure_threads

        configure_threads()
    window = MainWindow()
    window.session.set_training_config(config)
    window.show()
    screenshot = None
    if arguments.screenshot:
        from app.screenshot import ScreenshotTaker

        screenshot = ScreenshotTaker(window, arguments.screenshot, arguments.train_steps)
    raw_parameters = {
        key: value
        for key, value in (
            ("sampling_rate", arguments.sampling_rate),
            ("n_channels", arguments.n_channels),
            ("dtype", arguments.dtype),
            ("stream", arguments.stream),
            ("probe", arguments.probe),
        )
        if value is not None
    }
    if arguments.path:
        window.open_path(arguments.path, **raw_parameters)
    else:
        window.open_demo()
    # The window closing ends the run even if another top-level window (a dialog) is open.
    if owns_app:
        window.closed.connect(app.quit)
        exit_code = app.exec()
    else:
        loop = QEventLoop()
        window.closed.connect(loop.quit)
        exit_code = loop.exec()
    if screenshot is not None:
        exit_code = screenshot.exit_code
    # Deleted here, while the application still runs: Qt's connections and shortcuts hold references to
    # the window, so Python alone never frees it. Left to Python's exit, it was taken apart in whatever
    # order the interpreter tore down (a test session's QApplication already gone: CI, exit 139).
    window.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
