"""`sparsort sort | sort-many | simulate | evaluate`: the headless face of the engine.

`sparsort` with no subcommand starts the desktop app (see app/launcher.py);
these subcommands never import Qt.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

SUBCOMMANDS = {"sort", "sort-many", "simulate", "evaluate"}

CLUSTER_HELP = """\
sorting on a Dask cluster:
  Training, pruning and export run here; finding the spikes runs chunk by
  chunk as Dask tasks (pip install "sparsort[dask]").
    --workers N          a local cluster of N processes on this machine
    --scheduler ADDRESS  any running Dask cluster, e.g. by hand:
        dask scheduler                                  # prints tcp://HOST:8786
        dask worker tcp://HOST:8786 --nworkers 4 --nthreads 1   # on each machine
  or from a job queue, in Python: dask-jobqueue's SLURMCluster (or PBS, SGE,
  LSF) or dask-kubernetes, then pass the cluster's scheduler_address. The
  scheduler and every worker need sparsort installed (Dask unpickles the
  tasks there), and the workers must see the recording at the same path (a
  shared filesystem); nothing the size of the recording goes through the
  scheduler.
"""


def main(argv: list[str] | None = None) -> int:
    from engine.cpu import one_blas_thread_for_the_process

    one_blas_thread_for_the_process()  # before numpy loads OpenBLAS (engine/cpu.py says why)
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

    sort = commands.add_parser("sort", help="sort a recording into a phy folder", epilog=CLUSTER_HELP,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    sort.add_argument("recording", nargs="?", help="SpikeGLX .bin/.meta, Open Ephys folder, .nwb (etc., with sparsort[formats]), "
                      "or raw binary (.bin/.dat) / .npy with parameters from flags, NAME.json or params.py")
    sort.add_argument("--demo", action="store_true", help="sort the built-in simulated demo recording")
    sort.add_argument("--out", required=True, help="phy folder to write (replaced atomically if it holds an earlier sort)")
    sort.add_argument("--overwrite", action="store_true",
                      help="replace --out even if it holds curation (journal, labels, merges) or other files")
    _add_recording_flags(sort)
    _add_model_flags(sort)
    _add_cluster_flags(sort)
    _add_run_flags(sort)
    sort.set_defaults(handler=_run_sort)

    many = commands.add_parser(
        "sort-many", help="sort every recording listed in a file, each into its own phy folder",
        description="LIST holds one recording per line: its path and the phy folder to write, separated by "
                    "spaces (quote paths that contain spaces); blank lines and lines starting with # are skipped. "
                    "Each recording is trained here and its spikes found on the cluster, one task graph each.",
        epilog=CLUSTER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    many.add_argument("list", help="text file: RECORDING OUT_DIR per line")
    many.add_argument("--overwrite", action="store_true",
                      help="replace output folders even if they hold curation (journal, labels, merges) or other files")
    _add_recording_flags(many)
    _add_model_flags(many)
    _add_cluster_flags(many)
    _add_run_flags(many)
    many.set_defaults(handler=_run_sort_many)

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
    evaluate.add_argument("sort_dir", help="phy folder written by `sparsort sort` (or any sorter), "
                                           "or a session folder saved by the app (its sort is in sorting/)")
    evaluate.add_argument("--truth", required=True, help="ground-truth folder written by `sparsort simulate`")
    evaluate.add_argument("--tolerance-ms", type=float, default=0.4, help="spike matching tolerance (default 0.4 ms)")
    evaluate.set_defaults(handler=_run_evaluate)
    return parser


def _add_recording_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("recording (raw files: override NAME.json / params.py)")
    group.add_argument("--fs", "--sampling-rate", dest="sampling_rate", type=float, help="sampling rate in Hz")
    group.add_argument("--n-channels", dest="n_channels", type=int, help="channels interleaved in the file")
    group.add_argument("--dtype", help="int16, uint16, float32 or float64")
    group.add_argument("--offset", type=int, help="header bytes to skip")
    group.add_argument("--gain-to-uv", dest="gain_to_uv", type=float, help="multiply samples by this to get µV")
    group.add_argument("--stream", help="which stream of a SpikeGLX/Open Ephys folder or NWB file (default: the AP band)")
    group.add_argument("--probe", help="probeinterface JSON or .prb file giving the channel positions")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the cores other programs leave free, re-checked as it runs)")
    parser.add_argument("--verbose", action="store_true",
                        help="say when each stage starts, and print each stage's time and peak memory at the end")


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    from engine.pipeline.inference import SOLVERS
    from engine.pipeline.training import DICTIONARY_UPDATES, INITS, MOTION_WORDS, WHITEN_WORDS, TrainingConfig
    from engine.pipeline.whitening import AUTOMATIC_RULE

    defaults = TrainingConfig()
    group = parser.add_argument_group("model")
    group.add_argument("--n-filters", type=int, default=defaults.n_filters, help="filters provisioned, pruned to the units found (default: 8 per channel, at least 8)")
    group.add_argument("--n-taps", type=int, default=None, help="filter length in samples (default 4 ms)")
    group.add_argument("--n-iterations", type=int, default=defaults.n_iterations, help="unrolled FISTA steps T")
    group.add_argument("--lambda-scale", type=float, default=defaults.lambda_scale, help="× the universal threshold")
    group.add_argument("--init", choices=INITS, default=defaults.init,
                       help="where the filters start: data (k-means of threshold crossings, default) or random "
                            "(noise: training learns the spike shapes from scratch)")
    group.add_argument("--dictionary-update", choices=DICTIONARY_UPDATES, default=defaults.dictionary_update,
                       help="how training updates the filters from the tied encoder's codes: least_squares (closed "
                            "form, fitted to the spikes sorting keeps once the filters are spike shapes), gradient "
                            "(Adam through the unrolled encoder), or auto (default: least squares)")
    group.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                       help="relative Adam step (--dictionary-update gradient only)")
    group.add_argument("--batch-size", type=int, default=defaults.batch_size,
                       help="windows per training step, lowered to fit --max-step-mb")
    group.add_argument("--gradient-iterations", type=int, default=defaults.gradient_iterations,
                       help="back-propagate through only the last N FISTA steps: same codes, memory grows with N not T")
    group.add_argument("--radius-um", type=float, default=defaults.radius_um,
                       help="each filter lives on the channels within this distance of its main channel")
    group.add_argument("--whiten", choices=tuple(WHITEN_WORDS), default="auto",
                       help="decorrelate the channels before sorting, as Kilosort does (auto, the default: "
                            f"{AUTOMATIC_RULE}; the outputs stay in the recording's µV)")
    group.add_argument("--motion", choices=MOTION_WORDS, default=defaults.motion,
                       help="estimate the probe's drift from the spikes' positions and undo it before sorting "
                            "(SpikeInterface's motion correction, the formats extra): rigid (one shift along the "
                            "probe at a time) or nonrigid (a shift per depth); off by default")
    group.add_argument("--max-step-mb", type=float, default=defaults.max_step_mb,
                       help="memory a training step's gradient may use; the batch shrinks to fit")
    group.add_argument("--window-ms", type=float, default=defaults.window_ms)
    group.add_argument("--epochs", dest="n_epochs", type=float, default=defaults.n_epochs,
                       help="passes over the training pool at most (default %(default)s)")
    group.add_argument("--settle-tolerance", type=float, default=defaults.settle_tolerance,
                       help="end training sooner once the filters' shapes are known to within this standard error "
                            "(mean over filters, dictionary-error units; default %(default)s; 0 runs every epoch)")
    group.add_argument("--seed", type=int, default=defaults.seed)
    group.add_argument("--device", default=defaults.device, help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    group.add_argument("--solver", default=defaults.solver, choices=SOLVERS,
                       help="how sorting encodes the recording: the same lasso, solved densely (every code sample) "
                            "or on the working set of codes that can be non-zero; auto = working set on a CPU, "
                            "dense on a GPU")


def _add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster (optional: see the end of this help)")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="find the spikes on the Dask cluster at this address, "
                                                              "e.g. tcp://host:8786")
    where.add_argument("--workers", type=int, metavar="N", help="find the spikes on a local Dask cluster of N processes")
    group.add_argument("--retries", type=int, default=None,
                       help="re-runs of a chunk task that fails, on any worker, before the sort stops (default 2)")


def _run_sort(args: argparse.Namespace) -> int:
    from engine.evaluation.simulator import demo_recording_path
    from engine.io.output_folder import check_output_folder

    if args.demo == bool(args.recording):
        raise ValueError("give either a RECORDING path or --demo (not both, not neither)")
    path = demo_recording_path() if args.demo else Path(args.recording)
    say = _say(args)
    for note in check_output_folder(args.out, overwrite=args.overwrite, keep=path):
        say(note)
    recording, config = _open(path, args)  # bad input fails before training, or a cluster, starts
    with _chunk_runner(args) as runner:
        _sort_one(recording, config, path, Path(args.out), args, runner)
    return 0


def _run_sort_many(args: argparse.Namespace) -> int:
    from engine.io.output_folder import check_output_folder

    jobs = read_sort_list(Path(args.list))
    say = _say(args)
    # Every file and output folder is checked before any sorting.
    for path, out in jobs:
        for note in check_output_folder(out, overwrite=args.overwrite, keep=path):
            say(note)
    opened = [_open(path, args) for path, _ in jobs]
    with _chunk_runner(args) as runner:
        for number, ((path, out), (recording, config)) in enumerate(zip(jobs, opened), 1):
            say(f"[{number}/{len(jobs)}] {path} -> {out}")
            _sort_one(recording, config, path, out, args, runner)
    return 0


def read_sort_list(list_path: Path) -> list[tuple[Path, Path]]:
    """(recording, output folder) per line of a sort-many list, all checked before any sorting.

    Relative paths are taken from the list's folder, so a list works from any directory.
    """
    import shlex

    if not list_path.is_file():
        raise ValueError(f"{list_path} is not a file: give a text file with one 'RECORDING OUT_DIR' per line")
    jobs, problems = [], []
    for number, line in enumerate(list_path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            fields = shlex.split(line)
        except ValueError as error:
            problems.append(f"line {number}: {error}")
            continue
        if len(fields) != 2:
            problems.append(f"line {number}: expected 'RECORDING OUT_DIR', got {len(fields)} field(s): {line.strip()!r}")
            continue
        recording, out = (Path(field) if Path(field).is_absolute() else list_path.parent / field for field in fields)
        if not recording.exists():
            problems.append(f"line {number}: recording {recording} does not exist")
        jobs.append((recording, out))
    outs = [out.resolve() for _, out in jobs]
    for out in sorted({out for out in outs if outs.count(out) > 1}):
        problems.append(f"{out} is the output folder of more than one line: give each recording its own")
    if problems:
        raise ValueError(f"{list_path}: " + "; ".join(problems))
    if not jobs:
        raise ValueError(f"{list_path} lists no recordings: write one 'RECORDING OUT_DIR' per line")
    return jobs


class _ChunkRunner:
    """How a sort finds its spikes: in this process (inference None), or as Dask tasks."""

    def __init__(self) -> None:
        self.inference = None
        self.where = "this process"
        self.tasks = (0, 0)

    def on_task(self, done: int, total: int) -> None:
        self.tasks = (done, total)

    def progress_note(self) -> str:
        return f"{self.tasks[0]}/{self.tasks[1]} tasks" if self.inference is not None else ""


@contextlib.contextmanager
def _chunk_runner(args: argparse.Namespace):
    """A _ChunkRunner; with --scheduler or --workers it holds a Dask client for as long as the sorts take."""
    runner = _ChunkRunner()
    if args.scheduler is None and args.workers is None:
        if args.retries is not None:
            raise ValueError("--retries applies to a Dask cluster: add --scheduler ADDRESS or --workers N")
        yield runner
        return
    if getattr(args, "motion", "off") != "off":
        # The workers reopen the recording file and would sort it uncorrected.
        raise ValueError(f"--motion {args.motion} sorts in this process only: leave out --scheduler/--workers, "
                         "or sort with --motion off")
    from engine.pipeline.distributed import DEFAULT_RETRIES, DaskInference, dask_client

    say = _say(args)
    with dask_client(args.scheduler, args.workers, say=say) as client:
        retries = DEFAULT_RETRIES if args.retries is None else args.retries
        runner.inference = DaskInference(client, retries=retries, on_task=runner.on_task)
        runner.where = f"Dask: {args.scheduler}" if args.scheduler else f"Dask: {args.workers} local workers"
        yield runner


def _open(path: Path, args: argparse.Namespace):
    """(recording, TrainingConfig) for `path`, every parameter checked against the recording."""
    from engine.io.plausibility import channel_count_warnings, check_not_flat
    from engine.io.recording import open_recording
    from engine.pipeline.training import WHITEN_WORDS, TrainingConfig

    recording = open_recording(
        path, sampling_rate=args.sampling_rate, n_channels=args.n_channels, dtype=args.dtype,
        offset=args.offset, gain_to_uv=args.gain_to_uv, stream=args.stream, probe=args.probe,
    )
    config = TrainingConfig(
        n_filters=args.n_filters, n_taps=args.n_taps, n_iterations=args.n_iterations, lambda_scale=args.lambda_scale,
        learning_rate=args.learning_rate, batch_size=args.batch_size, window_ms=args.window_ms,
        n_epochs=args.n_epochs, settle_tolerance=args.settle_tolerance, seed=args.seed, device=args.device, solver=args.solver,
        gradient_iterations=args.gradient_iterations, max_step_mb=args.max_step_mb, radius_um=args.radius_um,
        init=args.init, dictionary_update=args.dictionary_update,
        whiten=WHITEN_WORDS[args.whiten], motion=args.motion,
    )
    check_not_flat(recording)
    for warning in channel_count_warnings(recording):
        print(f"sparsort: warning: {warning}", file=sys.stderr)
    config.validate()
    config.taps_for(recording.sampling_rate)  # a derived length out of range fails now, not in pruning
    return recording, config


def _sort_one(recording, config, path: Path, out_dir: Path, args: argparse.Namespace, runner: _ChunkRunner) -> None:
    from engine.cpu import configure_threads
    from engine.io.checkpoints import save_checkpoint
    from engine.io.phy import export_phy
    from engine.pipeline.run import SortPipeline

    say = _say(args)
    say(f"{recording}\n{recording.describe()}")
    configure_threads(args.threads)
    started = time.perf_counter()
    pipeline = SortPipeline(recording, config, on_stage=(lambda name: say(f"  {name} ...")) if args.verbose else None)
    for note in pipeline.recording_notes():
        say(note)
    pipeline.prepare()
    say(f"device: {pipeline.device_name}; dictionary: {pipeline.initial_pruning.describe()}")
    trainer = pipeline.trainer
    update = (f"gradient through the last {config.gradient_iterations or config.n_iterations} of "
              f"{config.n_iterations} FISTA steps" if config.update_rule() == "gradient"
              else f"least-squares shapes from {config.n_iterations} FISTA steps' codes")
    say(f"training: {trainer.n_steps} steps of {trainer.batch_size} windows x {pipeline.window} samples ({update})")
    bar = ProgressBar("training", enabled=not args.quiet)
    pipeline.train(lambda snap: bar.update(snap.step / snap.n_steps, f"loss {snap.loss:.4f}"))
    bar.close()
    if trainer.settled_at is not None:
        say(f"training: the filters' shapes settled after {trainer.settled_at} steps "
            f"(mean standard error below {config.settle_tolerance:g}); the epoch's other steps were not needed")
    bar = ProgressBar("sorting ", enabled=not args.quiet)
    sorting = pipeline.sort(progress=lambda fraction: bar.update(fraction, runner.progress_note()),
                            infer=runner.inference)
    bar.close()
    if sorting.n_spikes == 0:
        # phy cannot open a folder without spikes: write none.
        raise NoSpikesError(
            f"no spikes found in {path}: nothing crossed the detection threshold "
            f"(λ = {pipeline.lambda_:.2f} × the noise level, {_noise_summary(pipeline)}). "
            f"Nothing was written to {out_dir}. If the recording has spikes, lower --lambda-scale "
            f"(now {config.lambda_scale:g}) or check --gain-to-uv and the sampling rate"
        )

    def write_ours(staging: Path) -> None:
        save_checkpoint(pipeline, staging / "crsae_checkpoint.pt")
        _write_run_summary(staging, path, args, pipeline, sorting, time.perf_counter() - started,
                           recording.describe(), runner.where)

    out = export_phy(sorting, out_dir, recording=recording, hp_filtered=False, before_swap=write_ours)
    counts = sorting.spike_counts()
    say(f"{pipeline.final_pruning.describe()}; {sorting.provenance.amplitude_splits}; "
        f"{sorting.provenance.unit_merges}; {sorting.provenance.residual_units}; "
        f"{sorting.provenance.spike_reassignment}; {sorting.provenance.locked_events}; "
        f"{sorting.provenance.hollow_events}; {sorting.provenance.overlapped_spikes}; "
        f"{sorting.provenance.cleaned_unit_merges}; {sorting.provenance.look_alike_units}")
    if args.verbose:
        say("cost of each stage:\n" + pipeline.stage_log.table())
    say(
        f"found {sorting.n_units} units, {sorting.n_spikes} spikes "
        f"({', '.join(str(int(c)) for c in counts)}) in {time.perf_counter() - started:.1f} s -> {out}"
    )


def _say(args: argparse.Namespace):
    """print to stderr, or nothing with --quiet."""
    return (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))


class NoSpikesError(ValueError):
    """The sort found no spike, so there is nothing to write."""


def _noise_summary(pipeline) -> str:
    import numpy as np

    levels = np.asarray(pipeline.recording.noise_levels, dtype=float)  # (n_channels,) µV
    if len(levels) == 1:
        return f"{levels[0]:.3g} µV"
    return f"{levels.min():.3g} to {levels.max():.3g} µV across channels"


def _write_run_summary(out: Path, recording_path: Path, args, pipeline, sorting, seconds: float,
                       recording_description: str, spikes_found_in: str) -> None:
    from engine.io.atomic import write_text_atomic

    summary = {
        "recording": str(Path(recording_path).resolve()),
        "recording_flags": {k: getattr(args, k) for k in ("sampling_rate", "n_channels", "dtype", "offset", "gain_to_uv",
                                                          "stream", "probe")},
        "recording_read": recording_description,
        "config": pipeline.config.to_dict(),
        "device": pipeline.device_name,
        "spikes_found_in": spikes_found_in,
        "lambda": pipeline.lambda_,
        "n_steps": pipeline.trainer.step,
        "initial_pruning": pipeline.initial_pruning.describe(),
        "final_pruning": pipeline.final_pruning.describe(),
        "amplitude_splits": sorting.provenance.amplitude_splits,
        "unit_merges": sorting.provenance.unit_merges,
        "residual_units": sorting.provenance.residual_units,
        "spike_reassignment": sorting.provenance.spike_reassignment,
        "locked_events": sorting.provenance.locked_events,
        "hollow_events": sorting.provenance.hollow_events,
        "overlapped_spikes": sorting.provenance.overlapped_spikes,
        "cleaned_unit_merges": sorting.provenance.cleaned_unit_merges,
        "look_alike_units": sorting.provenance.look_alike_units,
        "recording_notes": pipeline.recording_notes(),
        "unit_groups": {str(unit): group for unit, group in sorted(sorting.unit_groups.items())},
        "stages": [{"stage": c.name, "seconds": round(c.seconds, 3), "peak_rss_mb": round(c.peak_rss_mb, 1),
                    "cpu_seconds": round(c.cpu_seconds, 3)}
                   for c in pipeline.stage_log.costs],
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
    from engine.evaluation.simulator import GroundTruth

    truth = GroundTruth.load(Path(args.truth))
    folder = load_phy(_phy_folder_of(Path(args.sort_dir)))
    comparison = compare_to_ground_truth(
        truth.spike_times, truth.spike_units, folder.spike_times, folder.spike_clusters,
        truth.sampling_rate, tolerance_ms=args.tolerance_ms,
    )
    errors = None
    if folder.templates is not None and folder.templates.size:
        errors = dictionary_error(truth.bandpassed_waveforms(), folder.templates)
    print(format_report(comparison, errors, title=f"{args.sort_dir} vs {args.truth}"))
    return 0


def _phy_folder_of(path: Path) -> Path:
    """The phy folder itself, or the `sorting/` phy folder of a session folder the app saved."""
    from engine.io.phy import PARAMS_FILE
    from engine.io.session_folder import SORTING_FOLDER

    if not (path / PARAMS_FILE).exists() and (path / SORTING_FOLDER / PARAMS_FILE).exists():
        return path / SORTING_FOLDER
    return path


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
