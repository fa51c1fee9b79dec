"""`sparsort sort | simulate | evaluate`: the headless face of the engine.

`sparsort` with no subcommand starts the desktop app (see app/launcher.py);
these subcommands never import Qt.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SUBCOMMANDS = {"sort", "simulate", "evaluate"}


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as error:
        # RecordingError, ConfigError, PhyFolderError are ValueErrors with a
        # message meant for the person: show it without a traceback.
        print(f"sparsort: error: {error}", file=sys.stderr)
        return 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsort", description="Spike sorting by convolutional dictionary learning (CRsAE).")
    commands = parser.add_subparsers(dest="command", required=True)

    sort = commands.add_parser("sort", help="sort a recording into a phy folder")
    sort.add_argument("recording", nargs="?", help="raw binary (.bin/.dat) or .npy; parameters from flags, NAME.json or params.py")
    sort.add_argument("--demo", action="store_true", help="sort the built-in simulated demo recording")
    sort.add_argument("--out", required=True, help="phy folder to write (replaced atomically if it exists)")
    _add_recording_flags(sort)
    _add_model_flags(sort)
    sort.add_argument("--quiet", action="store_true", help="no progress bar")
    sort.set_defaults(handler=_run_sort)

    simulate = commands.add_parser("simulate", help="write a simulated recording and its ground truth")
    simulate.add_argument("--out", required=True, help="folder for recording.bin, recording.json and ground_truth/")
    simulate.add_argument("--preset", choices=["demo", "tetrode"], default="demo",
                          help="demo: 3 units, 10 kHz, 1 channel, 2 min; tetrode: 8 units, 30 kHz, 4 channels, 5 min")
    simulate.add_argument("--duration", type=float, help="seconds")
    simulate.add_argument("--channels", type=int, help="number of channels")
    simulate.add_argument("--units", type=int, help="number of neurons")
    simulate.add_argument("--rates", type=str, help="firing rate(s) in Hz: one number, or one per unit separated by commas")
    simulate.add_argument("--noise", type=float, help="noise standard deviation in µV")
    simulate.add_argument("--fs", type=float, help="sampling rate in Hz")
    simulate.add_argument("--seed", type=int, help="random seed")
    simulate.set_defaults(handler=_run_simulate)

    evaluate = commands.add_parser("evaluate", help="score a phy folder against ground truth")
    evaluate.add_argument(
        "sort_dir", help="phy folder written by `sparsort sort` (or any sorter), or a session folder the app saved"
    )
    evaluate.add_argument("--truth", required=True, help="ground-truth folder written by `sparsort simulate`")
    evaluate.add_argument("--tolerance-ms", type=float, default=0.4, help="spike matching tolerance (default 0.4 ms)")
    evaluate.set_defaults(handler=_run_evaluate)
    return parser


def _add_recording_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("recording (override NAME.json / params.py)")
    group.add_argument("--fs", "--sampling-rate", dest="sampling_rate", type=float, help="sampling rate in Hz")
    group.add_argument("--n-channels", dest="n_channels", type=int, help="channels interleaved in the file")
    group.add_argument("--dtype", help="int16, uint16, float32 or float64")
    group.add_argument("--offset", type=int, help="header bytes to skip")
    group.add_argument("--gain-to-uv", dest="gain_to_uv", type=float, help="multiply samples by this to get µV")


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    from engine.pipeline.inference import SOLVERS
    from engine.pipeline.training import TrainingConfig

    defaults = TrainingConfig()
    group = parser.add_argument_group("model")
    group.add_argument("--n-filters", type=int, default=defaults.n_filters, help="filters provisioned, pruned to the units found (default: 8 per channel, at least 8)")
    group.add_argument("--n-taps", type=int, default=None, help="filter length in samples (default 4 ms)")
    group.add_argument("--n-iterations", type=int, default=defaults.n_iterations, help="unrolled FISTA steps T")
    group.add_argument("--lambda-scale", type=float, default=defaults.lambda_scale, help="× the universal threshold")
    group.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    group.add_argument("--batch-size", type=int, default=defaults.batch_size)
    group.add_argument("--window-ms", type=float, default=defaults.window_ms)
    group.add_argument("--epochs", dest="n_epochs", type=float, default=defaults.n_epochs)
    group.add_argument("--seed", type=int, default=defaults.seed)
    group.add_argument("--device", default=defaults.device, help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    group.add_argument("--solver", default=defaults.solver, choices=SOLVERS,
                       help="how sorting encodes the recording: the same lasso, solved densely (every code sample) "
                            "or on the working set of codes that can be non-zero; auto = working set on a CPU, "
                            "dense on a GPU")


def _run_sort(args: argparse.Namespace) -> int:
    from engine.io.phy import export_phy
    from engine.io.recording import open_recording
    from engine.evaluation.simulator import demo_recording_path
    from engine.pipeline.training import Trainer, TrainingConfig

    if args.demo == bool(args.recording):
        raise ValueError("give either a RECORDING path or --demo (not both, not neither)")
    path = demo_recording_path() if args.demo else Path(args.recording)
    recording = open_recording(
        path, sampling_rate=args.sampling_rate, n_channels=args.n_channels, dtype=args.dtype,
        offset=args.offset, gain_to_uv=args.gain_to_uv,
    )
    config = TrainingConfig(
        n_filters=args.n_filters, n_taps=args.n_taps, n_iterations=args.n_iterations, lambda_scale=args.lambda_scale,
        learning_rate=args.learning_rate, batch_size=args.batch_size, window_ms=args.window_ms,
        n_epochs=args.n_epochs, seed=args.seed, device=args.device, solver=args.solver,
    )
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    say(f"{recording}")
    started = time.perf_counter()
    trainer = Trainer(recording, config)
    say(f"device: {trainer.device_name}; dictionary: {trainer.initial_pruning.describe()}")
    bar = ProgressBar("training", enabled=not args.quiet)
    trainer.run(lambda snap: bar.update(snap.step / snap.n_steps, f"loss {snap.loss:.4f}"))
    bar.close()
    bar = ProgressBar("sorting ", enabled=not args.quiet)
    sorting = trainer.sort(progress=bar.update)
    bar.close()
    out = export_phy(sorting, Path(args.out), recording=recording, hp_filtered=False)
    trainer.save_checkpoint(Path(out) / "crsae_checkpoint.pt")
    _write_run_summary(Path(out), path, args, trainer, sorting, time.perf_counter() - started)
    counts = sorting.spike_counts()
    say(f"{trainer.final_pruning.describe()}; {sorting.extra['amplitude_splits']}")
    say(
        f"found {sorting.n_units} units, {sorting.n_spikes} spikes "
        f"({', '.join(str(int(c)) for c in counts)}) in {time.perf_counter() - started:.1f} s -> {out}"
    )
    return 0


def _write_run_summary(out: Path, recording_path: Path, args, trainer, sorting, seconds: float) -> None:
    from engine.io.atomic import write_text_atomic

    summary = {
        "recording": str(Path(recording_path).resolve()),
        "recording_flags": {k: getattr(args, k) for k in ("sampling_rate", "n_channels", "dtype", "offset", "gain_to_uv")},
        "config": trainer.config.to_dict(),
        "device": trainer.device_name,
        "lambda": trainer.lambda_,
        "n_steps": trainer.step,
        "initial_pruning": trainer.initial_pruning.describe(),
        "final_pruning": trainer.final_pruning.describe(),
        "amplitude_splits": sorting.extra["amplitude_splits"],
        "n_units": sorting.n_units,
        "n_spikes": sorting.n_spikes,
        "seconds": round(seconds, 2),
    }
    write_text_atomic(out / "sparsort.json", json.dumps(summary, indent=2))


def _run_simulate(args: argparse.Namespace) -> int:
    from engine.evaluation.simulator import DEMO, TETRODE, write_simulation

    settings = dict(DEMO if args.preset == "demo" else TETRODE)
    overrides = {
        "duration_s": args.duration, "n_channels": args.channels, "n_units": args.units,
        "noise_uv": args.noise, "sampling_rate": args.fs, "seed": args.seed,
    }
    settings.update({key: value for key, value in overrides.items() if value is not None})
    if args.channels is not None and args.channels != 4:
        settings.pop("channel_positions", None)
    if args.rates is not None:
        rates = [float(r) for r in args.rates.split(",")]
        settings["firing_rates"] = rates[0] if len(rates) == 1 else rates
    elif args.units is not None and isinstance(settings.get("firing_rates"), (list, tuple)):
        settings["firing_rates"] = float(sum(settings["firing_rates"]) / len(settings["firing_rates"]))
    paths = write_simulation(Path(args.out), **settings)
    print(f"recording: {paths.recording}\nground truth: {paths.truth}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from engine.evaluation.scoring import compare_to_ground_truth, dictionary_error, format_report
    from engine.io.phy import load_phy
    from engine.io.session_folder import SORTING_FOLDER, is_session_folder
    from engine.evaluation.simulator import GroundTruth

    truth = GroundTruth.load(Path(args.truth))
    sort_dir = Path(args.sort_dir)
    if is_session_folder(sort_dir):
        # The app saves a session as settings.json, the model and the curation, with the phy files in sorting/.
        sort_dir = sort_dir / SORTING_FOLDER
    folder = load_phy(sort_dir)
    comparison = compare_to_ground_truth(
        truth.spike_times, truth.spike_units, folder.spike_times, folder.spike_clusters,
        truth.sampling_rate, tolerance_ms=args.tolerance_ms,
    )
    errors = None
    if folder.templates is not None and folder.templates.size:
        errors = dictionary_error(truth.bandpassed_waveforms(), folder.templates)
    print(format_report(comparison, errors, title=f"{args.sort_dir} vs {args.truth}"))
    return 0


class ProgressBar:
    """A one-line terminal progress bar with elapsed time and time remaining."""

    def __init__(self, label: str, enabled: bool = True, width: int = 30) -> None:
        self.label, self.enabled, self.width = label, enabled, width
        self.started = time.perf_counter()
        self._last_draw = 0.0

    def update(self, fraction: float, note: str = "") -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self._last_draw < 0.1 and fraction < 1.0):
            return
        self._last_draw = now
        fraction = min(max(fraction, 0.0), 1.0)
        elapsed = now - self.started
        remaining = elapsed / fraction * (1 - fraction) if fraction > 0 else float("nan")
        filled = int(round(fraction * self.width))
        line = f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {fraction:6.1%} {elapsed:5.1f}s"
        line += f" eta {remaining:5.1f}s" if fraction < 1.0 else " " * 10
        sys.stderr.write(line + (f"  {note}" if note else ""))
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


if __name__ == "__main__":
    raise SystemExit(main())
