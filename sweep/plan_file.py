"""A plan file read safely: where named plans live, and what is checked before its YAML is used
(its size, that it is text, its YAML nodes with aliases expanded, keys given twice)."""

from __future__ import annotations

from pathlib import Path

import yaml

from train.config import ConfigError

PLANS_DIR = Path(__file__).resolve().parents[1] / "plans"
MAX_PLAN_BYTES = 1_000_000  # the ready-made plans are under 2 kB
MAX_YAML_NODES = 100_000  # scalars, lists and mappings, every alias expanded


def resolve_plan_path(plan: str) -> Path:
    """A YAML path, or the name of a ready-made plan (`stages` -> plans/stages.yaml)."""
    path = Path(plan).expanduser()
    if path.is_file():
        return path
    named = PLANS_DIR / f"{plan}.yaml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in PLANS_DIR.glob("*.yaml")))
    raise ConfigError(f"plan '{plan}' is neither a YAML file nor a ready-made plan ({known})")


def read(plan: str) -> tuple[Path, dict]:
    """The plan's file and its YAML mapping, checked for size, text, alias expansion and repeated
    keys before any of it is used; one line (ConfigError) for each way it can be wrong."""
    path = resolve_plan_path(plan)
    text = _plan_text(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_node_count(root, path)
        _check_unique_keys(root, path)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"plan {path}{where} is not valid YAML; fix it or pick one in plans/") from None
    if not isinstance(data, dict) or not isinstance(data.get("phases"), list) or not data["phases"]:
        raise ConfigError(f"plan {path} needs a 'phases:' list (see plans/stages.yaml)")
    return path, data


def _plan_text(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_PLAN_BYTES:
        raise ConfigError(f"plan {path} is {size:,} bytes; a plan is at most {MAX_PLAN_BYTES:,} (the ready-made ones are under 2 kB)")
    raw = path.read_bytes()
    try:
        if b"\0" in raw:
            raise UnicodeDecodeError("utf-8", raw, raw.index(b"\0"), raw.index(b"\0") + 1, "NUL byte")
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"plan {path} is not a text (YAML) file; give a plan such as plans/stages.yaml") from None


def _check_node_count(root, path: Path) -> None:
    """Count the nodes as the plan would expand them; an alias names a node, it does not copy it,
    so a few lines of aliases can stand for billions of values (and a recursive one for infinity)."""
    sizes: dict[int, int] = {}

    def size(node) -> int:
        if id(node) in sizes:
            if sizes[id(node)] < 0:
                raise ConfigError(f"plan {path} has a recursive YAML alias; write the values out")
            return sizes[id(node)]
        sizes[id(node)] = -1
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        total = min(1 + sum(size(child) for child in children), MAX_YAML_NODES + 1)
        sizes[id(node)] = total
        return total

    if root is not None and size(root) > MAX_YAML_NODES:
        raise ConfigError(f"plan {path} expands to more than {MAX_YAML_NODES:,} YAML values (aliases counted as copies); write a smaller plan")


def _check_unique_keys(root, path: Path) -> None:
    """YAML lets the last of two equal keys win in silence: a second `grid:` replaced the first."""
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in keys:
                        raise ConfigError(f"plan {path} line {key.start_mark.line + 1}: key '{key.value}' is given twice; keep one")
                    keys.add(key.value)
                stack += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
