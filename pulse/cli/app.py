"""The typer application every command module attaches to, with the conventions people expect.

`-h` and `--help` on every command, `--version`, shell completion
(`--install-completion`, `--show-completion`), and an unknown flag answered with the
flag that does what the user most likely wanted (`--steps 100` → `--set train.steps=100`).
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

try:
    from typer._click.exceptions import NoSuchOption, UsageError
except ImportError:  # typer < 0.20 depends on click instead of vendoring it
    from click.exceptions import NoSuchOption, UsageError  # type: ignore[no-redef]

RESUME = "use --resume to continue this run directory, or --init RUN to start from another run's weights."
GREEDY = "greedy decoding is the default: drop --greedy (and --sample, --temperature, --top-k, --top-p)."
# Flags other tools use (torchtune, HF, timm scripts) → what does that here, when the command has it.
FAMILIAR = {
    "--config": ("", "give the recipe (a .toml file, a card or a recipe name) as the first argument, with no flag."),
    "--recipe": ("", "give the recipe (a .toml file, a card or a recipe name) as the first argument, with no flag."),
    "--resume-from": ("--resume", RESUME),
    "--resume-from-checkpoint": ("--resume", RESUME),
    "--init-from": ("--init", "use --init RUN."),
    "--pretrained": ("--init", "use --init RUN to start from a trained run's weights."),
    "--checkpoint": ("--init", "use --init RUN to start from a trained run's weights."),
    "--do-sample": ("--sample", "use --sample."),
    "--greedy": ("--sample", GREEDY),
    "--max-length": ("--max-new-tokens", "use --max-new-tokens N (tokens generated after the prompt)."),
    "--max-tokens": ("--max-new-tokens", "use --max-new-tokens N."),
    "--output": ("--out", "use --out PATH."),
    "--output-dir": ("--out", "use --out DIR."),
    "--override": ("--set", "use --set DOTTED.PATH=VALUE."),
    "--cfg-options": ("--set", "use --set DOTTED.PATH=VALUE."),
}


# Command names other tools use → the pulse command that does it.
FAMILIAR_COMMANDS = {
    "finetune": "pulse train RECIPE --init RUN",
    "fine-tune": "pulse train RECIPE --init RUN",
    "tune": "pulse train RECIPE",
    "fit": "pulse train RECIPE",
    "run": "pulse train RECIPE",
    "evaluate": "pulse eval RUN",
    "sample": "pulse generate RUN --sample",
    "inspect": "pulse summarize RECIPE",
    "ls": "pulse list",
    "copy": "pulse cp NAME DEST",
    "download": "pulse cp NAME DEST (cards ship with pulse; nothing is downloaded)",
}


def _recipe_key(name: str) -> str | None:
    """`steps` → `train.steps`: the recipe setting a flag-shaped word most likely means."""
    from pulse.specs.bench import BenchSpec
    from pulse.specs.recipe import spec_class
    from pulse.specs.run import TrainSpec

    key = name.lstrip("-").replace("-", "_")
    for section, fields in (("train", TrainSpec.model_fields), ("model", spec_class("lm").model_fields),
                            ("bench", BenchSpec.model_fields)):
        if key in fields and key != "kind":
            return f"{section}.{key}"
    return None


def suggest_flag(option: str, value: str | None, flags: list[str]) -> str:
    """The advice for an unknown `option` on a command that has `flags`."""
    name = option.split("=", 1)[0]
    shown = value if value is not None else "VALUE"
    target, advice = FAMILIAR.get(name, (None, None))
    if advice is not None and (target == "" or target in flags):
        return advice
    # a near-typo of a real flag first, then a recipe setting, then a looser match
    close = difflib.get_close_matches(name, flags, n=1, cutoff=0.85)
    if close:
        return f"did you mean {close[0]}?"
    key = _recipe_key(name)
    if key is not None and "--set" in flags:
        return f"to change the recipe's {key}, use --set {key}={shown}."
    close = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]}?"
    return "see the command's -h for its options."


def take_alias(args: list[str], aliases: tuple[str, ...]) -> tuple[list[str], str | None]:
    """`--model PATH` (or `--model=PATH`) moved to the front as the positional argument it stands for.

    Returns the rewritten arguments and the alias used (None when none was). Arguments after `--`
    are left alone.
    """
    end = args.index("--") if "--" in args else len(args)
    for i, arg in enumerate(args[:end]):
        name, eq, value = arg.partition("=")
        if name not in aliases:
            continue
        if eq:
            return [value, *args[:i], *args[i + 1:]], name
        if i + 1 >= end or args[i + 1].startswith("-"):
            raise UsageError(f"{name} needs a value: {name} PATH.")
        return [args[i + 1], *args[:i], *args[i + 2:]], name
    return args, None


class PulseCommand(TyperCommand):
    """A typer command whose unknown-option error names the flag the user most likely wanted.

    `positional_aliases`: the original PULSE spellings of the first argument (`--model PATH`,
    `--config FILE`), accepted in its place; the argument's help names them.
    """

    positional_aliases: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        first = next((p for p in self.params if not p.param_type_name == "option"), None)
        if self.positional_aliases and first is not None:
            spelled = " or ".join(f"{a} {(first.name or 'PATH').upper()}" for a in self.positional_aliases)
            first.help = f"{getattr(first, 'help', None) or ''} (The original PULSE spelling {spelled} means the same.)"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args, alias = take_alias(list(args), self.positional_aliases)
        given = list(args)  # the parser consumes `args` in place
        try:
            return super().parse_args(ctx, args)
        except NoSuchOption as err:
            flags = sorted({o for p in self.get_params(ctx) for o in (*p.opts, *p.secondary_opts) if o.startswith("-")})
            name = err.option_name
            value = None
            if "=" in name:
                name, value = name.split("=", 1)
            else:
                index = next((i for i, a in enumerate(given) if a == name or a.startswith(name + "=")), None)
                if index is not None and "=" in given[index]:
                    value = given[index].split("=", 1)[1]
                elif index is not None and index + 1 < len(given) and not given[index + 1].startswith("-"):
                    value = given[index + 1]
            raise NoSuchOption(err.option_name, message=f"No such option: {name}; {suggest_flag(name, value, flags)}",
                               ctx=ctx) from None
        except UsageError as err:
            if alias is None or "unexpected extra argument" not in err.message:
                raise
            raise UsageError(f"{alias} and a first argument both name what to open; give it once, either as "
                             f"the first argument or as {alias} PATH.", ctx=ctx) from None


class PulseGroup(TyperGroup):
    """The `pulse` group: an unknown command that other tools use is answered with the pulse one."""

    def resolve_command(self, ctx: Any, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except UsageError as err:
            advice = FAMILIAR_COMMANDS.get(args[0]) if args else None
            if advice is not None:
                err.message = f"No such command {args[0]!r}; use {advice}."
            raise


class PulseTyper(typer.Typer):
    """typer.Typer whose commands default to PulseCommand."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The `pulse` process starting (tests invoke the click command in-process and skip this): torch's
        CPU threads follow the free CPUs from here on, unless PULSE_THREADS, OMP_NUM_THREADS or the
        recipe chose (`pulse.threads`)."""
        from pulse import threads
        from pulse.errors import PulseError

        try:
            threads.adapt()
        except PulseError as err:  # PULSE_THREADS that is not a setting: one line, exit 2, as every command
            typer.echo(f"error: {err}", err=True)
            raise SystemExit(2) from None
        return super().__call__(*args, **kwargs)

    def command(self, *args: Any, aliases: tuple[str, ...] = (), **kwargs: Any):  # type: ignore[override]
        """`aliases`: flags that stand for the command's first argument (see PulseCommand)."""
        cls = type("PulseCommand", (PulseCommand,), {"positional_aliases": aliases}) if aliases else PulseCommand
        kwargs.setdefault("cls", cls)
        return super().command(*args, **kwargs)


app = PulseTyper(
    name="pulse",
    cls=PulseGroup,
    help="PULSE: build, inspect, train, benchmark and generate from declarative model recipes. "
    "A RECIPE is a .toml file, a zoo card name (`pulse list --cards`) or a shipped recipe name. "
    "`pulse info` is another name for `pulse summarize`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from pulse import __version__

        typer.echo(f"pulse {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    # the group's help is the Typer(help=...) above; this callback only carries --version
    return None
