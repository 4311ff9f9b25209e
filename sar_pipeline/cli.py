"""``sar-pipeline``: the demo, the main job from the command line, and the archive tools.

sar-pipeline demo                 # demo archive → every stage, on the embedded default
sar-pipeline run [--config FILE]  # the main job on the configured archive (env / defs / run config YAML)
sar-pipeline register-flights     # only add the archive's new flights as partitions
sar-pipeline demo-archive PATH    # write a simulated airborne SAR STAC archive
sar-pipeline settings             # every setting of every stage: default and meaning
sar-pipeline generate PROMPT      # text → SAR; also img2img, refine-simulated, sketch, provenance, serve
sar-pipeline compare-recipes      # train recipes on one dataset, score each by sar_fidelity's measures

Every stage runs with the settings of sar_pipeline.definitions (the same models the UI's
Launchpad shows): the archive and storage root from $SAR_PIPELINE_ARCHIVE/$SAR_PIPELINE_STORAGE
when set, else the embedded demo under $SAR_PIPELINE_DATA (./data).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

from sar_pipeline import paths


def _prepare_dagster_home() -> Path:
    """Use ``$DAGSTER_HOME`` or the project's ignored ``data/dagster_home`` (SQLite storage)."""
    home = Path(os.environ.get("DAGSTER_HOME") or paths.dagster_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    config = home / "dagster.yaml"
    template = paths.PROJECT_ROOT / "dagster.yaml"
    if not config.exists() and template.exists():
        shutil.copyfile(template, config)
    return home


#: the jobs ``sar-pipeline run`` runs, in order (the flight job once per flight)
MAIN_JOBS = ("flight_job", "dataset_job", "training_job")


def load_run_config(path: str | os.PathLike, defs) -> dict:
    """A run config YAML file, in the schema of the UI's Launchpad (``ops: {<asset>: {config: …}}``,
    ``resources: {<key>: {config: …}}``), checked against the main jobs: a key that no main job has is
    an error naming the file and the key (so a typo is never silently ignored)."""
    from sar_pipeline.errors import ConfigError
    from sar_pipeline.settings import read_mapping_file

    config = read_mapping_file(path, "run config")
    unknown = sorted(set(config) - {"ops", "resources", "execution", "loggers"})
    if unknown:
        raise ConfigError(path, f"unknown top-level key(s) {unknown}: expected ops, resources")
    known_ops: set[str] = set()
    known_resources: set[str] = set()
    for name in MAIN_JOBS:
        fields = defs.resolve_job_def(name).run_config_schema.config_type.fields
        known_ops |= set(fields["ops"].config_type.fields)
        known_resources |= set(fields["resources"].config_type.fields)
    for section, known in (("ops", known_ops), ("resources", known_resources)):
        entries = config.get(section) or {}
        if not isinstance(entries, dict):
            raise ConfigError(path, f"'{section}' must be a mapping")
        extra = sorted(set(entries) - known)
        if extra:
            raise ConfigError(
                path,
                f"{section} {extra} are not part of the main job (sar-pipeline run runs {', '.join(MAIN_JOBS)}); "
                f"known: {sorted(known)}",
            )
    return config


def validate_run_config(defs, run_config: dict, source: str | os.PathLike) -> None:
    """Check ``run_config`` now, as Dagster and then each setting's own model will: a wrong value fails
    before anything runs, naming the file and the setting, not hours into tiling."""
    import dagster as dg
    import pydantic

    from sar_pipeline.archive.plugins import ArchiveSettings, resolve_archive_class
    from sar_pipeline.errors import ConfigError
    from sar_pipeline.settings import settings_models
    from sar_pipeline.settings_reference import configurable_classes

    for name in MAIN_JOBS:
        job = defs.resolve_job_def(name)
        try:
            dg.validate_run_config(job, job_run_config(job, run_config))
        except dg.DagsterInvalidConfigError as exc:
            raise ConfigError(source, f"invalid for {name}: {exc}") from exc
    classes = configurable_classes(defs)
    for section, kind in (("ops", "asset"), ("resources", "resource")):
        for key, entry in (run_config.get(section) or {}).items():
            models = settings_models(classes.get(f"{kind} {key}", object))
            if not models or not isinstance(entry, dict):
                continue
            try:
                settings = models[0](**(entry.get("config") or {}))
            except (pydantic.ValidationError, ConfigError) as exc:
                raise ConfigError(source, f"{section}.{key}.config: {exc}") from exc
            if isinstance(settings, ArchiveSettings):
                # a class name that is no installed plug-in is refused now, not when the first run starts
                try:
                    resolve_archive_class(settings.archive_class)
                except ConfigError as exc:
                    raise ConfigError(source, f"{section}.{key}.config: {exc}") from exc


def job_run_config(job, run_config: dict | None) -> dict:
    """The part of ``run_config`` that ``job`` takes: its own ops, every resource."""
    if not run_config:
        return {}
    ops = set(job.run_config_schema.config_type.fields["ops"].config_type.fields)
    out = {k: v for k, v in run_config.items() if k != "ops"}
    selected = {k: v for k, v in (run_config.get("ops") or {}).items() if k in ops}
    if selected:
        out["ops"] = selected
    return out


def _configured_resources(defs, run_config: dict | None) -> dict:
    """The definitions' resources with ``run_config``'s resource settings applied (for the sensor)."""
    resources = dict(defs.resources)
    for key, entry in ((run_config or {}).get("resources") or {}).items():
        resource = resources[key]
        settings = (entry or {}).get("config") or {}
        if settings and hasattr(resource, "model_dump"):
            resources[key] = type(resource)(**{**resource.model_dump(exclude_unset=True), **settings})
    return resources


def register_flights(defs, instance, run_config: dict | None = None) -> list[str]:
    """Evaluate the ``new_flights`` sensor once, as the daemon would, and add its partitions.

    ``run_config``'s resource settings (e.g. another archive ``uri``) apply to it as to the runs.
    Returns the flights it registered (the new ones; the caller runs them).
    """
    import dagster as dg

    sensor = defs.resolve_sensor_def("new_flights")
    context = dg.build_sensor_context(
        instance=instance, definitions=defs, resources=_configured_resources(defs, run_config)
    )
    result = sensor(context)
    added: list[str] = []
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        added.extend(request.partition_keys)
    return sorted(added)


def run_main_job(flights: list[str] | None = None, config_path: str | None = None) -> int:
    """Register new flights, run the per-flight job for each flight not yet done, then the
    cross-flight stages.

    A flight is not done when one of its per-flight assets was never materialised or its latest
    attempt failed (an interrupted or killed run included): those are run again, beside the new
    ones. Runs left in progress by a killed process are marked failed first and their pool slots
    freed (``run_control``). ``flights``: run exactly these registered flights. ``config_path``: a
    run config YAML (:func:`load_run_config`) applied to every run. SIGINT/SIGTERM
    stop cleanly. Returns the number of failed runs (raises ``run_control.Interrupted``, a
    ``KeyboardInterrupt``, when stopped).
    """
    import dagster as dg

    from sar_pipeline import run_control
    from sar_pipeline.definitions import defs as load_defs

    # Dagster's notices about its own preview/beta APIs (used inside Pipes) are not for the user
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    home = _prepare_dagster_home()
    instance = dg.DagsterInstance.get()
    defs = load_defs()
    run_config = load_run_config(config_path, defs) if config_path else None
    if run_config:
        validate_run_config(defs, run_config, config_path)
    failures = 0
    with run_control.guarded(instance) as guard:
        new = register_flights(defs, instance, run_config)
        flight_job = defs.resolve_job_def("flight_job")
        registered = sorted(instance.get_dynamic_partitions("flight"))
        unfinished, running = run_control.unfinished_partitions(
            instance,
            list(flight_job.asset_layer.executable_asset_keys),
            flight_job.partitions_def,
            registered,
        )
        todo = flights if flights else sorted(set(new) | set(unfinished))
        retried = sorted(set(unfinished) - set(new))
        print(
            f"flights registered: {len(registered)}; new: {new or 'none'}"
            + (f"; not done yet, run again: {retried}" if retried and not flights else "")
        )
        if running:
            print(f"  being materialised by another run now, left alone: {running}")
        for flight_id in todo:
            started = time.perf_counter()
            result = guard.execute(
                flight_job, partition_key=flight_id, run_config=job_run_config(flight_job, run_config)
            )
            failures += not result.success
            _report(instance, f"flight {flight_id}", result, started)
        for job_name in ("dataset_job", "training_job"):
            started = time.perf_counter()
            job = defs.resolve_job_def(job_name)
            result = guard.execute(job, run_config=job_run_config(job, run_config))
            failures += not result.success
            _report(instance, job_name, result, started)

    # the storage resource as the runs saw it ($SAR_PIPELINE_STORAGE resolved, else its default)
    storage = defs.resources["storage"].process_config_and_initialize()
    print(f"\nDagster home (SQLite): {home}")
    print(f"Outputs (storage root): {storage.uri}")
    print(f"Open the UI:  source .venv/bin/activate && DAGSTER_HOME={home} dg dev --host 127.0.0.1")
    return failures


def _report(instance, what: str, result, started: float) -> None:
    """One line per run: outcome ('ok', or 'FAILED in <step>: <the error>', already redacted),
    duration and run id; then, indented, a summary of what the stages logged (the whole event log
    is the run's page in the UI)."""
    from sar_pipeline.run_control import failure_message, logged_summary

    outcome = "ok" if result.success else f"FAILED in {failure_message(result) or 'the run'}"
    print(f"  {what}: {outcome} ({time.perf_counter() - started:.1f} s, run {result.run_id})")
    for line in logged_summary(instance, result.run_id):
        print(f"      {line}")


def _cmd_demo(args: argparse.Namespace) -> int:
    from sar_pipeline.archive.demo import write_demo_archive
    from sar_pipeline.archive.plugins import ARCHIVE_VARIABLE

    archive_dir = paths.demo_archive_dir()
    started = time.perf_counter()
    demo = write_demo_archive(archive_dir, flights=args.flights, seed=args.seed)
    print(f"demo archive: {demo.catalog_path} ({time.perf_counter() - started:.1f} s)")
    # the demo runs on the archive it just wrote (its orthophoto is the default optical source),
    # even when the shell still points SAR_PIPELINE_ARCHIVE at another archive: without the variable
    # the archive's default is this demo, and the jobs are those `dg dev` serves from a plain shell
    # (setting the variable instead would change their snapshot: the UI would show the demo's runs
    # as runs of an older version of the job)
    os.environ.pop(ARCHIVE_VARIABLE, None)
    failures = run_main_job()
    if failures:
        return 1
    from sar_pipeline.cli_generation import demo_generation

    started = time.perf_counter()
    demo_generation(archive_dir, paths.data_dir() / "generated" / "demo")
    print(f"generation: {time.perf_counter() - started:.1f} s")
    return 0


def _cmd_compare_recipes(args: argparse.Namespace) -> int:
    from sar_pipeline.evaluation.comparison import run_from_arguments

    return run_from_arguments(args)


def _cmd_run(args: argparse.Namespace) -> int:
    return 1 if run_main_job(flights=args.flight or None, config_path=args.config) else 0


def _stopped(error: BaseException) -> int:
    """What ``sar-pipeline`` says and returns when SIGINT/SIGTERM stopped it (exit status 130)."""
    print(
        f"\nstopped ({error}): the interrupted run is marked canceled and nothing it half wrote is "
        "visible; `sar-pipeline run` continues where this one stopped",
        file=sys.stderr,
    )
    return 130


def _cmd_register(args: argparse.Namespace) -> int:
    import dagster as dg

    from sar_pipeline.definitions import defs as load_defs

    _prepare_dagster_home()
    new = register_flights(load_defs(), dg.DagsterInstance.get())
    print("\n".join(new) if new else "no new flight")
    return 0


def _cmd_settings(args: argparse.Namespace) -> int:
    from sar_pipeline.definitions import defs as load_defs
    from sar_pipeline.settings_reference import reference_markdown, write_readme

    if args.readme:
        changed = write_readme(load_defs(), args.readme)
        print(f"{args.readme}: settings reference {'rewritten' if changed else 'already current'}")
    else:
        print(reference_markdown(load_defs()), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sar-pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="write the demo archive (if missing) and run the main job on it")
    demo.add_argument("--flights", type=int, default=3, help="number of simulated flights (default 3)")
    demo.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    demo.set_defaults(func=_cmd_demo)

    run = sub.add_parser("run", help="run the main job on the configured archive")
    run.add_argument("--flight", action="append", help="re-run this registered flight (repeatable)")
    run.add_argument(
        "--config",
        metavar="FILE",
        help="run config YAML in the Launchpad's schema (ops: {sar_tiles: {config: {tile_size: 256}}}, "
        "resources: {archive: {config: {uri: …}}}) applied to every run",
    )
    run.set_defaults(func=_cmd_run)

    reg = sub.add_parser("register-flights", help="add the archive's new flights as partitions, run nothing")
    reg.set_defaults(func=_cmd_register)

    settings = sub.add_parser("settings", help="print every asset's and resource's settings (Markdown)")
    settings.add_argument("--readme", metavar="PATH", help="rewrite the generated block of this README")
    settings.set_defaults(func=_cmd_settings)

    from sar_pipeline.cli_generation import add_commands as add_generation_commands

    add_generation_commands(sub)

    compare = sub.add_parser(
        "compare-recipes",
        help="train each recipe (paper, hybrid, LoRA) with the same data, seed and steps; score each as "
        "sar_fidelity does; write a Markdown table",
    )
    compare.add_argument(
        "--storage",
        default=None,
        help="local storage root holding the materialised dataset (default: $SAR_PIPELINE_STORAGE, else the "
        "demo's data/storage)",
    )
    compare.add_argument(
        "--config", metavar="FILE", help="YAML of RecipeComparisonSettings (recipes, base, …)"
    )
    compare.add_argument(
        "--dataset-version", default=None, help="dataset version (default: dataset/current.json)"
    )
    compare.add_argument(
        "--recipes", nargs="+", metavar="NAME", help="compare only these of the settings' recipes"
    )
    compare.add_argument("--steps", type=int, default=None, help="optimizer steps of every run (the budget)")
    compare.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0)")
    compare.add_argument(
        "--device",
        default=None,
        help="device of scoring and of the SAR-CLIP: auto, cpu, cuda, … (training: accelerate's)",
    )
    compare.add_argument(
        "--output", default=None, help="folder of runs and report (default: under the storage root)"
    )
    compare.set_defaults(func=_cmd_compare_recipes)

    from sar_pipeline.archive import demo as demo_module

    archive = sub.add_parser("demo-archive", help="write a simulated airborne SAR STAC archive")
    demo_module.add_arguments(archive)
    archive.set_defaults(func=demo_module.run)

    args = parser.parse_args(argv)
    from sar_pipeline.errors import SarPipelineError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as error:
        return _stopped(error)
    except SarPipelineError as error:  # a bad setting or input outside any run: one line, no traceback
        print(f"sar-pipeline: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
