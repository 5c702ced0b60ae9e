"""The docs name only what exists: files, Python names, flags, config fields.

README.md, BENCHMARKS.md and docs/*.md are read as text. Nothing here
trains, evaluates or runs a command: flags are read from the programs'
sources, names are imported, and the one model built is abstract (shapes
only).
"""

import importlib
import pkgutil
import re
from pathlib import Path

import jax
import pytest

import hair_jax
from hair_jax.nn import models
from hair_jax.train import config as config_lib

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]

# Named in the docs before they exist: eval.py's --giv_plot and the Colab
# notebook are being written. Remove each entry when it lands.
PENDING_FLAGS = set()
PENDING_PATHS = set()

# How a command line names a program -> the file that defines its flags.
PROGRAMS = {
    "python train.py": "train.py",
    "python eval.py": "eval.py",
    "python -m hair_jax.restore": "hair_jax/commands/restore.py",
    "hair-restore": "hair_jax/commands/restore.py",
    "python -m hair_jax.convert": "hair_jax/commands/convert.py",
    "python -m hair_jax.export": "hair_jax/commands/export.py",
    "hair-export": "hair_jax/commands/export.py",
    "python benchmarks/bench_export.py": "benchmarks/bench_export.py",
    "python -m hair_jax.data.prepare": "hair_jax/commands/prepare.py",
    "python -m hair_jax.experiments.ablation": "hair_jax/commands/ablation.py",
    "python benchmarks/bench_model.py": "benchmarks/bench_model.py",
    "python benchmarks/profile_block.py": "benchmarks/profile_block.py",
    "python benchmarks/bench_nafnet.py": "benchmarks/bench_nafnet.py",
    "python benchmarks/roofline.py": "benchmarks/roofline.py",
    "python benchmarks/ref_torch.py": "benchmarks/ref_torch.py",
    "benchmarks/gpu_run.sh": "benchmarks/gpu_run.sh",
}
CONFIGS = sorted(
    p.stem for p in (ROOT / "configs").glob("*.py") if p.stem not in ("__init__", "common")
)

PATH_RE = re.compile(
    r"(?<![\w./-])((?:hair_jax|configs|benchmarks|tests|docs|notebooks)/[\w./-]*[\w/])(?:::(\w+))?"
)
LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SPAN_RE = re.compile(r"`([^`\n]+)`")
FLAG_RE = re.compile(r"(?<![\w-])--([A-Za-z][\w.-]*)")
FULL_NAME_RE = re.compile(r"(?<![\w./-])hair_jax(?:\.[A-Za-z_]\w*)+")
SHORT_NAME_RE = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:\(.*\))?")
FILE_SUFFIXES = {"py", "md", "json", "csv", "ckpt", "ipynb", "txt", "toml", "png", "tif", "jpg"}
# Short roots the docs use in backticks, e.g. `hyper.HSN`, `jax.vmap`, `nnx.split`.
# The package's own modules and those of its layers nn, io and evaluation.
ROOTS = {m.name: f"hair_jax.{m.name}" for m in pkgutil.iter_modules(hair_jax.__path__)}
for _layer in ("nn", "io", "evaluation"):
    _path = [str(Path(hair_jax.__path__[0]) / _layer)]
    ROOTS.update({m.name: f"hair_jax.{_layer}.{m.name}" for m in pkgutil.iter_modules(_path)})
ROOTS.update({"hair_jax": "hair_jax", "jax": "jax", "lax": "jax.lax", "nnx": "flax.nnx"})


def _read(path):
    return path.read_text(encoding="utf-8")


def _split(text):
    """(prose without fenced blocks, command lines of shell code blocks)."""
    prose, code, fence = [], [], None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = line.strip()[3:] if fence is None else None
            continue
        if fence is not None:
            if fence in ("", "bash", "sh", "shell", "console"):
                code.append(line)
            continue
        prose.append(line)
        if line.startswith("    "):
            code.append(line)
    joined = []
    for line in code:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line.strip()
        else:
            joined.append(line.strip())
    return "\n".join(prose), joined


def _commands():
    """(doc name, program source, flags, config file) of every command in a code block."""
    found = []
    for doc in DOCS:
        for line in _split(_read(doc))[1]:
            line = re.sub(r"\s#.*$", "", line)
            hits = [(line.find(p), p) for p in PROGRAMS if p in line]
            if not hits:
                continue
            start, program = min(hits)
            rest = line[start + len(program) :]
            config = re.search(r"--config[= ](\S+)", rest)
            config = Path(config.group(1)).stem if config else "demo"
            flags = [f.rstrip(".") for f in FLAG_RE.findall(rest)]
            found.append((doc.name, PROGRAMS[program], flags, config))
    return found


def _defined_flags(source):
    """Flag names a program defines (absl DEFINE_*, argparse add_argument, a shell `case`)."""
    text = _read(ROOT / source)
    if source.endswith(".sh"):
        return set(re.findall(r"^\s*--([\w-]+)\)", text, re.M))
    names = set(re.findall(r'DEFINE_\w+\(\s*"(\w+)"', text))
    names |= {"no" + n for n in names}  # absl's negated booleans
    for args in re.findall(r'add_argument\(\s*((?:"-[^"]*"\s*,\s*)+)', text):
        names |= {a.lstrip("-") for a in re.findall(r'"(-[^"]*)"', args)}
    if "from absl import app" in text:  # absl.app's own flags
        names |= {"verbosity", "v", "helpshort", "helpfull", "logtostderr", "flagfile"}
    if "common.add_checkpoint_arguments(" in text:
        names |= _defined_flags("hair_jax/commands/common.py")
    return names | {"help"}


def _config(name):
    return importlib.import_module(f"configs.{name}").get_config()


def _resolve(dotted):
    """The object a dotted name names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _names(text):
    """Dotted Python names cited in `text`, as importable full names."""
    names = set(FULL_NAME_RE.findall(text))
    for span in SPAN_RE.findall(_split(text)[0]):
        m = SHORT_NAME_RE.fullmatch(span.strip())
        if not m:
            continue
        root, _, tail = m.group(1).partition(".")
        if root in ROOTS and tail.rsplit(".", 1)[-1] not in FILE_SUFFIXES:
            names.add(f"{ROOTS[root]}.{tail}")
    return names


def test_programs_define_the_flags_we_look_for():
    """Guards the source parsing itself: it must find known flags."""
    assert {"config", "workdir", "coordinator_address", "distributed"} <= _defined_flags("train.py")
    assert {"checkpoint", "data_dir", "nosave_images"} <= _defined_flags("eval.py")
    assert {"checkpoint", "output", "max_pixels"} <= _defined_flags("hair_jax/commands/restore.py")
    assert {"train-root", "data-dir", "folder"} <= _defined_flags("hair_jax/commands/prepare.py")
    assert {"ref", "out", "dry-run"} <= _defined_flags("benchmarks/gpu_run.sh")
    assert len(_commands()) >= 15


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_cited_paths_exist(doc):
    text = _read(doc)
    missing = []
    for path, test_name in PATH_RE.findall(text):
        if path in PENDING_PATHS:
            continue
        if not (ROOT / path).exists():
            missing.append(path)
        elif test_name and f"def {test_name}(" not in _read(ROOT / path):
            missing.append(f"{path}::{test_name}")
    for target in LINK_RE.findall(text):
        target = target.split("#")[0]
        if not target or re.match(r"[a-z]+:", target):
            continue
        relative = (doc.parent / target).resolve().relative_to(ROOT).as_posix()
        if relative not in PENDING_PATHS and not (ROOT / relative).exists():
            missing.append(target)
    assert not missing, f"{doc.name} cites missing files: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_cited_python_names_resolve(doc):
    broken = []
    for name in sorted(_names(_read(doc))):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as e:
            broken.append(f"{name} ({type(e).__name__}: {e})")
    assert not broken, f"{doc.name} names what does not exist: {broken}"


def test_command_lines_use_only_defined_flags_and_config_fields():
    bad = []
    for doc, source, flags, config_name in _commands():
        defined = _defined_flags(source) | PENDING_FLAGS
        for flag in flags:
            if source == "train.py" and flag.startswith("config."):
                why = config_lib.unknown_field(_config(config_name), flag[len("config.") :])
                if why:
                    bad.append(f"{doc}: --{flag} ({why}, configs/{config_name}.py)")
            elif flag not in defined:
                bad.append(f"{doc}: --{flag} is no flag of {source}")
    assert not bad, bad


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_flags_and_config_fields_in_prose_exist(doc):
    """`--flag` in running text: a flag of some program; `config.x`: a field of some config."""
    every_flag = set().union(*(_defined_flags(s) for s in set(PROGRAMS.values()))) | PENDING_FLAGS
    configs = [_config(name) for name in CONFIGS]
    bad = []
    for span in SPAN_RE.findall(_split(_read(doc))[0]):
        fields = [f[len("config.") :] for f in FLAG_RE.findall(span) if f.startswith("config.")]
        if not re.search(r"\s=\s", span):  # an assignment in a config file may add a field
            fields += re.findall(r"(?<![\w.-])config\.([A-Za-z_][\w.]*)", span.split("=")[0])
        for field in fields:
            field = field.rstrip(".")
            if not field or field.rsplit(".", 1)[-1] in FILE_SUFFIXES:
                continue
            if all(config_lib.unknown_field(c, field) for c in configs):
                bad.append(f"config.{field}")
        for flag in FLAG_RE.findall(span):
            flag = flag.rstrip(".")
            if not flag.startswith("config") and flag not in every_flag:
                bad.append(f"--{flag}")
    assert not bad, f"{doc.name}: {bad}"


def test_readme_test_command_is_the_ci_command():
    ci = [
        line.strip()
        for line in _read(ROOT / ".ci" / "run").splitlines()
        if "pytest" in line and not line.lstrip().startswith("#")
    ]
    readme = {line.strip() for line in _read(ROOT / "README.md").splitlines()}
    assert len(ci) == 1 and ci[0] in readme, ci


def test_architecture_bank_table_matches_the_model():
    """docs/architecture.md's table of hyper levels, against Res-HAIR's shapes."""
    text = _read(ROOT / "docs" / "architecture.md")
    row = re.compile(r"^\| `(\w+)` \| (\d+) \| (\d+) \| (\d+) \| [^|]+ \| (\d+) \| ([\d,]+) \|$")
    rows = {m[1]: m.groups()[1:] for m in map(row.match, text.splitlines()) if m}
    assert tuple(rows) == models.HYPER_LEVELS
    model = models.abstract_model("res_hair")
    total = 0
    for name, (blocks, width, heads, num_box, size) in rows.items():
        level = getattr(model, name)
        bank = level.bank.weights
        params = sum(x.size for x in jax.tree.leaves(bank))
        total += params
        static = level.blocks[0].static
        want = (
            len(level.blocks),
            bank["attn"]["project_out"]["kernel"].shape[-1],
            static["attn"]["temperature"].shape[0],
            level.bank.num_box,
            params,
        )
        got = (int(blocks), int(width), int(heads), int(num_box), int(size.replace(",", "")))
        assert got == want, name
    assert f"{total:,} of Res-HAIR's {models.count_params(model):,} parameters" in text


def test_results_probe_snippet_prints_what_the_page_says():
    """docs/results.md's GIV probe: its Python block runs and prints the two accuracies it quotes."""
    import contextlib  # pylint: disable=g-import-not-at-top
    import io  # pylint: disable=g-import-not-at-top
    import textwrap  # pylint: disable=g-import-not-at-top

    text = _read(ROOT / "docs" / "results.md")
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(textwrap.dedent(block), {})  # noqa: S102 - our own documentation
    lines = out.getvalue().splitlines()
    assert [line.split(": ")[0] for line in lines] == ["GIV", "mean of the DAC's input"]
    for line in lines:
        value = line.split(": ")[1]
        assert f"{value} from the" in text.replace("\n   ", " ")
